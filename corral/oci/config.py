"""The OCI runtime config (``config.json``) as typed, validated data.

``parse_config`` turns the decoded JSON into these frozen records (corral.record) or raises
``ConfigError`` naming the field (``process.args[0]: ...``).  Fields the spec defines that corral
does not implement yet raise ``NotSupportedError`` naming the field: never silently ignored.
Only stdlib imports: this module is on the CLI's ``create`` path.
"""

from __future__ import annotations

from corral import jsonlite as json
import os
from corral.record import Record, factory

from corral.errors import ConfigError, NotSupportedError
from corral.oci.capabilities import cap_number


class IdMapping(Record):
    container_id: int
    host_id: int
    size: int


def id_map_text(mappings) -> str:
    """The kernel's uid_map/gid_map text for a list of mappings."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


class Mount(Record):
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()  # an idmapped bind mount (both or neither)
    gid_mappings: tuple[IdMapping, ...] = ()
    # "idmap" or "ridmap" (recursive) for an idmapped bind mount (mappings without either
    # option mean "idmap", as in runc); without its own mappings it takes the container's
    idmap: str | None = None


class Namespace(Record):
    type: str  # pid network mount ipc uts user cgroup time
    path: str | None = None


class Rlimit(Record):
    type: str  # "RLIMIT_NOFILE", ...
    hard: int
    soft: int


class Capabilities(Record):
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


class User(Record):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


class Scheduler(Record):
    """``process.scheduler``: sched_setattr(2) for the init (inherited by the process)."""

    policy: str  # SCHED_OTHER SCHED_FIFO ...
    nice: int = 0
    priority: int = 0
    flags: tuple[str, ...] = ()
    runtime: int = 0  # ns, SCHED_DEADLINE only
    deadline: int = 0
    period: int = 0


class IOPriority(Record):
    """``process.ioPriority``: ioprio_set(2) for the process."""

    io_class: str  # IOPRIO_CLASS_RT BE IDLE
    priority: int = 0


class CPUAffinity(Record):
    """``process.execCPUAffinity``: cpu lists ("0-3,5") before the namespaces and at exec."""

    initial: str | None = None
    final: str | None = None


class Process(Record):
    args: tuple[str, ...]
    cwd: str
    user: User = factory(User)
    env: tuple[str, ...] = ()
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width) of the terminal
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    scheduler: Scheduler | None = None
    io_priority: IOPriority | None = None
    exec_cpu_affinity: CPUAffinity | None = None
    apparmor_profile: str | None = None
    selinux_label: str | None = None


class Personality(Record):
    domain: str  # LINUX LINUX32
    flags: tuple[str, ...] = ()


class TimeOffset(Record):
    secs: int = 0
    nanosecs: int = 0


class Device(Record):
    path: str
    type: str  # c b u p
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class DeviceRule(Record):
    """One ``linux.resources.devices`` entry (the device cgroup allow/deny list)."""

    allow: bool
    type: str = "a"  # a c b
    major: int | None = None  # None: any (-1 / "*")
    minor: int | None = None
    access: str = "rwm"


class MemoryResources(Record):
    """``linux.resources.memory``; None is unset, -1 unlimited (bytes)."""

    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None  # memory + swap, as on cgroup v1
    swappiness: int | None = None
    disable_oom_killer: bool | None = None


class CpuResources(Record):
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


class WeightDevice(Record):
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class ThrottleDevice(Record):
    major: int
    minor: int
    rate: int


class BlockIOResources(Record):
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: tuple[WeightDevice, ...] = ()
    throttle_read_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_read_iops_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_iops_device: tuple[ThrottleDevice, ...] = ()


class HugepageLimit(Record):
    page_size: str  # "2MB", "1GB", as in the hugetlb.<size>.* file names
    limit: int


class NetworkPriority(Record):
    name: str
    priority: int


class NetworkResources(Record):
    class_id: int | None = None
    priorities: tuple[NetworkPriority, ...] = ()


class Resources(Record):
    """``linux.resources`` except ``devices`` (``Linux.device_rules``).  ``warnings``: what
    was given and is ignored (kernel memory limits), for the caller to say."""

    memory: MemoryResources | None = None
    cpu: CpuResources | None = None
    pids_limit: int | None = None
    block_io: BlockIOResources | None = None
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    network: NetworkResources | None = None
    unified: dict[str, str] = factory(dict)
    warnings: tuple[str, ...] = ()

    def empty(self) -> bool:
        return self == Resources(warnings=self.warnings)


class Hook(Record):
    """One ``hooks.<kind>[i]`` entry; ``args`` includes argv[0] (empty: just the path),
    ``env`` empty means the caller's environment (Go's exec.Cmd with a nil Env, as runc)."""

    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None  # seconds


class Hooks(Record):
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


class SeccompArg(Record):
    index: int
    value: int
    value_two: int = 0
    op: str = "SCMP_CMP_EQ"


class SeccompSyscall(Record):
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] = ()


class Seccomp(Record):
    """``linux.seccomp``, validated by name; compiled by corral.plan.seccomp (libseccomp)."""

    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[SeccompSyscall, ...] = ()
    listener_path: str | None = None  # SCMP_ACT_NOTIFY: the agent's UNIX socket
    listener_metadata: str | None = None  # passed to the agent as is

    @property
    def notifies(self) -> bool:
        """Some rule hands its syscalls to the listener (SCMP_ACT_NOTIFY)."""
        return any(rule.action == "SCMP_ACT_NOTIFY" for rule in self.syscalls)


class MemoryPolicy(Record):
    """``linux.memoryPolicy``: set_mempolicy(2) for the init, kept across execve."""

    mode: str  # MPOL_DEFAULT MPOL_BIND ...
    nodes: tuple[int, ...] = ()
    flags: tuple[str, ...] = ()


class NetDevice(Record):
    """One ``linux.netDevices`` entry: the host device ``host_name`` moved into the
    container's network namespace, as ``name`` there."""

    host_name: str
    name: str


class Linux(Record):
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    device_rules: tuple[DeviceRule, ...] = ()
    resources: Resources = factory(Resources)
    cgroups_path: str | None = None
    rootfs_propagation: str | None = None  # shared slave private unbindable (r-prefixed too)
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: dict[str, str] = factory(dict)  # key (dotted, or a /proc/sys relative path): value
    seccomp: Seccomp | None = None
    time_offsets: dict[str, TimeOffset] = factory(dict)  # "monotonic" / "boottime"
    personality: Personality | None = None
    mount_label: str | None = None
    intel_rdt: dict | None = None  # kept as given: refused by the host checks (no resctrl)
    memory_policy: MemoryPolicy | None = None
    net_devices: tuple[NetDevice, ...] = ()

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


