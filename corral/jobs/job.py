"""``Job``: one job described in Python terms, turned into an OCI config for the engine.

A caller says what to run and under which limits; ``Job.config()`` gives the OCI config (in
memory: the engine compiles it to a plan, no bundle on disk) and ``Job.bundle()`` writes one
as a bundle that any creation path -- ``corral run --bundle``, runc -- runs unchanged.
Everything is validated when the ``Job`` is made, so a bad value fails in the caller's code,
with the field named, before any container exists.

Three kinds of root filesystem:

- **the host's own root, read-only** (the default: no image needed).  ``root.path`` is a
  staging directory (``HostRoot``) holding, for each top-level entry of the host's ``/``,
  the same symlink or a recursive read-only bind (``rbind`` + ``rro``) of it; /proc, /dev,
  /sys (read-only), /tmp and /run are the container's own.  Only mount points and links,
  the mounts made in each container's own mount namespace: an engine's host-root jobs share
  one.  Chosen over binding the host's ``/`` itself: with ``/`` as the rootfs,
  ``root.readonly`` only covers the top mount and the private /tmp and /run would have to
  be mounted over host directories in a tree we must never write; with a staging directory
  the host's tree is only ever a set of read-only bind sources, the rootfs is a directory of
  our own (``root.readonly`` makes it read-only too), and the config is a plain OCI config
  that runc runs the same way.
- **a directory**: shared by every job as the read-only lower layer of an overlayfs whose
  upper and work directories are in the job's work directory.  The overlay is a config
  mount on ``/`` (``mounts[0]``), mounted by the container's init inside its own mount
  namespace (the plan compiler, ``corral/plan/compiler.py``): it disappears with the container and can never be
  left mounted on the host.  ``keep=True`` keeps the upper directory (the job's changes)
  after ``JobBundle.cleanup()``.
- **an OCI bundle**: its ``config.json`` and rootfs are used as they are; only the fields
  the job sets explicitly are applied on top (args, env merged, cwd, user, hostname, limits,
  mounts appended, network), plus the engine's cgroup placement and no terminal.

Plain classes rather than dataclasses: the validation *is* the constructor, and ``to_dict``
/ ``from_dict`` give the JSON form the daemon and jobs files use.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import time

from corral.errors import ConfigError, CorralError
from corral.record import Record

__all__ = ["Bind", "Job", "JobBundle", "Limits", "parse_duration", "parse_size"]

#: Host top-level directories a host-root job gets its own of, never the host's.
PRIVATE_DIRS = ("dev", "proc", "run", "sys", "tmp")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "corral"
CPU_PERIOD = 100_000  # µs; cpus=1.5 -> quota 150000
NETWORKS = ("none", "host", "bridge")  # and "bridge:NAME", "container:ID"
DEFAULT_BRIDGE = "corral0"
NAMES_DIR = "names"  # a bridge job's hosts and resolv.conf, in its work directory
_NETWORK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # an interface name: the bridge's

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?", re.IGNORECASE)
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")
_ENV_NAME = re.compile(r"[^=\0]+")


# --- values ------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_size(value: object, field: str) -> int:
    """Bytes from an int or "512M" / "1G" / "64k" / "1.5GiB" (binary units, like docker)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(field, f"{value} must be more than 0 bytes")
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(field, f"{value!r} is not a size (use 512M, 1G or bytes)")
    unit = match.group(2)
    size = int(float(match.group(1)) * (_SIZE_UNITS[unit.lower()] if unit else 1))
    if size <= 0:
        raise ConfigError(field, f"{value!r} must be more than 0 bytes")
    return size


def parse_duration(value: object, field: str) -> float:
    """Seconds from a number or "30s" / "5m" / "1.5h" / "500ms"."""
    if _is_number(value):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ConfigError(field, f"{value!r} is not a duration (use seconds, 30s, 5m or 1h)")
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(field, f"{value!r} must be more than 0 seconds")
    return seconds


