"""``corral update``: change a created, running or paused container's cgroup limits.

As runc: ``--resources FILE`` (``-`` for stdin, what containerd's shim sends) is a
LinuxResources JSON, parsed by the same code as config.json's ``linux.resources``; each flag
then overrides its field; memory sizes take runc's forms (``64m``, ``1g``, ``-1``). The result
is written through ``corral.cgroups`` (``resources.apply``). Keys match the spec's names as
Go's decoder matches them (``"CPU"``, ``"Cpus"``); unlike it, a field the spec does not define
is refused by name. ``devices`` is accepted and ignored, as runc's update
does (containerd sends the whole LinuxResources); kernel memory limits (``--kernel-memory``,
``--kernel-memory-tcp``, ``memory.kernel``, ``memory.kernelTCP``) are ignored with a warning,
as runc 1.1 does.
"""

from __future__ import annotations

import os

from corral.jsonlite import read_object
from corral.errors import ConfigError, ContainerStateError, NotSupportedError

R = "linux.resources"

# The spec's LinuxResources, key by key: None for a value (or a map of the user's keys), a
# dict for an object's keys, a one-item list for an array of such objects.
_SCHEMA: dict = {
    "devices": [dict.fromkeys(("allow", "type", "major", "minor", "access"))],
    "memory": dict.fromkeys(("limit", "reservation", "swap", "kernel", "kernelTCP",
                             "swappiness", "disableOOMKiller", "useHierarchy",
                             "checkBeforeUpdate")),
    "cpu": dict.fromkeys(("shares", "quota", "burst", "period", "realtimeRuntime",
                          "realtimePeriod", "cpus", "mems", "idle")),
    "pids": {"limit": None},
    "blockIO": {
        "weight": None, "leafWeight": None,
        "weightDevice": [dict.fromkeys(("major", "minor", "weight", "leafWeight"))],
        **{key: [dict.fromkeys(("major", "minor", "rate"))]
           for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                       "throttleReadIOPSDevice", "throttleWriteIOPSDevice")}},
    "hugepageLimits": [{"pageSize": None, "limit": None}],
    "network": {"classID": None, "priorities": [{"name": None, "priority": None}]},
    "rdma": None,
    "unified": None,
}


def _fold(name: str) -> str:
    """Go's case folding of a JSON key against a struct's (ASCII) field names: any ASCII
    case, and the Kelvin sign and long s for k and s."""
    return name.replace("\u017f", "s").replace("\u212a", "k").lower()


def go_field_names(data: object, schema) -> object:
    """``data`` with its keys spelled as the spec spells them, matched as Go's decoder
    matches them (runc's update decodes the JSON with it): the exact name first, else the
    first field equal to it in any case.  Two spellings of one object merge (Go decodes
    both into the one struct); of a value, the later wins.  Unknown keys stay, for
    ``check_fields`` to name."""
    if isinstance(schema, list):
        return [go_field_names(item, schema[0]) for item in data] \
            if isinstance(data, list) else data
    if not isinstance(schema, dict) or not isinstance(data, dict):
        return data
    folded = {}
    for name in schema:
        folded.setdefault(_fold(name), name)
    out: dict = {}
    for key, value in data.items():
        name = key if key in schema else folded.get(_fold(key), key)
        value = go_field_names(value, schema.get(name))
        if isinstance(value, dict) and isinstance(out.get(name), dict) \
                and isinstance(schema.get(name), dict):
            value = {**out[name], **value}
        out[name] = value
    return out