class Config(Record):
    oci_version: str
    root_path: str  # as written in config.json; relative to the bundle unless absolute
    process: Process
    root_readonly: bool = False
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    linux: Linux = factory(Linux)
    annotations: dict[str, str] = factory(dict)
    hooks: Hooks = factory(Hooks)


# ---------------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------------

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

#: setrlimit(2) resource numbers on Linux (the same on every architecture).
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}

NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})
_PROPAGATIONS = frozenset(
    {"shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate", "runbindable"}
)
_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")

# Spec fields corral does not implement yet.  Refused when set, so a container never runs
# with less isolation than its config asked for; empty values are fine (tools write ``{}``).
_PROCESS_UNSUPPORTED = (
    "commandLine",
)
_LINUX_UNSUPPORTED = (
    "rdma",
)
_RESOURCES_UNSUPPORTED = ("rdma",)

_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the number {value!r}"
    return _KINDS.get(type(value), type(value).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check(value: object, path: str, kind: type) -> object:
    """Type-check one JSON value.  Strings must survive the trip to a C string and back."""
    # JSON true is not the integer 1, whatever Python thinks.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(path, f"expected {_KINDS[kind]}, got {_describe(value)}")
    if kind is str:
        if "\0" in value:
            raise ConfigError(path, "must not contain a NUL character")
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ConfigError(path, "is not valid Unicode (lone surrogate)") from None
    return value


def _opt(obj: dict, key: str, path: str, kind: type, default: object = None) -> object:
    """JSON null counts as absent, as in Go's decoder that every other runtime uses."""
    value = obj.get(key)
    return default if value is None else _check(value, _join(path, key), kind)


def _req(obj: dict, key: str, path: str, kind: type) -> object:
    value = _opt(obj, key, path, kind)
    if value is None:
        raise ConfigError(_join(path, key), "is required")
    return value


def _in_range(value: object, path: str, lo: int, hi: int) -> int:
    _check(value, path, int)
    if not lo <= value <= hi:
        raise ConfigError(path, f"must be between {lo} and {hi}, got {value}")
    return value


def _int(obj: dict, key: str, path: str, lo: int, hi: int, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ConfigError(_join(path, key), "is required")
        return None
    return _in_range(value, _join(path, key), lo, hi)


def _items(obj: dict, key: str, path: str) -> list[tuple[str, object]]:
    """An optional array as (element path, element) pairs, so errors can name the index."""
    array = _opt(obj, key, path, list, ())
    where = _join(path, key)
    return [(f"{where}[{i}]", item) for i, item in enumerate(array)]


def _strs(obj: dict, key: str, path: str) -> tuple[str, ...]:
    return tuple(_check(item, where, str) for where, item in _items(obj, key, path))


def _absolute(value: object, path: str) -> str:
    _check(value, path, str)
    if not value.startswith("/"):
        raise ConfigError(path, f"must be an absolute path, got {value!r}")
    return value


def _unsupported(obj: dict, keys: tuple[str, ...], path: str) -> None:
    for key in keys:
        if obj.get(key):
            raise NotSupportedError(_join(path, key))


def parse_config(data: object) -> Config:
    """Validate everything up front: the child side must never meet a bad value mid-setup."""
    if not isinstance(data, dict):
        raise ConfigError("", f"config.json must hold a JSON object, got {_describe(data)}")
    version = _req(data, "ociVersion", "", str)
    if version.split(".")[0] != "1":
        raise ConfigError("ociVersion", f"unsupported version {version!r} (corral implements 1.x)")
    hooks = _hooks(data)
    root = _req(data, "root", "", dict)
    root_path = _req(root, "path", "root", str)
    if not root_path:
        raise ConfigError("root.path", "must not be empty")
    process = _process(_req(data, "process", "", dict), "process")
    linux = _linux(_opt(data, "linux", "", dict, {}), "linux")
    mounts = tuple(_mount(item, where, linux) for where, item in _items(data, "mounts", ""))
    return Config(
        oci_version=version,
        root_path=root_path,
        process=process,
        root_readonly=_opt(root, "readonly", "root", bool, False),
        hostname=_uts_name(data, "hostname", linux),
        domainname=_uts_name(data, "domainname", linux),
        mounts=mounts,
        linux=linux,
        annotations=_annotations(data),
        hooks=hooks,
    )


def _hooks(data: dict) -> Hooks:
    hooks = _opt(data, "hooks", "", dict, {})
    found = {}
    for key in _HOOKS:
        found[key] = tuple(_hook(item, where) for where, item in _items(hooks, key, "hooks"))
    return Hooks(prestart=found["prestart"], create_runtime=found["createRuntime"],
                 create_container=found["createContainer"],
                 start_container=found["startContainer"], poststart=found["poststart"],
                 poststop=found["poststop"])


def _hook(obj: object, path: str) -> Hook:
    _check(obj, path, dict)
    timeout = _int(obj, "timeout", path, -(1 << 63), _I64_MAX)
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"{path}.timeout", f"must be a positive number of seconds, "
                                             f"got {timeout}")
    return Hook(
        path=_absolute(_req(obj, "path", path, str), f"{path}.path"),
        args=_strs(obj, "args", path),
        env=tuple(_env(item, where) for where, item in _items(obj, "env", path)),
        timeout=timeout,
    )


def _process(obj: dict, path: str) -> Process:
    _unsupported(obj, _PROCESS_UNSUPPORTED, path)
    terminal = _opt(obj, "terminal", path, bool, False)
    size = _opt(obj, "consoleSize", path, dict)
    console_size = None
    if size:  # {} is what tools write for none
        console_size = (_int(size, "height", f"{path}.consoleSize", 0, 0xFFFF) or 0,
                         _int(size, "width", f"{path}.consoleSize", 0, 0xFFFF) or 0)
    args = _strs(obj, "args", path)
    if not args:
        raise ConfigError(f"{path}.args", "is required and must name a program")
    if not args[0]:
        raise ConfigError(f"{path}.args[0]", "must not be empty")
    user = _opt(obj, "user", path, dict)
    caps = _opt(obj, "capabilities", path, dict)
    return Process(
        args=args,
        cwd=_absolute(_req(obj, "cwd", path, str), f"{path}.cwd"),
        user=User() if user is None else _user(user, f"{path}.user"),
        env=tuple(_env(item, where) for where, item in _items(obj, "env", path)),
        terminal=terminal,
        console_size=console_size,
        capabilities=None if caps is None else _capabilities(caps, f"{path}.capabilities"),
        rlimits=_rlimits(obj, path),
        no_new_privileges=_opt(obj, "noNewPrivileges", path, bool, False),
        oom_score_adj=_int(obj, "oomScoreAdj", path, -1000, 1000),
        scheduler=_scheduler(obj, path),
        io_priority=_io_priority(obj, path),
        exec_cpu_affinity=_exec_cpu_affinity(obj, path),
        apparmor_profile=_opt(obj, "apparmorProfile", path, str) or None,
        selinux_label=_opt(obj, "selinuxLabel", path, str) or None,
    )


# ---- process.scheduler, ioPriority, execCPUAffinity -------------------------------------------

#: sched_setattr(2) policies (SCHED_ISO is reserved: mainline kernels refuse it).
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                  "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}


def _scheduler(obj: dict, path: str) -> Scheduler | None:
    sched = _opt(obj, "scheduler", path, dict, {})
    if not sched:
        return None
    path = f"{path}.scheduler"
    policy = _req(sched, "policy", path, str)
    if policy not in SCHED_POLICIES:
        raise ConfigError(f"{path}.policy", f"unknown scheduling policy {policy!r}")
    priority = _int(sched, "priority", path, 0, 99) or 0
    if policy in ("SCHED_FIFO", "SCHED_RR"):
        if priority < 1:
            raise ConfigError(f"{path}.priority", f"{policy} needs a priority from 1 to 99")
    elif priority:
        raise ConfigError(f"{path}.priority", f"must be 0 for {policy} (only SCHED_FIFO and "
                                              f"SCHED_RR have priorities)")
    flags = _strs(sched, "flags", path)
    for i, flag in enumerate(flags):
        if flag not in SCHED_FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", f"unknown scheduler flag {flag!r}")
    times = {key: _int(sched, key, path, 0, _U64) or 0 for key in ("runtime", "deadline",
                                                                    "period")}
    if policy != "SCHED_DEADLINE":
        for key, value in times.items():
            if value:
                raise ConfigError(f"{path}.{key}", f"only SCHED_DEADLINE takes a {key}")
    return Scheduler(policy=policy, nice=_int(sched, "nice", path, -20, 19) or 0,
                     priority=priority, flags=flags, **times)


def _io_priority(obj: dict, path: str) -> IOPriority | None:
    prio = _opt(obj, "ioPriority", path, dict, {})
    if not prio:
        return None
    path = f"{path}.ioPriority"
    io_class = _req(prio, "class", path, str)
    if io_class not in IOPRIO_CLASSES:
        raise ConfigError(f"{path}.class", f"unknown I/O priority class {io_class!r}")
    return IOPriority(io_class=io_class, priority=_int(prio, "priority", path, 0, 7) or 0)


def cpu_set(value: str) -> set[int]:
    """A cpu list ("0-3,5") as a set of cpu numbers (already validated by _cpu_list)."""
    cpus: set[int] = set()
    for part in value.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _exec_cpu_affinity(obj: dict, path: str) -> CPUAffinity | None:
    affinity = _opt(obj, "execCPUAffinity", path, dict, {})
    if not affinity:
        return None
    path = f"{path}.execCPUAffinity"
    found = {}
    for key in ("initial", "final"):
        value = _cpu_list(affinity, key, path)
        if value is not None and len(cpu_set(value)) == 0:
            raise ConfigError(f"{path}.{key}", "names no cpu")
        found[key] = value
    return CPUAffinity(**found)


def _user(obj: dict, path: str) -> User:
    return User(
        uid=_int(obj, "uid", path, 0, _U32, required=True),
        gid=_int(obj, "gid", path, 0, _U32, required=True),
        umask=_int(obj, "umask", path, 0, 0o777),
        additional_gids=tuple(
            _in_range(gid, where, 0, _U32) for where, gid in _items(obj, "additionalGids", path)
        ),
    )


def _env(value: object, path: str) -> str:
    name, eq, _ = _check(value, path, str).partition("=")
    if not eq or not name:
        raise ConfigError(path, f"{value!r} is not of the form NAME=value")
    return value


def _capabilities(obj: dict, path: str) -> Capabilities:
    sets = {}
    for key in _CAP_SETS:
        names = _strs(obj, key, path)
        for i, name in enumerate(names):
            try:
                cap_number(name)
            except ValueError as err:
                raise ConfigError(f"{path}.{key}[{i}]", str(err)) from None
        sets[key] = names
    return Capabilities(**sets)


def _rlimits(obj: dict, path: str) -> tuple[Rlimit, ...]:
    limits: dict[str, Rlimit] = {}
    for where, item in _items(obj, "rlimits", path):
        limit = _rlimit(_check(item, where, dict), where)
        if limit.type in limits:
            raise ConfigError(f"{where}.type", f"duplicate resource limit {limit.type}")
        limits[limit.type] = limit
    return tuple(limits.values())


def _rlimit(obj: dict, path: str) -> Rlimit:
    kind = _req(obj, "type", path, str)
    if kind not in RLIMITS:
        raise ConfigError(f"{path}.type", f"unknown resource limit {kind!r}")
    hard = _int(obj, "hard", path, 0, _U64, required=True)
    soft = _int(obj, "soft", path, 0, _U64, required=True)
    if soft > hard:
        raise ConfigError(f"{path}.soft", f"soft limit {soft} is above the hard limit {hard}")
    return Rlimit(type=kind, hard=hard, soft=soft)


def _mount(obj: object, path: str, linux: Linux | None = None) -> Mount:
    _check(obj, path, dict)
    uid_mappings = _mappings(obj, "uidMappings", path)
    gid_mappings = _mappings(obj, "gidMappings", path)
    if bool(uid_mappings) != bool(gid_mappings):
        missing = "gidMappings" if uid_mappings else "uidMappings"
        raise ConfigError(f"{path}.{missing}", "an idmapped mount needs both uidMappings and "
                                               "gidMappings")
    options = _strs(obj, "options", path)
    idmap_options = [o for o in options if o in ("idmap", "ridmap")]
    if len(set(idmap_options)) > 1:
        raise ConfigError(f"{path}.options", "idmap and ridmap exclude each other")
    idmap = idmap_options[0] if idmap_options else ("idmap" if uid_mappings else None)
    mount = Mount(
        destination=_absolute(_req(obj, "destination", path, str), f"{path}.destination"),
        type=_opt(obj, "type", path, str) or None,
        source=_opt(obj, "source", path, str) or None,
        options=options,
        uid_mappings=uid_mappings,
        gid_mappings=gid_mappings,
        idmap=idmap,
    )
    if idmap is None:
        return mount
    where = f"{path}.uidMappings" if uid_mappings else f"{path}.options"
    if not (mount.type in ("bind", "rbind", "none", None)
            or "bind" in mount.options or "rbind" in mount.options):
        raise ConfigError(where, "only bind mounts can be idmapped here")
    if not uid_mappings and (linux is None or linux.namespace("user") is None):
        # config.md: without mappings of its own the mount takes the container's user
        # namespace; with none, an error
        raise ConfigError(f"{path}.options", f"{idmap} without uidMappings/gidMappings needs "
                                             f"the container's user namespace (linux.namespaces "
                                             f"has no \"user\" entry)")
    return mount


def _uts_name(data: dict, key: str, linux: Linux) -> str | None:
    name = _opt(data, key, "", str) or None
    if name is None:
        return None
    # Like runc, any uts entry counts: without one we would rename the host.
    if linux.namespace("uts") is None:
        raise ConfigError(key, f"unable to set {key} without a private UTS namespace")
    if len(name.encode("utf-8", "surrogateescape")) > 64:
        raise ConfigError(key, "must be at most 64 bytes long")
    return name


def _annotations(data: dict) -> dict[str, str]:
    annotations = _opt(data, "annotations", "", dict, {})
    for key, value in annotations.items():
        if not isinstance(key, str):
            raise ConfigError("annotations", f"keys must be strings, got {_describe(key)}")
        if not isinstance(value, str):
            # Keys are free text (dots, quotes, newlines): quote them to keep one line.
            where = f"annotations[{json.dumps(key)}]"
            raise ConfigError(where, f"expected a string, got {_describe(value)}")
    return dict(annotations)


def _linux(obj: dict, path: str) -> Linux:
    _unsupported(obj, _LINUX_UNSUPPORTED, path)
    namespaces = _namespaces(obj, path)
    uid_mappings = _mappings(obj, "uidMappings", path)
    gid_mappings = _mappings(obj, "gidMappings", path)
    _check_user_namespace(namespaces, uid_mappings, gid_mappings, path)
    propagation = _opt(obj, "rootfsPropagation", path, str) or None
    if propagation is not None and propagation not in _PROPAGATIONS:
        raise ConfigError(f"{path}.rootfsPropagation", f"unknown propagation {propagation!r}")
    resources = _opt(obj, "resources", path, dict, {})
    resources_path = f"{path}.resources"
    _unsupported(resources, _RESOURCES_UNSUPPORTED, resources_path)
    return Linux(
        namespaces=namespaces,
        uid_mappings=uid_mappings,
        gid_mappings=gid_mappings,
        devices=tuple(_device(d, where) for where, d in _items(obj, "devices", path)),
        device_rules=tuple(
            rule for rule in (_device_rule(r, where)
                              for where, r in _items(resources, "devices", resources_path))
            if rule.access),
        resources=_resources(resources, resources_path),
        cgroups_path=_opt(obj, "cgroupsPath", path, str) or None,
        rootfs_propagation=propagation,
        masked_paths=tuple(_absolute(p, w) for w, p in _items(obj, "maskedPaths", path)),
        readonly_paths=tuple(_absolute(p, w) for w, p in _items(obj, "readonlyPaths", path)),
        sysctl=_sysctl(obj, path, namespaces),
        seccomp=_seccomp(obj, path),
        time_offsets=_time_offsets(obj, path, namespaces),
        personality=_personality(obj, path),
        mount_label=_opt(obj, "mountLabel", path, str) or None,
        intel_rdt=_opt(obj, "intelRdt", path, dict) or None,
        memory_policy=_memory_policy(obj, path),
        net_devices=_net_devices(obj, path, namespaces),
    )


# ---- linux.memoryPolicy, linux.netDevices -----------------------------------------------------

#: set_mempolicy(2) modes and mode flags (linux/mempolicy.h).
MEMPOLICY_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2,
                   "MPOL_INTERLEAVE": 3, "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5,
                   "MPOL_WEIGHTED_INTERLEAVE": 6}