def _cpus(value: object, field: str) -> float:
    if not _is_number(value) or not value > 0 or value == float("inf"):
        raise ConfigError(field, f"{value!r} is not a number of CPUs (use e.g. 1 or 1.5)")
    if round(value * CPU_PERIOD) < 1000:
        raise ConfigError(field, f"{value!r} is below the kernel's minimum of 0.01 CPUs")
    return float(value)


def _count(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(field, f"{value!r} is not a positive integer")
    return value


def _absolute(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigError(field, f"{value!r} is not an absolute path")
    return os.path.normpath(value)


def _host_path(value: object, field: str) -> str:
    """An existing host path, relative ones to the current directory."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(field, f"{value!r} is not a path")
    path = os.path.abspath(value)
    if not os.path.exists(path):
        raise ConfigError(field, f"{path} does not exist")
    return path


# --- parts of a job ------------------------------------------------------------------------


class Limits(Record):
    """A job's limits; None means unlimited.  memory: bytes; cpus: CPUs (1.5 = one and a
    half CPUs of time per wall second); pids: processes and threads; time: wall seconds
    (enforced by the engine that runs the job, not by the kernel)."""

    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None
    time: float | None = None

    @classmethod
    def parse(cls, value: object, field: str) -> Limits:
        """From a ``Limits``, a dict (``{"memory": "512M", "time": "5m"}``) or None."""
        if value is None:
            return cls()
        if isinstance(value, Limits):
            value = {k: v for k, v in zip(cls._fields, value._values()) if v is not None}
        if not isinstance(value, dict):
            raise ConfigError(field, f"{value!r} is not a table of limits")
        unknown = sorted(set(value) - set(cls._fields))
        if unknown:
            raise ConfigError(f"{field}.{unknown[0]}",
                              f"unknown limit (known: {', '.join(cls._fields)})")
        parsers = {"memory": parse_size, "cpus": _cpus, "pids": _count, "time": parse_duration}
        return cls(**{k: None if v is None else parsers[k](v, f"{field}.{k}")
                      for k, v in value.items()})

    def to_dict(self) -> dict:
        return {k: v for k, v in zip(self._fields, self._values()) if v is not None}


class Bind(Record):
    """A host path bound into the job: read-only unless ``readonly=False``."""

    source: str
    destination: str
    readonly: bool = True

    @classmethod
    def parse(cls, value: object, field: str) -> Bind:
        """From a ``Bind``, a dict ``{"source", "destination"?, "readonly"?}`` or a string
        ``SRC[:DST[:ro|rw]]`` (DST defaults to SRC; read-only unless ``:rw``)."""
        if isinstance(value, Bind):
            value = {"source": value.source, "destination": value.destination,
                     "readonly": value.readonly}
        elif isinstance(value, str):
            parts = value.split(":")
            if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ConfigError(field, f"{value!r} is not SRC[:DST[:ro|rw]]")
            value = {"source": parts[0], "destination": parts[1] if len(parts) > 1 else None,
                     "readonly": len(parts) < 3 or parts[2] == "ro"}
        if not isinstance(value, dict):
            raise ConfigError(field, f"{value!r} is not a bind mount")
        unknown = sorted(set(value) - {"source", "destination", "readonly"})
        if unknown:
            raise ConfigError(f"{field}.{unknown[0]}", "unknown field (known: source, "
                                                       "destination, readonly)")
        source = _host_path(value.get("source"), f"{field}.source")
        destination = value.get("destination")
        destination = source if destination is None else _absolute(destination,
                                                                   f"{field}.destination")
        if destination == "/":
            raise ConfigError(f"{field}.destination", "cannot bind over / (use root=)")
        readonly = value.get("readonly", True)
        if not isinstance(readonly, bool):
            raise ConfigError(f"{field}.readonly", f"{readonly!r} is not true or false")
        return cls(source, destination, readonly)

    def to_dict(self) -> dict:
        return {"source": self.source, "destination": self.destination,
                "readonly": self.readonly}

    def mount(self) -> dict:
        """The OCI mount: recursive, nosuid and nodev all the way down, and read-only all
        the way down when read-only."""
        options = ["rbind", "rnosuid", "rnodev"] + (["rro"] if self.readonly else [])
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": options}


def _env(value: object, field: str) -> dict[str, str]:
    """A dict, or a list of "NAME=value"; numbers become strings."""
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):
        pairs = {}
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"{field}[{i}]", f"{item!r} is not NAME=value")
            name, _, text = item.partition("=")
            pairs[name] = text
        value = pairs
    if not isinstance(value, dict):
        raise ConfigError(field, f"{value!r} is not a table of variables")
    env = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ConfigError(field, f"{name!r} is not a variable name")
        if _is_number(text):
            text = str(text)
        if not isinstance(text, str) or "\0" in text:
            raise ConfigError(f"{field}.{name}", f"{text!r} is not a string")
        env[name] = text
    return env


def _user(value: object, field: str) -> tuple[int, int] | None:
    """uid, "uid" or "uid:gid" (numbers: a job's root may have no /etc/passwd); the gid
    defaults to the uid, never to root's group."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        parts = [value, value]
    elif isinstance(value, str) and re.fullmatch(r"\d+(:\d+)?", value):
        numbers = [int(p) for p in value.split(":")]
        parts = numbers if len(numbers) == 2 else numbers * 2
    else:
        raise ConfigError(field, f"{value!r} is not uid or uid:gid (numbers)")
    if not all(0 <= p < (1 << 32) - 1 for p in parts):
        raise ConfigError(field, f"{value!r}: ids go from 0 to 4294967294")
    return parts[0], parts[1]


def _network(value: object, field: str) -> str | None:
    """"none", "host", "bridge" (the engine's default network), "bridge:NAME" (a network
    the engine was configured with) or "container:ID" (another container's namespace)."""
    if value is None or value in NETWORKS:
        return value
    if isinstance(value, str):
        kind, sep, name = value.partition(":")
        if sep and kind == "bridge":
            if not _NETWORK_NAME.fullmatch(name) or name in (".", ".."):
                raise ConfigError(field, f"{value!r}: {name!r} is not a network name "
                                         "(1-15 letters, digits, '_', '.', '-')")
            return value
        if sep and kind == "container":
            from corral.oci.state import validate_id

            try:
                validate_id(name)
            except ConfigError as err:
                raise ConfigError(field, f"{value!r}: {err}") from None
            return value
    raise ConfigError(field, f"{value!r} is not 'none', 'host', 'bridge', 'bridge:NAME' or "
                             "'container:ID'")


def _ports(value: object, bridge: str | None, field: str) -> tuple[str, ...]:
    """Published ports, "host_port:container_port[/tcp|udp]", normalized; a bridge's only."""
    if not value:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ConfigError(field, f"{value!r} is not a list of 'host_port:container_port"
                                 "[/tcp|udp]'")
    if bridge is None:
        raise ConfigError(field, "only a bridge network publishes ports (network='bridge')")
    from corral.net.addresses import parse_ports
    from corral.net.errors import NetworkError

    try:
        return tuple(str(p) for p in parse_ports(tuple(value)))
    except NetworkError as err:
        raise ConfigError(field, str(err).removeprefix("ports: ")) from None


def _args(value: object, field: str) -> list[str]:
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(a, str) and "\0" not in a for a in value)):
        raise ConfigError(field, f"{value!r} is not a non-empty list of strings")
    if not value[0]:
        raise ConfigError(f"{field}[0]", "the command must not be empty")
    return list(value)


