"""The child side of creation, from the forked process to exec, as one sequence of steps.

    child_main:  read Bootstrap -> parse config -> oom score, initial cpus, bundle as cwd,
                 fifo handle (the host's view) -> idmapped trees (host privileges) -> C stage (namespaces, clone into the pid namespace,
                 setsid, root of the user namespace)
    child_main:  ... -> seccomp: the profile compiled to BPF (libseccomp, from the host's
                 filesystem) before anything else; with SCMP_ACT_NOTIFY rules, connected to
                 the agent at listenerPath (the host's view, after the fifo handle)
    init:        loopback -> hostname -> rootfs up to the pivot -> [HooksDue ... HooksDone
                 -> createContainer hooks] -> pivot -> sysctl -> read-only and masked paths
                 -> rlimits -> cwd -> find the executable -> Ready ... wait for Run ... -> umask
                 -> scheduler, ioPriority, final cpus, LSM labels, memory policy, personality
                 -> C finalize (cgroupns, keyring, user, caps, no_new_privs, close fds,
                 Waiting, exec fifo, signal defaults, startContainer hooks, seccomp, exec)

Any failure is sent to the parent as one ``Error`` message and the process exits.
"""

from __future__ import annotations

import os
import resource

from corral import nsenter
from corral.errors import ChildError, CorralError
from corral.runtime import hooks  # not lazily: after pivot_root the host's files are gone
from corral.runtime import protocol as p

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_main(sync_fd: int) -> None:
    """Entry of the forked child; never returns to the caller's code."""
    try:
        from corral.oci.config import parse_config

        boot = _expect(sync_fd, p.Bootstrap)
        config = parse_config(boot.config)
        seccomp = None
        if config.linux.seccomp is not None:
            from corral.init.seccomp import compile_filter

            seccomp = compile_filter(config.linux.seccomp)
        console = None
        if boot.console_socket:
            from corral.init.terminal import connect_console

            console = connect_console(boot.console_socket)  # the host's view
        if boot.exec:
            _exec_child(sync_fd, boot, config, seccomp, console)
        fifo_fd = _before_namespaces(config, boot)
        listener_fd = -1
        if seccomp is not None and config.linux.seccomp.notifies:
            from corral.init.seccomp import connect_listener

            listener_fd = connect_listener(config.linux.seccomp.listener_path)
        idmapped = {}
        if any(m.idmap for m in config.mounts):
            from corral.init.mounts import open_idmapped_trees

            idmapped = open_idmapped_trees(config.mounts, config.linux)
        nsenter.enter_namespaces(sync_fd, boot.unshare_flags, boot.new_user,
                                 [(t, path) for t, path in boot.join],
                                 time_offsets=_time_offsets(config.linux.time_offsets))
        # only the container's init gets here
        _init(sync_fd, boot, config, fifo_fd, seccomp, idmapped, listener_fd, console)
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
        _report(sync_fd, exc)
    os._exit(1)


def _before_namespaces(config, boot: p.Bootstrap) -> int:
    """What needs the host's view and privileges: after a user namespace, or while
    non-dumpable, /proc/self belongs to the host's root and the host paths may be gone.
    Returns the exec fifo's O_PATH descriptor."""
    if config.process.oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(config.process.oom_score_adj))
        except OSError as exc:  # lowering it needs CAP_SYS_RESOURCE on the host
            raise ChildError(f"process.oomScoreAdj: write /proc/self/oom_score_adj: "
                             f"{exc.strerror.lower()}", exc.errno, "oom") from None
    affinity = config.process.exec_cpu_affinity
    if affinity is not None and affinity.initial is not None:
        _set_affinity(affinity.initial, "process.execCPUAffinity.initial")
    os.chdir(boot.bundle)  # relative bind-mount sources are relative to the bundle
    return os.open(boot.fifo_path, os.O_PATH | os.O_CLOEXEC)


def _time_offsets(offsets) -> str | None:
    """linux.timeOffsets as /proc/self/timens_offsets lines ("boottime SECS NANOSECS")."""
    if not offsets:
        return None
    return "".join(f"{clock} {o.secs} {o.nanosecs}\n" for clock, o in offsets.items())