MEMPOLICY_FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
                   "MPOL_F_STATIC_NODES": 1 << 15}
_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
_SOME_NODES = ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY",
               "MPOL_WEIGHTED_INTERLEAVE")
_MAX_NODE = 1023  # the kernel's largest MAX_NUMNODES (NODES_SHIFT 10)


def _memory_policy(obj: dict, path: str) -> MemoryPolicy | None:
    policy = _opt(obj, "memoryPolicy", path, dict, {})
    if not policy:
        return None
    path = f"{path}.memoryPolicy"
    mode = _req(policy, "mode", path, str)
    if mode not in MEMPOLICY_MODES:
        raise ConfigError(f"{path}.mode", f"unknown memory policy mode {mode!r}")
    text = _opt(policy, "nodes", path, str, "")
    nodes: set[int] = set()
    for part in text.split(",") if text.strip() else ():
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or int(hi or lo) < int(lo):
            raise ConfigError(f"{path}.nodes", f"{text!r} is not a node list like 0-3,7")
        if int(hi or lo) > _MAX_NODE:
            raise ConfigError(f"{path}.nodes", f"node {int(hi or lo)} is above {_MAX_NODE}")
        nodes.update(range(int(lo), int(hi or lo) + 1))
    if mode in _NO_NODES and nodes:
        raise ConfigError(f"{path}.nodes", f"{mode} takes no nodes")
    if mode in _SOME_NODES and not nodes:
        raise ConfigError(f"{path}.nodes", f"{mode} needs at least one node")
    flags = _strs(policy, "flags", path)
    for i, flag in enumerate(flags):
        if flag not in MEMPOLICY_FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", f"unknown memory policy flag {flag!r}")
    if "MPOL_F_STATIC_NODES" in flags and "MPOL_F_RELATIVE_NODES" in flags:
        raise ConfigError(f"{path}.flags", "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES "
                                           "exclude each other")
    return MemoryPolicy(mode=mode, nodes=tuple(sorted(nodes)), flags=flags)