# --- the job -------------------------------------------------------------------------------


class Job:
    """What to run and how; see the module docstring and docs/api.md ("Job").

    ``Job(["python3", "-c", "print(1)"])`` runs on the host's root, read-only, with no
    network.  Invalid values raise ``ConfigError`` naming the field (``job.limits.memory``).
    """

    __slots__ = ("args", "env", "cwd", "user", "hostname", "limits", "mounts", "network",
                 "ports", "peer_names", "root", "bundle_dir", "keep", "retries")
    _FIELDS = ("args", "env", "cwd", "user", "hostname", "limits", "mounts", "network",
               "ports", "peer_names", "root", "bundle", "keep", "retries")

    args: list[str] | None
    env: dict[str, str]
    cwd: str | None
    user: tuple[int, int] | None
    hostname: str | None
    limits: Limits
    mounts: tuple[Bind, ...]
    network: str | None
    ports: tuple[str, ...]
    peer_names: bool
    root: str | None
    bundle_dir: str | None
    keep: bool
    retries: int | None  # None: the runner's default (corral batch --retries)

    def __init__(self, args: list[str] | None = None, *,
                 env: dict[str, str] | list[str] | None = None, cwd: str | None = None,
                 user: int | str | None = None, hostname: str | None = None,
                 limits: Limits | dict | None = None, mounts: list[Bind | dict | str] | tuple = (),
                 network: str | None = None, ports: list[str] | tuple = (),
                 peer_names: bool = False, root: str | None = None,
                 bundle: str | None = None, keep: bool = False, retries: int | None = None) -> None:
        self._set("job.", dict(args=args, env=env, cwd=cwd, user=user, hostname=hostname,
                               limits=limits, mounts=mounts, network=network, ports=ports,
                               peer_names=peer_names, root=root, bundle=bundle, keep=keep,
                               retries=retries))

    @classmethod
    def from_dict(cls, data: object, where: str = "job.") -> Job:
        """From the JSON form (``to_dict``, jobs files).  ``where`` prefixes every field in
        errors: "job." gives "job.limits.memory"; "jobs.toml job 3: " gives
        "jobs.toml job 3: limits.memory"."""
        if not isinstance(data, dict):
            raise ConfigError(where.rstrip(". :"), f"{data!r} is not a table of job fields")
        unknown = sorted(set(data) - set(cls._FIELDS))
        if unknown:
            raise ConfigError(where + unknown[0], "unknown field (known: "
                                                  f"{', '.join(cls._FIELDS)})")
        job = cls.__new__(cls)
        job._set(where, data)
        return job

    def _set(self, where: str, values: dict) -> None:
        put = object.__setattr__
        bundle = values.get("bundle")
        root = values.get("root")
        if bundle is not None and root is not None:
            raise ConfigError(where + "bundle", "give root or bundle, not both")
        args = values.get("args")
        if args is None and bundle is None:
            raise ConfigError(where + "args", "a command is needed (only a bundle has its own)")
        put(self, "args", None if args is None else _args(args, where + "args"))
        put(self, "env", _env(values.get("env"), where + "env"))
        cwd = values.get("cwd")
        put(self, "cwd", None if cwd is None else _absolute(cwd, where + "cwd"))
        put(self, "user", _user(values.get("user"), where + "user"))
        hostname = values.get("hostname")
        if hostname is not None and (not isinstance(hostname, str)
                                     or not _HOSTNAME.fullmatch(hostname)):
            raise ConfigError(where + "hostname", f"{hostname!r} is not a host name "
                                                  "(letters, digits, '.', '-'; 64 at most)")
        put(self, "hostname", hostname)
        put(self, "limits", Limits.parse(values.get("limits"), where + "limits"))
        mounts = values.get("mounts") or ()
        if not isinstance(mounts, (list, tuple)):
            raise ConfigError(where + "mounts", f"{mounts!r} is not a list of bind mounts")
        put(self, "mounts", tuple(Bind.parse(m, f"{where}mounts[{i}]")
                                  for i, m in enumerate(mounts)))
        put(self, "network", _network(values.get("network"), where + "network"))
        put(self, "ports", _ports(values.get("ports"), self.bridge, where + "ports"))
        peer_names = values.get("peer_names", False)
        if not isinstance(peer_names, bool):
            raise ConfigError(where + "peer_names", f"{peer_names!r} is not true or false")
        if peer_names and self.bridge is None:
            raise ConfigError(where + "peer_names", "only a bridge network has peers "
                                                    "(network='bridge')")
        put(self, "peer_names", peer_names)
        put(self, "root", None if root is None else _root_dir(root, where + "root"))
        put(self, "bundle_dir", None if bundle is None else _bundle_dir(bundle,
                                                                        where + "bundle"))
        keep = values.get("keep", False)
        if not isinstance(keep, bool):
            raise ConfigError(where + "keep", f"{keep!r} is not true or false")
        if keep and root is None:
            raise ConfigError(where + "keep", "only a directory root has a layer to keep")
        put(self, "keep", keep)
        retries = values.get("retries")
        if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)
                                    or retries < 0):
            raise ConfigError(where + "retries", f"{retries!r} is not a count (0 or more)")
        put(self, "retries", retries)

    def __setattr__(self, name, value) -> None:
        raise AttributeError("Job is frozen: use job.replace(...)")

    @property
    def bridge(self) -> str | None:
        """The name of the bridge network the job is on ("bridge" is ``corral0``), or None."""
        if self.network == "bridge":
            return DEFAULT_BRIDGE
        if self.network and self.network.startswith("bridge:"):
            return self.network[len("bridge:"):]
        return None

    @property
    def joins(self) -> str | None:
        """The id of the container whose network namespace the job joins, or None."""
        if self.network and self.network.startswith("container:"):
            return self.network[len("container:"):]
        return None

    def replace(self, **changes) -> Job:
        """A copy with some fields changed (validated again)."""
        values = self.to_dict()
        values.update(changes)
        return Job.from_dict(values)

    def to_dict(self) -> dict:
        """The JSON form (sizes in bytes, durations in seconds); ``from_dict`` reads it."""
        out: dict = {}
        if self.args is not None:
            out["args"] = list(self.args)
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.user is not None:
            out["user"] = f"{self.user[0]}:{self.user[1]}"
        if self.hostname is not None:
            out["hostname"] = self.hostname
        if self.limits.to_dict():
            out["limits"] = self.limits.to_dict()
        if self.mounts:
            out["mounts"] = [m.to_dict() for m in self.mounts]
        if self.network is not None:
            out["network"] = self.network
        if self.ports:
            out["ports"] = list(self.ports)
        if self.peer_names:
            out["peer_names"] = True
        if self.root is not None:
            out["root"] = self.root
        if self.bundle_dir is not None:
            out["bundle"] = self.bundle_dir
        if self.keep:
            out["keep"] = True
        if self.retries is not None:
            out["retries"] = self.retries
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, Job) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __reduce__(self):
        """Pickled as its JSON form (a frozen object cannot be rebuilt by setattr): how a
        job travels to a Dask worker, validated again there."""
        return Job.from_dict, (self.to_dict(),)

    def __repr__(self) -> str:
        return "Job(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    # --- the config and the bundle ------------------------------------------------------

    @property
    def needs_workdir(self) -> bool:
        """A directory root (its overlay layers) and a bridge network (/etc/hosts and
        resolv.conf) need a work directory of the job's own; other jobs need none."""
        return self.root is not None or self.bridge is not None

    def config(self, container_id: str, cgroup_parent: str, *, workdir: str | None = None,
               host_root: HostRoot | None = None, netns: str | None = None) -> dict:
        """The job's OCI config, in memory, for a container ``container_id`` in the cgroup
        ``<cgroup_parent>/<id>``.  ``workdir``: the job's own directory (``needs_workdir``:
        made here, it must not exist or be empty); ``host_root``: the staging root that
        host-root jobs share (``HostRoot.make``); ``netns``: for a ``container:ID`` network,
        that container's network namespace (``/proc/<pid>/ns/net``)."""
        from corral.oci.state import validate_id

        validate_id(container_id)
        if (netns is not None) != (self.joins is not None):
            raise ConfigError("netns", "give the namespace path for a 'container:ID' "
                                       "network, and only for one")
        parent = cgroup_parent.strip("/") if isinstance(cgroup_parent, str) else None
        if not parent or ".." in parent.split("/"):
            raise ConfigError("cgroup_parent", f"{cgroup_parent!r} is not a cgroup path")
        if self.needs_workdir and workdir is None:
            raise ConfigError("workdir", "this job needs a work directory (a directory root "
                                         "or a bridge network)")
        if self.root is None and self.bundle_dir is None and host_root is None:
            raise ConfigError("host_root", "a host-root job needs the staging root")
        config = self._config(workdir, f"/{parent}/{container_id}", host_root)
        self._network_config(config, workdir, container_id, netns)
        return config

    def bundle(self, workdir: str, container_id: str, cgroup_parent: str, *,
               netns: str | None = None) -> JobBundle:
        """Write the job's bundle into ``workdir`` (made here; it must not exist, or be
        empty) for a container ``container_id`` in the cgroup ``<cgroup_parent>/<id>``.
        ``netns``: for a ``container:ID`` network, the path of that container's network
        namespace (``/proc/<pid>/ns/net``; the engine resolves it when it creates the job).
        On failure nothing is left behind."""
        from corral.oci.state import validate_id

        validate_id(container_id)
        if (netns is not None) != (self.joins is not None):
            raise ConfigError("netns", "give the namespace path for a 'container:ID' "
                                       "network, and only for one")
        parent = cgroup_parent.strip("/") if isinstance(cgroup_parent, str) else None
        if not parent or ".." in parent.split("/"):
            raise ConfigError("cgroup_parent", f"{cgroup_parent!r} is not a cgroup path")
        workdir = os.path.abspath(workdir)
        if self.root is not None and any(c in workdir for c in ",:\\"):
            raise ConfigError("workdir", f"{workdir}: ',', ':' and '\\' are not allowed "
                                         "(overlayfs options)")
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        if os.listdir(workdir):
            raise ConfigError("workdir", f"{workdir} is not empty")
        upper = os.path.join(workdir, "upper") if self.root is not None else None
        made = JobBundle(workdir, {}, upper, keep=self.keep)
        try:
            host_root = None
            if self.root is None and self.bundle_dir is None:
                host_root = HostRoot.make(os.path.join(workdir, "rootfs"))
            made.config = self.config(container_id, cgroup_parent, workdir=workdir,
                                      host_root=host_root, netns=netns)
            with open(os.path.join(workdir, "config.json"), "w") as f:
                json.dump(made.config, f, indent=1)
        except BaseException:
            made.cleanup(keep=False)
            raise
        return made

    def _config(self, workdir: str | None, cgroups_path: str, host_root: HostRoot | None) -> dict:
        if self.bundle_dir is not None:
            config = _bundle_config(self.bundle_dir)
        else:
            config = _base_config()
            if self.root is None:
                config["root"] = {"path": host_root.path, "readonly": True}
                config["mounts"] += copy.deepcopy(host_root.mounts)
            else:
                config["root"] = {"path": _overlay_root(workdir, self.root), "readonly": False}
                config["mounts"].insert(0, _overlay_mount(workdir, self.root))
        self._apply(config)
        config["linux"]["cgroupsPath"] = cgroups_path
        return config

    def _network_config(self, config: dict, workdir: str, container_id: str,
                        netns: str | None) -> None:
        """A bridge job: its own network namespace (the engine attaches it), its hostname
        (by default its container id, the name its peers know it by) and /etc/hosts and
        /etc/resolv.conf bound from files in the work directory: loopback names here, the
        engine rewrites them in place once the job has an address.  A ``container:ID`` job:
        that container's namespace, joined by path."""
        namespaces = config["linux"].get("namespaces", [])
        if netns is not None:
            config["linux"]["namespaces"] = namespaces + [{"type": "network", "path": netns}]
            return
        if self.bridge is None:
            return
        from corral.net.names import write_names

        if (self.hostname is None and self.bundle_dir is None
                and _HOSTNAME.fullmatch(container_id)):
            config["hostname"] = container_id
        hosts, resolv = write_names(os.path.join(workdir, NAMES_DIR),
                                    config.get("hostname") or container_id, [])
        config["mounts"] += [{"destination": destination, "type": "bind", "source": source,
                              "options": ["bind"]}
                             for destination, source in (("/etc/hosts", hosts),
                                                         ("/etc/resolv.conf", resolv))]

    def _apply(self, config: dict) -> None:
        """The job's fields over a base config; unset ones keep the base's values."""
        process = config["process"]
        process["terminal"] = False  # jobs have pipes or files, never a terminal
        if self.args is not None:
            process["args"] = list(self.args)
        if self.env:
            env = dict(e.partition("=")[::2] for e in process.get("env", []))
            env.update(self.env)
            process["env"] = [f"{k}={v}" for k, v in env.items()]
        if self.cwd is not None:
            process["cwd"] = self.cwd
        if self.user is not None:
            process["user"] = {"uid": self.user[0], "gid": self.user[1]}
        if self.hostname is not None:
            config["hostname"] = self.hostname
        config.setdefault("mounts", []).extend(m.mount() for m in self.mounts)
        linux = config.setdefault("linux", {})
        if self.network is not None:
            namespaces = [ns for ns in linux.get("namespaces", []) if ns["type"] != "network"]
            if self.network == "none" or self.bridge is not None:
                namespaces.append({"type": "network"})
            linux["namespaces"] = namespaces
        resources = linux.setdefault("resources", {})
        if self.limits.memory is not None:
            resources.setdefault("memory", {})["limit"] = self.limits.memory
        if self.limits.cpus is not None:
            resources.setdefault("cpu", {}).update(
                quota=round(self.limits.cpus * CPU_PERIOD), period=CPU_PERIOD)
        if self.limits.pids is not None:
            resources["pids"] = {"limit": self.limits.pids}