def _set_affinity(cpus: str, field: str) -> None:
    from corral.oci.config import cpu_set

    try:
        os.sched_setaffinity(0, cpu_set(cpus))
    except OSError as exc:
        raise ChildError(f"{field}: sched_setaffinity({cpus}): {exc.strerror.lower()}",
                         exc.errno, "affinity") from None


def _process_attributes(config) -> None:
    """The process's scheduling, I/O priority, cpus, LSM labels, memory policy and execution
    domain, set just before the C finalize stage (after Run): they are inherited through
    exec and would otherwise slow down (or, for a 32-bit address limit, break) the init's
    own setup."""
    from corral.oci import config as spec

    proc = config.process
    sched = proc.scheduler
    if sched is not None:
        flags = 0
        for name in sched.flags:
            flags |= spec.SCHED_FLAGS[name]
        try:
            nsenter.sched_setattr(spec.SCHED_POLICIES[sched.policy], flags, sched.nice,
                                  sched.priority, sched.runtime, sched.deadline, sched.period)
        except OSError as exc:
            raise ChildError(f"process.scheduler: sched_setattr {sched.policy}: "
                             f"{os.strerror(exc.errno).lower()}", exc.errno, "scheduler") from None
    prio = proc.io_priority
    if prio is not None:
        try:
            nsenter.ioprio_set(spec.IOPRIO_CLASSES[prio.io_class] << 13 | prio.priority)
        except OSError as exc:
            raise ChildError(f"process.ioPriority: ioprio_set {prio.io_class} {prio.priority}: "
                             f"{os.strerror(exc.errno).lower()}", exc.errno, "ioprio") from None
    if proc.exec_cpu_affinity is not None and proc.exec_cpu_affinity.final is not None:
        _set_affinity(proc.exec_cpu_affinity.final, "process.execCPUAffinity.final")
    if proc.apparmor_profile:
        _write_attr(("/proc/thread-self/attr/apparmor/exec", "/proc/thread-self/attr/exec"),
                    f"exec {proc.apparmor_profile}", "process.apparmorProfile")
    if proc.selinux_label:
        _write_attr(("/proc/thread-self/attr/exec",), proc.selinux_label,
                    "process.selinuxLabel")
    if config.linux.memory_policy is not None:
        _set_memory_policy(config.linux.memory_policy)
    persona = config.linux.personality
    if persona is not None:
        value = spec.PERSONALITY_DOMAINS[persona.domain]
        for name in persona.flags:
            value |= spec.PERSONALITY_FLAGS[name]
        try:
            nsenter.personality(value)
        except OSError as exc:
            raise ChildError(f"linux.personality: personality(0x{value:x}): "
                             f"{os.strerror(exc.errno).lower()}", exc.errno,
                             "personality") from None


def _set_memory_policy(policy) -> None:
    """linux.memoryPolicy: set_mempolicy(2) on the init's one thread; the policy is kept
    across execve and inherited by the process's children."""
    from corral.oci.config import MEMPOLICY_FLAGS, MEMPOLICY_MODES

    mode = MEMPOLICY_MODES[policy.mode]
    for flag in policy.flags:
        mode |= MEMPOLICY_FLAGS[flag]
    try:
        nsenter.set_mempolicy(mode, policy.nodes)
    except OSError as exc:
        what = "|".join((policy.mode, *policy.flags))
        nodes = ",".join(map(str, policy.nodes)) or "none"
        raise ChildError(f"linux.memoryPolicy: set_mempolicy({what}, nodes {nodes}): "
                         f"{os.strerror(exc.errno).lower()}", exc.errno, "mempolicy") from None


def _write_attr(candidates: tuple[str, ...], value: str, field: str) -> None:
    """The LSM label of the next exec (the first of the candidate files that exists)."""
    for path in candidates:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ChildError(f"{field}: open {path}: {exc.strerror.lower()}", exc.errno,
                             "lsm") from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise ChildError(f"{field}: write {path}: {exc.strerror.lower()}", exc.errno,
                             "lsm") from None
        finally:
            os.close(fd)
        return
    raise ChildError(f"{field}: none of {', '.join(candidates)} exists", 2, "lsm")