def _valid_ifname(name: str) -> bool:
    """The kernel's dev_valid_name: 1-15 bytes, not . or .., no slash, colon or space."""
    return (0 < len(name.encode("utf-8", "surrogateescape")) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() for c in name))


def _net_devices(obj: dict, path: str, namespaces) -> tuple[NetDevice, ...]:
    devices = _opt(obj, "netDevices", path, dict, {})
    if not devices:
        return ()
    path = f"{path}.netDevices"
    netns = next((ns for ns in namespaces if ns.type == "network"), None)
    if not _private_netns(netns):
        # the devices would stay in (or leave for) the runtime's own namespace
        raise ConfigError(path, "moving network devices needs the container's own network "
                                "namespace (a new one, or one joined by path that is not the "
                                "runtime's)")
    found: list[NetDevice] = []
    names: dict[str, str] = {}
    for host_name, value in devices.items():
        where = f"{path}[{json.dumps(host_name)}]"
        if not _valid_ifname(_check(host_name, where, str)):
            raise ConfigError(where, f"{host_name!r} is not a network device name")
        if host_name == "lo":
            raise ConfigError(where, "the loopback device cannot leave its namespace")
        _check(value, where, dict)
        name = _opt(value, "name", where, str) or host_name
        if not _valid_ifname(name):
            raise ConfigError(f"{where}.name", f"{name!r} is not a network device name "
                                               f"(1-15 bytes, no '/', ':' or spaces)")
        if name in names:
            raise ConfigError(f"{where}.name", f"{name} is also the name of "
                                               f"{path}[{json.dumps(names[name])}]")
        names[name] = host_name
        found.append(NetDevice(host_name=host_name, name=name))
    return tuple(found)