class JobBundle:
    """A bundle made by ``Job.bundle``: ``path`` (the directory holding config.json),
    ``config`` (its content), ``upper`` (a directory root's overlay upper layer: the job's
    changes; None otherwise).  ``cleanup()`` removes the work directory once the container
    is deleted; with ``keep`` the upper layer stays."""

    __slots__ = ("path", "config", "upper", "keep")

    def __init__(self, path: str, config: dict, upper: str | None, keep: bool = False) -> None:
        self.path = path
        self.config = config
        self.upper = upper
        self.keep = keep

    def __repr__(self) -> str:
        return f"JobBundle(path={self.path!r}, upper={self.upper!r}, keep={self.keep})"

    def cleanup(self, keep: bool | None = None) -> None:
        """Remove what ``Job.bundle`` made (idempotent); with ``keep`` the upper layer stays."""
        from corral.runtime.containers import remove_work_dir

        remove_work_dir(self.path, self.upper, self.keep if keep is None else keep)


# --- roots ---------------------------------------------------------------------------------


def _root_dir(value: object, field: str) -> str:
    path = _host_path(value, field)
    if not os.path.isdir(path):
        raise ConfigError(field, f"{path} is not a directory")
    if any(c in path for c in ",:\\"):
        # overlayfs option syntax: these would need escaping in lowerdir=
        raise ConfigError(field, f"{path}: ',', ':' and '\\' are not allowed in a root path")
    return os.path.realpath(path)