def _init(sync_fd: int, boot: p.Bootstrap, config, fifo_fd: int, seccomp,
          idmapped: dict[int, int], listener_fd: int = -1, console=None) -> None:  # it execs
    from corral.init.rootfs import finalize_rootfs, prepare_rootfs

    proc = config.process
    own_netns = config.linux.namespace("network")
    if own_netns is not None and own_netns.path is None:
        nsenter.loopback_up()
    # Before the rootfs: the createContainer hooks run in the container's namespaces as set up.
    if config.hostname is not None:
        nsenter.sethostname(config.hostname)
    if config.domainname is not None:
        nsenter.setdomainname(config.domainname)

    def create_hooks() -> None:
        p.write_message(sync_fd, p.HooksDue())
        done = _expect(sync_fd, p.HooksDone)
        if config.hooks.create_container:
            # before pivot_root the host's bundle path still leads to the bundle
            hooks.run_hooks("createContainer", config.hooks.create_container,
                            _state(boot, config, "creating", done.pid), boot.bundle)

    prepare_rootfs(config, boot.rootfs, no_pivot=boot.no_pivot,
                   cgroup_mounts=[tuple(m) for m in boot.cgroup_mounts],
                   in_userns=config.linux.namespace("user") is not None,
                   before_pivot=create_hooks if boot.create_hooks else None,
                   idmapped=idmapped)
    _write_sysctls(config.linux.sysctl)  # /proc is the container's; /proc/sys still writable
    finalize_rootfs(config)
    _set_rlimits(proc.rlimits)
    _enter_cwd(proc.cwd)
    _run_process(sync_fd, boot, config, fifo_fd, seccomp, listener_fd, console)


def _exec_child(sync_fd: int, boot: p.Bootstrap, config, seccomp, console) -> None:  # it execs
    """`corral exec`: join every namespace of the container's init (the paths in
    ``boot.join``; after the mount namespace `/` is the container's root), then the same
    process setup and C finalize as the init's, without the rootfs or the exec fifo.
    Nothing is imported once in the container's mount namespace: the host's files are gone."""
    listener_fd = -1
    if seccomp is not None and config.linux.seccomp.notifies:
        from corral.init.seccomp import connect_listener

        listener_fd = connect_listener(config.linux.seccomp.listener_path)
    nsenter.enter_namespaces(sync_fd, 0, False, [(t, path) for t, path in boot.join])
    # only the new process gets here, inside every namespace of the container
    proc = config.process
    _set_rlimits(proc.rlimits)
    try:
        os.chdir(proc.cwd)
    except OSError as exc:
        raise ChildError(f'chdir to cwd ("{proc.cwd}") set in config.json failed: '
                         f'{exc.strerror.lower()}', exc.errno, "cwd") from None
    _run_process(sync_fd, boot, config, -1, seccomp, listener_fd, console)


def _run_process(sync_fd: int, boot: p.Bootstrap, config, fifo_fd: int, seccomp,
                 listener_fd: int, console) -> None:  # it execs
    """From the container's root and cwd to exec: shared by the init and `corral exec`."""
    proc = config.process
    env = list(proc.env) + list(boot.extra_env)
    path = find_executable(proc.args[0], env)
    env = _with_home(env, proc.user.uid)
    if console is not None:
        from corral.init.terminal import setup_terminal

        setup_terminal(console, proc.console_size, proc.user.uid, proc.user.gid)

    p.write_message(sync_fd, p.Ready())
    run = _expect(sync_fd, p.Run)

    if proc.user.umask is not None:
        os.umask(proc.user.umask)
    _process_attributes(config)
    start_hooks = () if boot.exec else config.hooks.start_container  # the init's alone
    listener = None
    if listener_fd >= 0:
        from corral.init.seccomp import process_state

        # "running" as crun sends it: the agent gets it once `start` has let the process go
        listener = (listener_fd, process_state(
            config.linux.seccomp, config.oci_version,
            _state(boot, config, "running", run.pid), run.pid))
    nsenter.finalize_and_exec(
        start_hooks=[(h.path, list(h.args) or [h.path], list(h.env) or env, h.timeout or 0)
                     for h in start_hooks],
        hook_state=_state(boot, config, "created", run.pid) if start_hooks else None,
        seccomp=seccomp, seccomp_listener=listener,
        sync_fd=sync_fd, uid=proc.user.uid, gid=proc.user.gid,
        groups=list(proc.user.additional_gids), caps=_cap_masks(proc.capabilities),
        no_new_privs=proc.no_new_privileges,
        first_cloexec_fd=3 + boot.preserve_fds, fifo_fd=fifo_fd,
        path=path, argv=proc.args, env=env, cgroupns=boot.cgroupns,
        session_keyring=boot.session_keyring)