# ---- linux.timeOffsets, linux.personality -----------------------------------------------------

#: personality(2): the execution domains and flags (linux/personality.h).
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000,
    "SHORT_INODE": 0x1000000, "WHOLE_SECONDS": 0x2000000, "STICKY_TIMEOUTS": 0x4000000,
    "ADDR_LIMIT_3GB": 0x8000000,
}
TIME_CLOCKS = ("monotonic", "boottime")  # the clocks a time namespace offsets


def _time_offsets(obj: dict, path: str, namespaces) -> dict[str, TimeOffset]:
    offsets = _opt(obj, "timeOffsets", path, dict, {})
    if not offsets:
        return {}
    path = f"{path}.timeOffsets"
    time_ns = next((ns for ns in namespaces if ns.type == "time"), None)
    if time_ns is None:
        raise ConfigError(path, "time offsets need a new time namespace "
                                "(linux.namespaces has no \"time\" entry)")
    if time_ns.path is not None:
        raise ConfigError(path, "time offsets cannot be set when joining an existing time "
                                "namespace")
    found = {}
    for clock, value in offsets.items():
        where = f"{path}.{clock}"
        if clock not in TIME_CLOCKS:
            raise ConfigError(where, f"unknown clock {clock!r} (a time namespace offsets "
                                     f"monotonic and boottime)")
        _check(value, where, dict)
        found[clock] = TimeOffset(secs=_int(value, "secs", where, -(1 << 63), _I64_MAX) or 0,
                                  nanosecs=_int(value, "nanosecs", where, 0, 999_999_999) or 0)
    return found


def _personality(obj: dict, path: str) -> Personality | None:
    value = _opt(obj, "personality", path, dict, {})
    if not value:
        return None
    path = f"{path}.personality"
    domain = _req(value, "domain", path, str)
    if domain not in PERSONALITY_DOMAINS:
        raise ConfigError(f"{path}.domain", f"unknown execution domain {domain!r} "
                                            f"(LINUX or LINUX32)")
    flags = _strs(value, "flags", path)
    for i, flag in enumerate(flags):
        if flag not in PERSONALITY_FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", f"unknown personality flag {flag!r}")
    return Personality(domain=domain, flags=flags)


# ---- linux.sysctl -----------------------------------------------------------------------------

#: The ipc namespace's sysctls besides fs.mqueue.* (runc's validator).
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"})


def sysctl_path(key: str) -> str:
    """The file under /proc/sys: dots are separators unless the key uses slashes (which
    lets interface names with dots, like eth0.100, be named)."""
    return key if "/" in key else key.replace(".", "/")


def _sysctl(obj: dict, path: str, namespaces: tuple[Namespace, ...]) -> dict[str, str]:
    sysctl = _opt(obj, "sysctl", path, dict, {})
    kinds = {ns.type: ns for ns in namespaces}
    for key, value in sysctl.items():
        where = f"{path}.sysctl[{json.dumps(key)}]"
        _check(value, where, str)
        _check(key, where, str)
        parts = sysctl_path(key).split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ConfigError(where, f"{key!r} is not a sysctl name")
        name = ".".join(parts)  # the dotted form, for the rules below
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if "ipc" not in kinds:
                raise ConfigError(where, f"sysctl {key!r} is not allowed in the host's ipc "
                                         f"namespace")
            continue
        if name.startswith("net."):
            if not _private_netns(kinds.get("network")):
                raise ConfigError(where, f"sysctl {key!r} is not allowed in the host's "
                                         f"network namespace")
            continue
        if "uts" in kinds and name == "kernel.domainname":
            continue
        if "uts" in kinds and name == "kernel.hostname":
            raise ConfigError(where, f"sysctl {key!r} is not allowed as it conflicts with "
                                     f"the OCI \"hostname\" field")
        raise ConfigError(where, f"sysctl {key!r} is not in a separate kernel namespace")
    return dict(sysctl)


def _private_netns(ns: Namespace | None) -> bool:
    """A new network namespace, or a joined one that is not the host's (as runc checks)."""
    if ns is None:
        return False
    if ns.path is None:
        return True
    try:
        theirs, ours = os.stat(ns.path), os.stat("/proc/self/ns/net")
    except (OSError, ValueError):
        return True  # joining it fails later with the reason
    return (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino)


# ---- linux.seccomp ----------------------------------------------------------------------------

SECCOMP_ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})
SECCOMP_OPERATORS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})
#: seccomp(2) SECCOMP_SET_MODE_FILTER flags corral can pass (value = the kernel's bit).
SECCOMP_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
SECCOMP_ARCHES = frozenset({
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
})


