"""`corral exec`: a new process in an existing container, through the creation engine.

The process is built as runc builds it: ``--process FILE`` (an OCI process JSON) as it is, or
the container's own ``config.json`` process overridden by the flags.  It is compiled inside a
copy of the container's config (so the same parser checks it, naming the field, and the
container's seccomp, apparmor, rlimits apply) into an exec plan: join every namespace of the
init by ``/proc/<pid>/ns/*``, no rootfs, no exec fifo.  The parent side only joins the
process to the container's cgroup.
"""

from __future__ import annotations

import os

from corral import jsonlite as json
from corral.jsonlite import read_object
from corral.errors import ConfigError, ContainerStateError, CorralError, NotSupportedError
from corral.oci.config import parse_config
from corral.runtime.containers import CREATED, PAUSED, RUNNING, Container
from corral.runtime.creation import ContainerState
from corral.runtime.protocol import Plan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from corral.runtime.tty_relay import ConsoleReceiver

# /proc/<pid>/ns/<name> of each linux.namespaces type
_PROC_NS = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
            "user": "user", "cgroup": "cgroup", "time": "time"}


class PreparedExec:
    """What the blocking driver needs: the plan, the host-side actions, the undo.

    ``cgroup_dirs``: the cgroup directories the process joins (the container's, or its
    ``--cgroup`` sub-cgroups).  ``late_cgroup`` (exec --ignore-paused into a frozen cgroup):
    the process joins them only in ``release``, after its last message and before it execs,
    so that its setup completes and it freezes before its first instruction.  ``console``:
    our own console socket for a foreground terminal; ``release`` takes the master from
    it."""

    def __init__(self, container: Container, plan, slots: dict, cgroup_dirs: list[str],
                 late_cgroup: bool = False, console: ConsoleReceiver | None = None) -> None:
        self.container = container
        self.cgroup_dirs = cgroup_dirs
        self.plan = plan
        self.slots = slots
        self.late_cgroup = late_cgroup
        self.console = console
        self.master: int | None = None

    @property
    def id(self) -> str:
        return self.container.id

    @property
    def info(self):
        return self.plan.info

    def plan_message(self) -> Plan:
        return Plan(self.plan.template.fill(self.slots))

    def container_state(self) -> ContainerState:
        record = self.container.record
        return ContainerState(record["ociVersion"], record["id"], record["bundle"],
                              record.get("annotations") or {})

    def carry_out(self, action) -> None:
        from corral.runtime import creation as c

        if not isinstance(action, c.JoinCgroup):
            raise TypeError(f"not an exec action: {action!r}")
        if not self.late_cgroup:
            self._join_cgroup(action.pid)

    def _join_cgroup(self, pid: int) -> None:
        if self.cgroup_dirs:
            from corral.cgroups.files import write
            from corral.errors import CgroupError
            from corral.procfs import is_alive

            try:
                for path in self.cgroup_dirs:
                    write(path + "/cgroup.procs", str(pid))
            except CgroupError:
                if is_alive(pid, None):
                    raise
                # The process already failed and exited: its Error message follows.

    def release(self, pid: int) -> None:
        """The driver's last step before the process may exec (``before_release``)."""
        if self.late_cgroup:
            self._join_cgroup(pid)
        if self.console is not None:
            from corral.runtime.tty_relay import copy_window_size

            self.master = self.console.receive()
            copy_window_size(self.master)  # before it runs: it starts with our size

    def close(self) -> None:
        """Our console socket (the master, once received, is the caller's)."""
        if self.console is not None:
            self.console.close()

    def undo_after_failure(self) -> None:
        """Nothing on the host was made for an exec (the driver kills the processes); a
        master already received is closed."""
        if self.master is not None:
            os.close(self.master)
            self.master = None


