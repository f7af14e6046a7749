"""The OCI runtime config (``config.json``) as typed, validated data.

``parse_config`` turns the decoded JSON into these frozen dataclasses or raises
``ConfigError`` naming the field (``process.args[0]: ...``).  Fields the spec defines that corral
does not implement yet raise ``NotSupportedError`` naming the field: never silently ignored.
Only stdlib imports: this module is on the CLI's ``create`` path.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdMapping:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class Namespace:
    type: str  # pid network mount ipc uts user cgroup time
    path: str | None = None


@dataclass(frozen=True)
class Rlimit:
    type: str  # "RLIMIT_NOFILE", ...
    hard: int
    soft: int


@dataclass(frozen=True)
class Capabilities:
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True)
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    cwd: str
    user: User = field(default_factory=User)
    env: tuple[str, ...] = ()
    terminal: bool = False
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class Device:
    path: str
    type: str  # c b u p
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class DeviceRule:
    """One ``linux.resources.devices`` entry (the device cgroup allow/deny list)."""

    allow: bool
    type: str = "a"  # a c b
    major: int | None = None  # None: any (-1 / "*")
    minor: int | None = None
    access: str = "rwm"


@dataclass(frozen=True)
class Linux:
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    device_rules: tuple[DeviceRule, ...] = ()
    cgroups_path: str | None = None
    rootfs_propagation: str | None = None  # shared slave private unbindable (r-prefixed too)
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


@dataclass(frozen=True)
class Config:
    oci_version: str
    root_path: str  # as written in config.json; relative to the bundle unless absolute
    process: Process
    root_readonly: bool = False
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    linux: Linux = field(default_factory=Linux)
    annotations: dict[str, str] = field(default_factory=dict)