# flag → (object, key, kind); kind "size" takes runc's memory sizes, "int" a number,
# "uint" a non-negative number, "str" text.
FLAGS = {
    "memory": ("memory", "limit", "size"),
    "memory_reservation": ("memory", "reservation", "size"),
    "memory_swap": ("memory", "swap", "size"),
    "kernel_memory": ("memory", "kernel", "size"),
    "kernel_memory_tcp": ("memory", "kernelTCP", "size"),
    "cpu_shares": ("cpu", "shares", "uint"),
    "cpu_quota": ("cpu", "quota", "int"),
    "cpu_period": ("cpu", "period", "uint"),
    "cpu_burst": ("cpu", "burst", "uint"),
    "cpu_rt_runtime": ("cpu", "realtimeRuntime", "int"),
    "cpu_rt_period": ("cpu", "realtimePeriod", "uint"),
    "cpu_idle": ("cpu", "idle", "int"),
    "cpuset_cpus": ("cpu", "cpus", "str"),
    "cpuset_mems": ("cpu", "mems", "str"),
    "pids_limit": ("pids", "limit", "int"),
    "blkio_weight": ("blockIO", "weight", "uint"),
}

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def ram_in_bytes(text: str, flag: str) -> int:
    """docker/go-units RAMInBytes (binary multiples: "64m", "1.5G", "512KiB", "100 b");
    "-1" is unlimited, as runc's update takes it."""
    if text.strip() == "-1":
        return -1
    s = text.strip().lower()
    if s.endswith("b"):
        s = s[:-1]
    if s.endswith("i") and s[-2:-1].isalpha():
        s = s[:-1]
    unit = s[-1:] if s[-1:].isalpha() else ""
    number = s[:len(s) - len(unit)].rstrip(" ") if unit else s
    if unit not in _UNITS or not number or not number.replace(".", "").isdigit() \
            or number.startswith(".") or number.endswith(".") or ".." in number:
        raise ConfigError(flag, f"invalid size {text!r} (want e.g. 64m, 1g, 512k or -1)")
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise ConfigError(flag, f"invalid size {text!r}") from None


def _number(text: str, flag: str, unsigned: bool) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ConfigError(flag, f"{text!r} is not a number") from None
    if unsigned and value < 0:
        raise ConfigError(flag, f"must not be negative, got {value}")
    return value


def check_fields(data: object, where: str = R, schema=_SCHEMA) -> None:
    """Refuse keys the spec does not define, naming them (Go's decoder drops them)."""
    if isinstance(schema, list):
        if isinstance(data, list):
            for i, item in enumerate(data):
                check_fields(item, f"{where}[{i}]", schema[0])
        return
    if not isinstance(schema, dict) or not isinstance(data, dict):
        return  # a value, or a wrong type the parser names
    for key, value in data.items():
        if key not in schema:
            raise ConfigError(f"{where}.{key}",
                              "unknown field (not in the runtime spec's LinuxResources)")
        check_fields(value, f"{where}.{key}", schema[key])


def build(args) -> tuple:
    """(Resources, warnings) from ``--resources`` and the flags of ``args``."""
    from corral.oci import config

    if getattr(args, "l3_cache_schema", None) or getattr(args, "mem_bw_schema", None):
        raise NotSupportedError("--l3-cache-schema / --mem-bw-schema (Intel RDT)")
    data = (read_object(args.resources, "--resources", "a JSON object (LinuxResources)")
            if args.resources else {})
    data = go_field_names(data, _SCHEMA)
    check_fields(data)
    given: dict[str, str] = {}  # spec field path → flag, to name the flag in errors
    for dest, (obj, key, kind) in FLAGS.items():
        text = getattr(args, dest, None)
        if text is None:
            continue
        flag = flag_name(dest)
        if kind == "size":
            value = ram_in_bytes(text, flag)
        elif kind == "str":
            value = text
        else:
            value = _number(text, flag, kind == "uint")
        section = data.get(obj)
        if not isinstance(section, dict):
            section = data[obj] = {}
        section[key] = value
        given[f"{R}.{obj}.{key}"] = flag
    data.pop("devices", None)  # runc's update leaves device rules alone
    try:
        if data.get("rdma"):
            raise NotSupportedError(f"{R}.rdma")
        memory = data.get("memory")
        if isinstance(memory, dict):
            for key in ("useHierarchy", "checkBeforeUpdate"):
                if memory.get(key):
                    raise NotSupportedError(f"{R}.memory.{key}")
        resources = config._resources(data, R)
    except ConfigError as e:
        flag = given.get(e.field)
        if flag is None:
            raise
        raise ConfigError(flag, str(e)[len(e.field) + 2:]) from None
    return resources, list(resources.warnings)


def update(container, resources) -> None:
    """Writes ``resources`` into the container's cgroup (created, running or paused)."""
    from .containers import CREATED, PAUSED, RUNNING

    if container.status() not in (CREATED, RUNNING, PAUSED):
        raise ContainerStateError("container not running")
    cgroup = container._cgroup()  # a rootless container may have none: a clear error
    if resources.empty():
        return
    for path in cgroup.paths.values():
        if not os.path.isdir(path):
            raise ContainerStateError(f"container not running (its cgroup {path} is gone)")
    if cgroup.unit is not None:  # systemd's properties first, as runc: it may rewrite cgroupfs
        from corral.cgroups import systemd_blocking, systemd_scope

        systemd_blocking.run(systemd_scope.update(cgroup, resources))
    cgroup.set_resources(resources)