def _seccomp_action(obj: dict, key: str, path: str) -> str:
    action = _req(obj, key, path, str)
    if action not in SECCOMP_ACTIONS:
        raise ConfigError(_join(path, key), f"unknown seccomp action {action!r}")
    return action


#: Syscalls no SCMP_ACT_NOTIFY rule may take, and why: ``sendmsg`` hands the agent its notify
#: fd after the filter is loaded (executor.c, the SECCOMP step), so no one could answer it;
#: ``write`` is refused as runc refuses it (the runtime's own error reports go through it).
SECCOMP_NOTIFY_REFUSED = {
    "sendmsg": "the runtime calls it to hand the listener its fd, before anyone can answer",
    "write": "the runtime writes its own errors with it (runc refuses it too)",
}


def _seccomp(obj: dict, path: str) -> Seccomp | None:
    seccomp = _opt(obj, "seccomp", path, dict, {})
    if not seccomp:
        return None
    path = f"{path}.seccomp"
    for where, arch in _items(seccomp, "architectures", path):
        if _check(arch, where, str) not in SECCOMP_ARCHES:
            raise ConfigError(where, f"unknown seccomp architecture {arch!r}")
    for where, flag in _items(seccomp, "flags", path):
        if _check(flag, where, str) not in SECCOMP_FLAGS:
            raise ConfigError(where, f"unknown seccomp flag {flag!r}")
    syscalls = []
    for where, item in _items(seccomp, "syscalls", path):
        _check(item, where, dict)
        names = _strs(item, "names", where)
        if not names:
            raise ConfigError(f"{where}.names", "is required and must name a syscall")
        args = []
        for arg_where, arg in _items(item, "args", where):
            _check(arg, arg_where, dict)
            op = _req(arg, "op", arg_where, str)
            if op not in SECCOMP_OPERATORS:
                raise ConfigError(f"{arg_where}.op", f"unknown seccomp operator {op!r}")
            args.append(SeccompArg(
                index=_int(arg, "index", arg_where, 0, 5, required=True),
                value=_int(arg, "value", arg_where, 0, _U64, required=True),
                value_two=_int(arg, "valueTwo", arg_where, 0, _U64) or 0, op=op))
        action = _seccomp_action(item, "action", where)
        if action == "SCMP_ACT_NOTIFY":
            for name in names:
                if name in SECCOMP_NOTIFY_REFUSED:
                    raise ConfigError(f"{where}.names", f"SCMP_ACT_NOTIFY cannot apply to "
                                      f"{name}: {SECCOMP_NOTIFY_REFUSED[name]}")
        syscalls.append(SeccompSyscall(
            names=names, action=action,
            errno_ret=_int(item, "errnoRet", where, 0, 0xFFFF), args=tuple(args)))
    default_action = _seccomp_action(seccomp, "defaultAction", path)
    if default_action == "SCMP_ACT_NOTIFY":
        # runc refuses it too: the runtime's own syscalls after the load would wait on a
        # listener that does not have the notify fd yet.
        raise ConfigError(f"{path}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default "
                                                   "action (only a rule's)")
    listener_path = _opt(seccomp, "listenerPath", path, str, None)
    if listener_path == "":
        raise ConfigError(f"{path}.listenerPath", "must not be empty")
    result = Seccomp(
        default_action=default_action,
        default_errno_ret=_int(seccomp, "defaultErrnoRet", path, 0, 0xFFFF),
        architectures=_strs(seccomp, "architectures", path),
        flags=_strs(seccomp, "flags", path),
        syscalls=tuple(syscalls),
        listener_path=listener_path,
        listener_metadata=_opt(seccomp, "listenerMetadata", path, str, None),
    )
    if result.notifies and listener_path is None:
        first = next(i for i, r in enumerate(syscalls) if r.action == "SCMP_ACT_NOTIFY")
        raise ConfigError(f"{path}.listenerPath", f"is required by SCMP_ACT_NOTIFY "
                                                  f"({path}.syscalls[{first}].action)")
    return result


def _namespaces(obj: dict, path: str) -> tuple[Namespace, ...]:
    seen: dict[str, Namespace] = {}
    for where, item in _items(obj, "namespaces", path):
        kind = _req(_check(item, where, dict), "type", where, str)
        if kind not in NAMESPACE_TYPES:
            raise ConfigError(f"{where}.type", f"unknown namespace type {kind!r}")
        if kind in seen:
            raise ConfigError(f"{where}.type", f"duplicate namespace type {kind}")
        ns_path = _opt(item, "path", where, str) or None  # "" is no path, as in Go
        if ns_path is not None:
            _absolute(ns_path, f"{where}.path")
        seen[kind] = Namespace(kind, ns_path)
    return tuple(seen.values())


def _mappings(obj: dict, key: str, path: str) -> tuple[IdMapping, ...]:
    """An id map; the kernel refuses ranges that overlap on either side: named here."""
    found = tuple(_mapping(m, where) for where, m in _items(obj, key, path))
    for i, a in enumerate(found):
        for j in range(i):
            b = found[j]
            for side, lo_a, lo_b in (("container", a.container_id, b.container_id),
                                     ("host", a.host_id, b.host_id)):
                if lo_a < lo_b + b.size and lo_b < lo_a + a.size:
                    raise ConfigError(f"{_join(path, key)}[{i}]",
                                      f"{side} ids {lo_a}-{lo_a + a.size - 1} overlap "
                                      f"{_join(path, key)}[{j}] ({lo_b}-{lo_b + b.size - 1})")
    return found


def _mapping(obj: object, path: str) -> IdMapping:
    _check(obj, path, dict)
    container_id = _int(obj, "containerID", path, 0, _U32, required=True)
    host_id = _int(obj, "hostID", path, 0, _U32, required=True)
    size = _int(obj, "size", path, 1, _U32, required=True)
    if max(container_id, host_id) + size - 1 > _U32:
        raise ConfigError(f"{path}.size", "range runs past the last 32-bit id")
    return IdMapping(container_id=container_id, host_id=host_id, size=size)