def _state(boot: p.Bootstrap, config, status: str, pid: int) -> bytes:
    return hooks.oci_state(config.oci_version, boot.container_id, boot.bundle, status, pid,
                     config.annotations)


def _write_sysctls(sysctl: dict[str, str]) -> None:
    from corral.oci.config import sysctl_path

    for key, value in sysctl.items():
        path = "/proc/sys/" + sysctl_path(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise ChildError(f"linux.sysctl[\"{key}\"]: write {path}: "
                             f"{(exc.strerror or str(exc)).lower()}", exc.errno or 0,
                             "sysctl") from None


def _cap_masks(caps) -> tuple[int, int, int, int, int]:
    """(bounding, effective, permitted, inheritable, ambient); no `capabilities` in the
    config means no capabilities at all, as in runc."""
    from corral.oci.capabilities import caps_mask

    if caps is None:
        return (0, 0, 0, 0, 0)
    return (caps_mask(caps.bounding), caps_mask(caps.effective), caps_mask(caps.permitted),
            caps_mask(caps.inheritable), caps_mask(caps.ambient))


def _expect(sync_fd: int, cls: type) -> p.Message:
    msg = p.read_message(sync_fd)
    if msg is None:
        os._exit(1)  # the parent went away: nothing to report to
    if not isinstance(msg, cls):
        raise ChildError(f"protocol: expected {cls.type}, got {msg.type}")
    return msg


def _report(sync_fd: int, exc: BaseException) -> None:
    if isinstance(exc, SystemExit):
        return
    if isinstance(exc, CorralError):
        err = p.Error(str(exc), getattr(exc, "errno", 0) or 0, getattr(exc, "stage", ""))
    elif isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename and exc.filename not in text:
            text = f"{exc.filename}: {text}"
        err = p.Error(text, exc.errno or 0)
    else:
        err = p.Error(f"container init failed: {type(exc).__name__}: {exc}")
    try:
        p.write_message(sync_fd, err)
    except OSError:
        pass


_RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def _set_rlimits(rlimits) -> None:
    for rl in rlimits:
        try:
            resource.setrlimit(_RLIMITS[rl.type], (rl.soft, rl.hard))
        except (KeyError, ValueError, OSError) as exc:
            raise ChildError(f"process.rlimits: setrlimit {rl.type}: {exc}") from None


def _enter_cwd(cwd: str) -> None:
    """After pivot_root `/` is the rootfs, so the path cannot lead out of it."""
    os.makedirs(cwd, 0o755, exist_ok=True)
    os.chdir(cwd)


def find_executable(arg0: str, env: list[str]) -> str:
    """PATH lookup inside the container; the messages are the ones runc prints (podman maps
    'executable file not found' and 'no such file or directory' to exit 127)."""
    if "/" in arg0:
        try:
            os.stat(arg0)
        except OSError as exc:
            raise ChildError(f'exec: "{arg0}": stat {arg0}: {exc.strerror.lower()}',
                             exc.errno, "exec") from None
        return arg0
    search = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            search = item[5:]
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", arg0)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if st.st_mode & 0o170000 == 0o100000 and st.st_mode & 0o111:
            return candidate
    raise ChildError(f'exec: "{arg0}": executable file not found in $PATH', 2, "exec")


def _with_home(env: list[str], uid: int) -> list[str]:
    """HOME from the container's /etc/passwd when the config does not set it, as runc does."""
    if any(item.startswith("HOME=") for item in env):
        return env
    home = "/"
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    home = parts[5] or "/"
                    break
    except OSError:
        pass
    return env + [f"HOME={home}"]
