"""``corral update``: change a created, running or paused container's cgroup limits.

As runc: ``--resources FILE`` (``-`` for stdin, what containerd's shim sends) is a
LinuxResources JSON, parsed by the same code as config.json's ``linux.resources``; each flag
then overrides its field; memory sizes take runc's forms (``64m``, ``1g``, ``-1``). The result
is written through ``corral.cgroups`` (``resources.apply``). Unlike Go's decoder, a field the
spec does not define is refused by name. ``devices`` is accepted and ignored, as runc's update
does (containerd sends the whole LinuxResources); ``--kernel-memory`` is ignored with a
warning, as runc 1.2 does.
"""

from __future__ import annotations

import os

from corral.jsonlite import read_object
from corral.errors import ConfigError, ContainerStateError, NotSupportedError

R = "linux.resources"

# Every key of the spec's LinuxResources, and of each object inside it.
_KNOWN = {
    "": ("devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma",
         "unified"),
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness",
               "disableOOMKiller", "useHierarchy", "checkBeforeUpdate"),
    "cpu": ("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus",
            "mems", "idle"),
    "pids": ("limit",),
    "blockIO": ("weight", "leafWeight", "weightDevice", "throttleReadBpsDevice",
                "throttleWriteBpsDevice", "throttleReadIOPSDevice", "throttleWriteIOPSDevice"),
    "network": ("classID", "priorities"),
}
_KNOWN_ITEMS = {
    "blockIO.weightDevice": ("major", "minor", "weight", "leafWeight"),
    "blockIO.throttleReadBpsDevice": ("major", "minor", "rate"),
    "blockIO.throttleWriteBpsDevice": ("major", "minor", "rate"),
    "blockIO.throttleReadIOPSDevice": ("major", "minor", "rate"),
    "blockIO.throttleWriteIOPSDevice": ("major", "minor", "rate"),
    "hugepageLimits": ("pageSize", "limit"),
    "network.priorities": ("name", "priority"),
    "devices": ("allow", "type", "major", "minor", "access"),
}

# flag → (object, key, kind); kind "size" takes runc's memory sizes, "int" a number,
# "uint" a non-negative number, "str" text.
FLAGS = {
    "memory": ("memory", "limit", "size"),
    "memory_reservation": ("memory", "reservation", "size"),
    "memory_swap": ("memory", "swap", "size"),
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


def _check_known(obj: object, path: str, known: tuple, where: str) -> None:
    if not isinstance(obj, dict):
        return  # the parser names the wrong type
    for key in obj:
        if key not in known:
            raise ConfigError(f"{where}.{key}" if where else key,
                              "unknown field (not in the runtime spec's LinuxResources)")


def check_fields(data: dict, where: str = R) -> None:
    """Refuse keys the spec does not define, naming them (Go's decoder drops them)."""
    _check_known(data, "", _KNOWN[""], where)
    for name, known in _KNOWN.items():
        if name and isinstance(data.get(name), dict):
            _check_known(data[name], name, known, f"{where}.{name}")
    for name, known in _KNOWN_ITEMS.items():
        top, _, inner = name.partition(".")
        holder = data.get(top) if inner else data
        items = holder.get(inner or top) if isinstance(holder, dict) else None
        if isinstance(items, list):
            for i, item in enumerate(items):
                _check_known(item, name, known, f"{where}.{name}[{i}]")


def build(args) -> tuple:
    """(Resources, warnings) from ``--resources`` and the flags of ``args``."""
    from corral.oci import config

    if getattr(args, "l3_cache_schema", None) or getattr(args, "mem_bw_schema", None):
        raise NotSupportedError("--l3-cache-schema / --mem-bw-schema (Intel RDT)")
    data = (read_object(args.resources, "--resources", "a JSON object (LinuxResources)")
            if args.resources else {})
    check_fields(data)
    warnings = []
    if args.kernel_memory:
        warnings.append("--kernel-memory is ignored: the kernel no longer enforces kernel "
                        "memory limits")
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
            if memory.get("kernel"):
                warnings.append(f"{R}.memory.kernel is ignored: the kernel no longer "
                                "enforces kernel memory limits")
                memory.pop("kernel")
        resources = config._resources(data, R)
    except ConfigError as e:
        flag = given.get(e.field)
        if flag is None:
            raise
        raise ConfigError(flag, str(e)[len(e.field) + 2:]) from None
    return resources, warnings


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