def _check_user_namespace(
    namespaces: tuple[Namespace, ...],
    uid_mappings: tuple[IdMapping, ...],
    gid_mappings: tuple[IdMapping, ...],
    path: str,
) -> None:
    """A new user namespace is useless (everyone is nobody) without both maps; maps without
    one would be silently ignored by the kernel path, so both are refused."""
    user = next((ns for ns in namespaces if ns.type == "user"), None)
    for key, mappings in (("uidMappings", uid_mappings), ("gidMappings", gid_mappings)):
        if user is None and mappings:
            raise ConfigError(f"{path}.{key}", "id mappings given without a user namespace")
        if user is not None and user.path is None and not mappings:
            raise ConfigError(f"{path}.{key}", "a new user namespace needs at least one mapping")


def _device(obj: object, path: str) -> Device:
    _check(obj, path, dict)
    kind = _req(obj, "type", path, str)
    if kind not in ("c", "b", "u", "p"):
        raise ConfigError(f"{path}.type", f"unknown device type {kind!r} (want c, b, u or p)")
    numbered = kind != "p"  # a fifo has no device number
    return Device(
        path=_absolute(_req(obj, "path", path, str), f"{path}.path"),
        type="c" if kind == "u" else kind,  # "u" (unbuffered) is a character device
        major=_int(obj, "major", path, 0, _U32, required=numbered) or 0,
        minor=_int(obj, "minor", path, 0, _U32, required=numbered) or 0,
        file_mode=_int(obj, "fileMode", path, 0, 0o7777),
        uid=_int(obj, "uid", path, 0, _U32),
        gid=_int(obj, "gid", path, 0, _U32),
    )


def _device_rule(obj: object, path: str) -> DeviceRule:
    _check(obj, path, dict)
    kind = _opt(obj, "type", path, str) or "a"
    if kind not in ("a", "c", "b"):
        raise ConfigError(f"{path}.type", f"unknown device rule type {kind!r} (want a, c or b)")
    access = _opt(obj, "access", path, str, "rwm")
    if not access:
        raise ConfigError(f"{path}.access", "must not be empty (r, w and m combined)")
    # letters but r, w and m are ignored, as runc ignores them: a rule left with none
    # grants or denies nothing (dropped from Linux.device_rules)
    return DeviceRule(
        allow=_req(obj, "allow", path, bool),
        type=kind,
        major=_rule_number(obj, "major", path),
        minor=_rule_number(obj, "minor", path),
        access="".join(c for c in "rwm" if c in access),
    )


def _rule_number(obj: dict, key: str, path: str) -> int | None:
    """-1 is the spec's wildcard; None is ours."""
    number = _int(obj, key, path, -1, _U32)
    return None if number == -1 else number


# ---- linux.resources (besides devices) -------------------------------------------------------

_I64_MAX = (1 << 63) - 1


def _limit(obj: dict, key: str, path: str) -> int | None:
    """A byte count where -1 is unlimited and 0 unset (runc's reading)."""
    return _int(obj, key, path, -1, _I64_MAX)


KERNEL_MEMORY_IGNORED = ("kernel memory settings (memory.kernel, memory.kernelTCP) are "
                         "ignored: deprecated, and no longer enforced by the kernel")


def _resources(obj: dict, path: str) -> Resources:
    memory = _opt(obj, "memory", path, dict)
    warnings = ()
    if memory is not None:
        for key in ("kernel", "kernelTCP"):  # runc 1.1 and crun accept and ignore them
            _limit(memory, key, f"{path}.memory")
        if memory.get("kernel") or memory.get("kernelTCP"):
            warnings = (f"{path}: {KERNEL_MEMORY_IGNORED}",)
        memory = {k: v for k, v in memory.items() if k not in ("kernel", "kernelTCP")} or None
    cpu = _opt(obj, "cpu", path, dict)
    pids = _opt(obj, "pids", path, dict)
    block_io = _opt(obj, "blockIO", path, dict)
    network = _opt(obj, "network", path, dict)
    return Resources(
        memory=None if memory is None else _memory(memory, f"{path}.memory"),
        cpu=None if cpu is None else _cpu(cpu, f"{path}.cpu"),
        pids_limit=None if pids is None else _int(pids, "limit", f"{path}.pids", -(1 << 63),
                                                  _I64_MAX, required=True),
        block_io=None if block_io is None else _block_io(block_io, f"{path}.blockIO"),
        hugepage_limits=tuple(_hugepage(item, where)
                              for where, item in _items(obj, "hugepageLimits", path)),
        network=None if network is None else _network(network, f"{path}.network"),
        unified=_unified(obj, path),
        warnings=warnings,
    )


def _memory(obj: dict, path: str) -> MemoryResources:
    limit = _limit(obj, "limit", path)
    swap = _limit(obj, "swap", path)
    if limit and swap and limit > 0 and 0 < swap < limit:
        raise ConfigError(f"{path}.swap", f"memory+swap limit {swap} is below the memory "
                                          f"limit {limit}")
    return MemoryResources(
        limit=limit,
        reservation=_limit(obj, "reservation", path),
        swap=swap,
        swappiness=_int(obj, "swappiness", path, 0, 100),
        disable_oom_killer=_opt(obj, "disableOOMKiller", path, bool),
    )


def _cpu_list(obj: dict, key: str, path: str) -> str | None:
    value = _opt(obj, key, path, str) or None
    if value is not None:
        parts = value.split(",")
        for part in parts:
            lo, _, hi = part.strip().partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()) or (_ and not hi):
                raise ConfigError(_join(path, key), f"{value!r} is not a list like 0-3,5")
    return value


def _cpu(obj: dict, path: str) -> CpuResources:
    shares = _int(obj, "shares", path, 0, _U64)
    if shares and not 2 <= shares <= 262144:
        raise ConfigError(f"{path}.shares", f"must be between 2 and 262144, got {shares}")
    period = _int(obj, "period", path, 0, _U64)
    if period and not 1000 <= period <= 1000000:
        raise ConfigError(f"{path}.period", f"must be between 1000 and 1000000 (µs), "
                                            f"got {period}")
    quota = _int(obj, "quota", path, -(1 << 63), _I64_MAX)
    if quota is not None and 0 < quota < 1000:
        raise ConfigError(f"{path}.quota", f"must be at least 1000 (µs) or -1, got {quota}")
    return CpuResources(
        shares=shares,
        quota=quota,
        burst=_int(obj, "burst", path, 0, _U64),
        period=period,
        realtime_runtime=_int(obj, "realtimeRuntime", path, -1, _I64_MAX),
        realtime_period=_int(obj, "realtimePeriod", path, 0, _U64),
        cpus=_cpu_list(obj, "cpus", path),
        mems=_cpu_list(obj, "mems", path),
        idle=_int(obj, "idle", path, 0, 1),
    )