def _parse_user(text: str) -> tuple[int, int | None]:
    """runc's UID[:GID]: numbers only (runc resolves no names either: the container's
    /etc/passwd is not the host's, and reading it is the caller's business)."""
    parts = text.split(":")
    if len(parts) > 2:
        raise ConfigError("--user", f"{text!r}: invalid format; valid format is 'UID[:GID]'")
    ids = []
    for part in parts:
        if not part.isdigit() or int(part) > 0xFFFFFFFF:
            raise ConfigError("--user", f"{text!r}: UID[:GID] must be numeric ids "
                                        f"(user and group names are not resolved)")
        ids.append(int(part))
    return ids[0], ids[1] if len(ids) > 1 else None


def build_process(args, base: dict) -> dict:
    """The process JSON of the exec: ``--process`` alone, or ``base`` (the container's
    config process) with runc's overrides.  ``process_json``: the supervisor API's inline
    process, as ``--process`` would give it."""
    if getattr(args, "process_json", None) is not None:
        return args.process_json
    if args.process:
        return read_object(args.process, "--process")
    if not args.command:
        raise ConfigError("", "exec: the command is missing (exec ID COMMAND [ARGS...], "
                              "or --process FILE)")
    proc = json.loads(json.dumps(base))  # a deep copy
    proc["args"] = list(args.command)
    proc["terminal"] = bool(args.tty)
    proc["env"] = list(proc.get("env") or []) + list(args.env)
    if args.cwd:
        proc["cwd"] = args.cwd
    user = dict(proc.get("user") or {"uid": 0, "gid": 0})
    if args.user:
        uid, gid = _parse_user(args.user)
        user["uid"] = uid
        if gid is not None:
            user["gid"] = gid
    gids = []
    for i, raw in enumerate(args.additional_gids):
        if not raw.isdigit() or int(raw) > 0xFFFFFFFF:
            raise ConfigError("--additional-gids", f"{raw!r} is not a group id")
        gids.append(int(raw))
    if gids:
        user["additionalGids"] = list(user.get("additionalGids") or []) + gids
    proc["user"] = user
    if args.cap:
        from corral.oci.capabilities import cap_number

        caps = dict(proc.get("capabilities") or {})
        for name in args.cap:
            try:
                cap_number(name)
            except ValueError as exc:
                raise ConfigError("--cap", str(exc)) from None
            for key in ("bounding", "effective", "permitted"):
                caps[key] = list(caps.get(key) or []) + [name]
            # ambient needs the capability inheritable too: only when the config has some
            if caps.get("inheritable"):
                caps["ambient"] = list(caps.get("ambient") or []) + [name]
        proc["capabilities"] = caps
    if args.no_new_privs:
        proc["noNewPrivileges"] = True
    return proc