def _bundle_dir(value: object, field: str) -> str:
    path = _host_path(value, field)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(field, f"{path} is not an OCI bundle (no config.json)")
    return path


def _base_config() -> dict:
    from corral.oci.spec import default_spec

    config = default_spec()
    config["process"]["env"] = [f"PATH={DEFAULT_PATH}"]
    config["hostname"] = DEFAULT_HOSTNAME
    return config


def _bundle_config(bundle: str) -> dict:
    """A copy of the bundle's config with the paths that were relative to the bundle
    made absolute (the copy lives in the job's work directory)."""
    from corral.oci.config import load_bundle

    _config, raw = load_bundle(bundle)  # validates, and checks the rootfs exists
    config = copy.deepcopy(raw)
    config["root"]["path"] = os.path.join(bundle, config["root"]["path"])
    for mount in config.get("mounts", []):
        source = mount.get("source")
        if source and not source.startswith("/") and _is_bind_mount(mount):
            mount["source"] = os.path.join(bundle, source)
    return config


def _is_bind_mount(mount: dict) -> bool:
    options = mount.get("options", [])
    return (mount.get("type") in ("bind", "rbind", "none", None)
            or "bind" in options or "rbind" in options)


class HostRoot:
    """The staging root of host-root jobs: for each top-level entry of the host's ``/``,
    the same symlink, or an empty mount point for a recursive read-only bind of it; /proc,
    /dev, /sys, /tmp and /run are the container's own.  Only mount points and links: the
    mounts are made in each container's own mount namespace, so one staging root serves
    every host-root job of an engine (``make`` once, ``remove`` at the end)."""

    __slots__ = ("path", "mounts")

    def __init__(self, path: str, mounts: list[dict]) -> None:
        self.path = path
        self.mounts = mounts

    @classmethod
    def make(cls, path: str) -> HostRoot:
        """Made at ``path`` (which must not exist)."""
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)  # whatever the umask
        mounts = [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=755"]},
        ]
        try:
            for name in sorted(os.listdir("/")):
                host, staged = "/" + name, os.path.join(path, name)
                st = os.lstat(host)
                if name in PRIVATE_DIRS:
                    os.mkdir(staged)
                    os.chmod(staged, 0o1777 if name == "tmp" else 0o755)
                    continue
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(host), staged)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(staged, 0o755)
                    options = ["rbind", "rro"]
                elif stat.S_ISREG(st.st_mode):
                    open(staged, "x").close()
                    options = ["bind", "ro"]
                else:
                    continue  # sockets and devices at the top of / have no place in a job
                mounts.append({"destination": host, "type": "bind", "source": host,
                               "options": options})
        except BaseException:
            cls(path, mounts).remove()
            raise
        return cls(path, mounts)

    def remove(self) -> None:
        """Refused while anything is mounted below it (the host's files, for a bind)."""
        from corral.runtime.containers import remove_work_dir

        remove_work_dir(self.path, None, False)

    @classmethod
    def shared(cls, directory: str, container_ids) -> HostRoot:
        """The staging root of a state root's engine (``<directory>/hostroot``).  One left
        by an earlier engine is used again while it matches the host's ``/``; a stale one
        is replaced only when ``container_ids()`` says no container is left (removing a
        mount point takes its mounts away in every namespace: running jobs would lose their
        /usr), else a new one is made beside it."""
        path = os.path.join(directory, "hostroot")
        if os.path.isdir(path):
            found = cls._read(path)
            if found is not None:
                return found
            if container_ids():
                path = os.path.join(directory, f"hostroot.{os.getpid()}.{time.time_ns()}")
            else:
                for name in os.listdir(directory):
                    if name == "hostroot" or name.startswith("hostroot."):
                        cls(os.path.join(directory, name), []).remove()
        os.makedirs(directory, 0o700, exist_ok=True)
        return cls.make(path)

    @classmethod
    def _read(cls, path: str) -> HostRoot | None:
        """The staging root at ``path`` if it is what ``make`` would make now, else None."""
        try:
            fresh = cls.make(path + ".check")
        except OSError:
            return None
        try:
            same = sorted(os.listdir(path)) == sorted(os.listdir(fresh.path)) and all(
                os.path.islink(os.path.join(path, n)) == os.path.islink(os.path.join(fresh.path, n))
                and (not os.path.islink(os.path.join(path, n))
                     or os.readlink(os.path.join(path, n)) == os.readlink(os.path.join(fresh.path, n)))
                for n in os.listdir(path))
        finally:
            fresh.remove()
        return cls(path, fresh.mounts) if same else None


def _overlay_root(workdir: str, lower: str) -> str:
    """The mount point of the overlay and its upper and work directories.  The upper's
    root gets the lower's mode and owner: the merged ``/`` takes its attributes from it."""
    rootfs = os.path.join(workdir, "rootfs")
    os.mkdir(rootfs, 0o755)
    upper = os.path.join(workdir, "upper")
    os.mkdir(upper)
    st = os.stat(lower)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    os.chown(upper, st.st_uid, st.st_gid)
    os.mkdir(os.path.join(workdir, "work"), 0o700)
    return rootfs


def _overlay_mount(workdir: str, lower: str) -> dict:
    return {"destination": "/", "type": "overlay", "source": "overlay",
            "options": [f"lowerdir={lower}", f"upperdir={workdir}/upper",
                        f"workdir={workdir}/work"]}