def _weight(obj: dict, key: str, path: str) -> int | None:
    value = _int(obj, key, path, 0, 1000)
    if value and value < 10:
        raise ConfigError(_join(path, key), f"must be between 10 and 1000, got {value}")
    return value or None


def _block_io(obj: dict, path: str) -> BlockIOResources:
    devices = []
    for where, item in _items(obj, "weightDevice", path):
        _check(item, where, dict)
        devices.append(WeightDevice(
            major=_int(item, "major", where, 0, _U32, required=True),
            minor=_int(item, "minor", where, 0, _U32, required=True),
            weight=_weight(item, "weight", where),
            leaf_weight=_weight(item, "leafWeight", where)))
    throttles = {}
    for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                "throttleWriteIOPSDevice"):
        found = []
        for where, item in _items(obj, key, path):
            _check(item, where, dict)
            found.append(ThrottleDevice(
                major=_int(item, "major", where, 0, _U32, required=True),
                minor=_int(item, "minor", where, 0, _U32, required=True),
                rate=_int(item, "rate", where, 0, _U64, required=True)))
        throttles[key] = tuple(found)
    return BlockIOResources(
        weight=_weight(obj, "weight", path),
        leaf_weight=_weight(obj, "leafWeight", path),
        weight_device=tuple(devices),
        throttle_read_bps_device=throttles["throttleReadBpsDevice"],
        throttle_write_bps_device=throttles["throttleWriteBpsDevice"],
        throttle_read_iops_device=throttles["throttleReadIOPSDevice"],
        throttle_write_iops_device=throttles["throttleWriteIOPSDevice"],
    )


def _hugepage(obj: object, path: str) -> HugepageLimit:
    _check(obj, path, dict)
    size = _req(obj, "pageSize", path, str)
    digits = size.rstrip("KMGB")
    if not digits.isdigit() or size[len(digits):] not in ("KB", "MB", "GB"):
        raise ConfigError(f"{path}.pageSize", f"{size!r} is not a page size like 2MB or 1GB")
    return HugepageLimit(page_size=size, limit=_int(obj, "limit", path, 0, _U64, required=True))


def _network(obj: dict, path: str) -> NetworkResources:
    priorities = []
    for where, item in _items(obj, "priorities", path):
        _check(item, where, dict)
        name = _req(item, "name", where, str)
        if not name or "/" in name or " " in name or "\n" in name:
            raise ConfigError(f"{where}.name", f"{name!r} is not an interface name")
        priorities.append(NetworkPriority(
            name=name, priority=_int(item, "priority", where, 0, _U32, required=True)))
    return NetworkResources(class_id=_int(obj, "classID", path, 0, _U32),
                            priorities=tuple(priorities))


def _unified(obj: dict, path: str) -> dict[str, str]:
    unified = _opt(obj, "unified", path, dict, {})
    for key, value in unified.items():
        where = f"{path}.unified[{json.dumps(key)}]"
        controller, dot, name = key.partition(".")
        if "/" in key or not dot or not controller or not name or "\0" in key:
            raise ConfigError(where, "must name a file like CONTROLLER.PARAMETER (no slashes)")
        _check(value, where, str)
    return dict(unified)


def load_bundle(bundle: str) -> tuple[Config, dict]:
    """Read and validate ``<bundle>/config.json`` and check its rootfs: every problem a user
    can fix is reported here, before anything is created."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    data = _read_bytes(path)
    # A supervisor reads configs that differ in their cgroup path alone (an engine's bundle
    # per container): one parse per content but that path, which is put in afterwards.
    key, cgroups_path = _without_cgroups_path(data)
    known = _loaded.get(key)
    if known is None:
        raw = _decode_json(path, data)
        config = parse_config(raw)
        # The string found must be linux.cgroupsPath (not, say, an annotation's key).
        if key is not data and config.linux.cgroups_path != cgroups_path:
            key = data
        known = (config, raw)
        if len(_loaded) >= 64:
            _loaded.clear()
        _loaded[key] = known
    config, raw = known
    if key is not data and config.linux.cgroups_path != cgroups_path:
        from corral.record import replace

        config = replace(config, linux=replace(config.linux, cgroups_path=cgroups_path))
        raw = {**raw, "linux": {**raw["linux"], "cgroupsPath": cgroups_path}}
    rootfs = os.path.normpath(os.path.join(bundle, config.root_path))
    if not os.path.isdir(rootfs):
        problem = "is not a directory" if os.path.exists(rootfs) else "does not exist"
        raise ConfigError("root.path", f"rootfs {rootfs} {problem}")
    return config, raw


_loaded: dict[bytes, tuple[Config, dict]] = {}


def _without_cgroups_path(data: bytes) -> tuple[bytes, str | None]:
    """(the config's bytes without its cgroupsPath's value, that value) when the key is
    there once and its value a plain string; else (the bytes, None)."""
    at = data.find(b'"cgroupsPath"')
    if at < 0 or data.find(b'"cgroupsPath"', at + 1) >= 0:
        return data, None
    i = at + len(b'"cgroupsPath"')
    n = len(data)
    while i < n and data[i] in b" \t\r\n":
        i += 1
    if i >= n or data[i] != ord(":"):
        return data, None
    i += 1
    while i < n and data[i] in b" \t\r\n":
        i += 1
    if i >= n or data[i] != ord('"'):
        return data, None
    end = data.find(b'"', i + 1)
    if end < 0 or b"\\" in data[i + 1:end]:
        return data, None
    try:
        value = data[i + 1:end].decode()
    except UnicodeDecodeError:
        return data, None
    return data[:i + 1] + data[end:], value


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError("config.json", f"{path} does not exist") from None
    except OSError as err:
        raise ConfigError("config.json", f"cannot read {path}: {err.strerror}") from None


def _decode_json(path: str, data: bytes) -> object:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("config.json", f"invalid UTF-8 at byte {err.start}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(
            "config.json", f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except (ValueError, RecursionError) as err:  # over-long integers, absurd nesting
        raise ConfigError("config.json", f"invalid JSON: {err}") from None


def _no_constant(name: str) -> object:
    """Python's json accepts NaN and Infinity; JSON (and Go) do not."""
    raise ConfigError("config.json", f"invalid JSON: {name} is not a JSON value")