def prepare_exec(args) -> PreparedExec:
    container = Container.load(args.root, args.id)
    status = container.status()
    if status == PAUSED and not args.ignore_paused:  # runc's messages
        raise ContainerStateError("cannot exec in a paused container (use --ignore-paused to "
                                  "override)")
    if status not in (CREATED, RUNNING, PAUSED):
        raise ContainerStateError("cannot exec in a stopped container")
    if args.preserve_fds < 0:
        raise ConfigError("--preserve-fds", "must not be negative")
    bundle = container.record["bundle"]
    raw = container.record.get("config")  # a supervisor's inline config: no bundle on disk
    if raw is None:
        from corral.oci.config import load_bundle

        config, raw = load_bundle(bundle)
    raw = dict(raw)
    raw["process"] = build_process(args, raw.get("process") or {})
    config = parse_config(raw)
    if config.process.terminal and not args.console_socket and args.detach:
        raise CorralError("cannot allocate tty if runc will detach without setting "
                          "console socket")
    if args.console_socket and not config.process.terminal:
        raise CorralError("cannot use console socket if runc will not allocate tty")
    pid = container.pid
    from corral.plan.compiler import NS_FLAGS, PlanOptions, compile_plan, process_env

    join = []
    for ns in config.linux.namespaces:
        name = _PROC_NS.get(ns.type)
        if name is None:
            raise NotSupportedError(f"linux.namespaces: {ns.type} namespace")
        join.append((NS_FLAGS[ns.type], f"/proc/{pid}/ns/{name}"))
    console = None
    socket_path = os.path.abspath(args.console_socket) if args.console_socket else None
    if config.process.terminal and socket_path is None:
        # In the foreground without a socket: we relay the terminal (tty_relay).
        from corral.runtime.tty_relay import ConsoleReceiver

        console = ConsoleReceiver()
        socket_path = console.path
    # the launcher joins the process to the container's cgroup, but into a frozen one it
    # joins late, from here (PreparedExec.release)
    dirs = exec_cgroup_dirs(container, args.cgroup)
    procs = [path + "/cgroup.procs" for path in dirs] if status != PAUSED else []
    plan = compile_plan(config, PlanOptions(
        bundle=bundle, exec=True, exec_join=tuple(join), preserve_fds=args.preserve_fds,
        console=socket_path is not None, keyring=True, cgroup_procs=len(procs)))
    # HOME from the container's own passwd, as the host reaches it through the init
    env = process_env(config, (), f"/proc/{pid}/root/etc/passwd")
    slots = {"fifo": "", "console": socket_path or "", "keyring": f"_ses.{container.id}",
             "rootfs": f"/proc/{pid}/root", "env": env, "hostname": config.hostname or "",
             **{f"procs{k}": path for k, path in enumerate(procs)}}
    return PreparedExec(container, plan, slots, dirs, late_cgroup=status == PAUSED,
                        console=console)


def sub_cgroup_paths(args: tuple[str, ...] | list[str]) -> dict[str, str]:
    """runc 1.1's ``--cgroup`` arguments: one ``PATH`` (every hierarchy; the only form on
    cgroup v2), or ``CONTROLLER[,CONTROLLER...]:PATH`` ones (cgroup v1).  Controller ""
    stands for every hierarchy."""
    paths: dict[str, str] = {}
    for arg in args:
        parts = arg.split(":")
        if len(parts) > 2:
            raise ConfigError("--cgroup", f"invalid argument {arg!r}")
        if len(parts) == 1:
            if len(args) != 1:
                raise ConfigError("--cgroup", f"invalid argument {arg!r} (missing "
                                              f"<controller>: prefix)")
            paths[""] = arg
            continue
        for controller in parts[0].split(","):
            if controller in paths:
                raise ConfigError("--cgroup", f"controller {controller!r} given more than "
                                              f"once")
            paths[controller] = parts[1]
    return paths


def exec_cgroup_dirs(container: Container, args: tuple[str, ...] | list[str]) -> list[str]:
    """The cgroup directories an exec'd process joins: the container's, or, with
    ``--cgroup``, existing sub-cgroups of them (as runc, none is made)."""
    if not container.has_cgroup():
        if args:
            raise ConfigError("--cgroup", "the container has no cgroup (rootless without a "
                                          "delegated cgroup)")
        return []
    import posixpath

    from corral.cgroups import Cgroup

    dirs = dict(Cgroup.from_json(container.record["cgroup"]).paths)
    subs = sub_cgroup_paths(args)
    every = subs.pop("", None)
    targets = dict.fromkeys(dirs, every) if every is not None else {}
    for controller, sub in subs.items():
        keys = [k for k in dirs if controller in k.split(",")]
        if not keys:
            raise ConfigError("--cgroup", f"unknown controller {controller!r} (the "
                                          f"container's hierarchies: {', '.join(dirs)})")
        for key in keys:
            targets[key] = sub
    for key, sub in targets.items():
        base = dirs[key]
        path = posixpath.normpath(f"{base}/{sub}")
        if path != base and not path.startswith(base + "/"):
            raise ConfigError("--cgroup", f"{sub} is not a sub cgroup path")
        if not os.path.isdir(path):
            raise ConfigError("--cgroup", f"{path}: no such cgroup (a sub-cgroup must exist)")
        dirs[key] = path
    return list(dirs.values())
