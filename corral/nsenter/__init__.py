"""Thin Python face of the C namespace stage (``nsenter.c``) and the few syscalls Python lacks.

Every wrapper raises ``OSError`` with the kernel's errno, like the ``os`` module does.
"""

from __future__ import annotations

import os
TYPE_CHECKING = False  # typing and collections.abc cost ms on the CLI's start-up path
if TYPE_CHECKING:
    from collections.abc import Sequence

from corral.nsenter._nsenter import ffi, lib

# Namespace type flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

AF_UNIX = 1
SOCK_STREAM = 1
SOCK_CLOEXEC = 0o2000000


def _check(rc: int, what: str) -> None:
    if rc < 0:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    src = source.encode() if source is not None else ffi.NULL
    fs = fstype.encode() if fstype is not None else ffi.NULL
    dat = data.encode() if data else ffi.NULL
    _check(lib.mount(src, target.encode(), fs, flags, dat), f"mount {source} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(lib.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(lib.corral_pivot_root(new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(lib.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(lib.setdomainname(raw, len(raw)), "setdomainname")


def loopback_up() -> None:
    _check(lib.corral_loopback_up(), "bring up loopback")


def socketpair() -> tuple[int, int]:
    """A close-on-exec AF_UNIX stream pair, without importing ``socket`` (5 ms)."""
    sv = ffi.new("int[2]")
    _check(lib.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair")
    return sv[0], sv[1]


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    rc = lib.prctl(option, a2, a3, a4, a5)
    _check(rc, f"prctl({option})")
    return rc


def ns_type(fd: int) -> int:
    """The CLONE_NEW* type of a namespace file (NS_GET_NSTYPE); OSError(ENOTTY) when the
    file is not a namespace."""
    rc = lib.corral_ns_type(fd)
    _check(rc, "ioctl(NS_GET_NSTYPE)")
    return rc


def sched_setattr(policy: int, flags: int, nice: int, priority: int, runtime: int,
                  deadline: int, period: int) -> None:
    _check(lib.corral_sched_setattr(policy, flags, nice, priority, runtime, deadline, period),
           "sched_setattr")


def ioprio_set(ioprio: int) -> None:
    _check(lib.corral_ioprio_set(ioprio), "ioprio_set")


def personality(persona: int) -> None:
    _check(lib.personality(persona), "personality")
    # personality() returns the previous persona; a refused one reads back unchanged
    now = lib.personality(0xFFFFFFFF)
    if now != persona:
        raise OSError(22, f"personality: the kernel kept 0x{now:x} instead of 0x{persona:x}")


def idmapped_tree(source: str, uid_map: str, gid_map: str, *, clone_recursive: bool,
                  idmap_recursive: bool, userns_path: str | None = None) -> int:
    """A detached idmapped copy of the host tree ``source`` (see nsenter.c); its fd.  The
    idmap is the user namespace at ``userns_path``, or else one holding the two maps."""
    what = ffi.new("char[256]")
    ns = ffi.new("char[]", userns_path.encode()) if userns_path else ffi.NULL
    fd = lib.corral_idmapped_tree(source.encode(), int(clone_recursive), int(idmap_recursive),
                                  uid_map.encode(), gid_map.encode(), ns, what, 256)
    if fd < 0:
        err = ffi.errno
        raise OSError(err, f"{ffi.string(what).decode()}: {os.strerror(err)}")
    return fd


def mount_setattr_recursive(fd: int, attr_set: int, attr_clr: int, what: str) -> None:
    """mount_setattr(AT_RECURSIVE) on the mount at the O_PATH descriptor ``fd``."""
    _check(lib.corral_mount_setattr_recursive(fd, attr_set, attr_clr),
           f"mount_setattr {what}")


def set_mempolicy(mode: int, nodes: Sequence[int]) -> None:
    """set_mempolicy(2) for the calling thread: ``mode`` with its MPOL_F_* flags or-ed in."""
    bits = 8 * ffi.sizeof("unsigned long")
    words = (max(nodes, default=0) // bits) + 1
    mask = ffi.new("unsigned long[]", words)
    for node in nodes:
        mask[node // bits] |= 1 << (node % bits)
    # maxnode counts bits; the kernel reads maxnode - 1 of them (set_mempolicy(2))
    _check(lib.corral_set_mempolicy(mode, mask if nodes else ffi.NULL,
                                    words * bits + 1 if nodes else 0), "set_mempolicy")


def spawn_hook(path: str, argv: Sequence[str], env: Sequence[str], stdin_fd: int,
               out_fd: int, cwd: str) -> int:
    """posix_spawn ``path`` in the directory ``cwd`` (see nsenter.c); the child's pid."""
    keep = [ffi.new("char[]", s.encode()) for s in (*argv, *env)]
    cargv = ffi.new("char *[]", keep[:len(argv)] + [ffi.NULL])
    cenv = ffi.new("char *[]", keep[len(argv):] + [ffi.NULL])
    pid = ffi.new("int *")
    rc = lib.corral_spawn_hook(path.encode(), cargv, cenv, stdin_fd, out_fd, cwd.encode(), pid)
    if rc:
        raise OSError(rc, os.strerror(rc))
    return pid[0]


def move_mount(from_fd: int, to_fd: int, what: str) -> None:
    _check(lib.corral_move_mount(from_fd, to_fd), f"move_mount to {what}")


def enter_namespaces(sync_fd: int, unshare_flags: int, new_user: bool,
                     join: Sequence[tuple[int, str]], time_offsets: str | None = None) -> None:
    """Runs the C stage.  Returns only in the container's init (inside every namespace);
    on failure the C side has already reported the error to the parent, so exit at once.
    ``time_offsets``: the text for /proc/self/timens_offsets of a new time namespace."""
    keep = [ffi.new("char[]", path.encode()) for _, path in join]
    paths = ffi.new("const char *[]", keep or [ffi.NULL])
    types = ffi.new("int[]", [t for t, _ in join] or [0])
    cfg = ffi.new("struct nsenter_config *")
    cfg.sync_fd = sync_fd
    cfg.unshare_flags = unshare_flags
    cfg.new_user = int(new_user)
    cfg.in_user_ns = int(new_user or any(t == CLONE_NEWUSER for t, _ in join))
    cfg.njoin = len(join)
    cfg.join_paths = paths
    cfg.join_types = types
    offsets = ffi.new("char[]", time_offsets.encode()) if time_offsets else ffi.NULL
    cfg.time_offsets = offsets
    if lib.corral_nsenter(cfg) != 0:
        os._exit(1)


def finalize_and_exec(*, sync_fd: int, uid: int, gid: int, groups: Sequence[int] | None,
                      caps: tuple[int, int, int, int, int], no_new_privs: bool,
                      first_cloexec_fd: int, fifo_fd: int, path: str, cgroupns: bool,
                      session_keyring: str | None,
                      argv: Sequence[str], env: Sequence[str],
                      start_hooks: Sequence[tuple] = (), hook_state: bytes | None = None,
                      seccomp: tuple[bytes, int] | None = None,
                      seccomp_listener: tuple[int, bytes] | None = None) -> None:
    """The last steps before exec, in C.  Never returns: on failure the error was sent to
    the parent and the process exits."""
    keep = []

    def cstrs(items: Sequence[str]):
        arr = [ffi.new("char[]", s.encode()) for s in items]
        keep.extend(arr)
        return ffi.new("char *[]", arr + [ffi.NULL])

    cfg = ffi.new("struct finalize_config *")
    cfg.sync_fd = sync_fd
    cfg.uid, cfg.gid = uid, gid
    gids = ffi.new("gid_t[]", list(groups or []) or [0])
    cfg.set_groups = int(groups is not None)
    cfg.ngroups = len(groups or [])
    cfg.groups = gids
    (cfg.cap_bounding, cfg.cap_effective, cfg.cap_permitted, cfg.cap_inheritable,
     cfg.cap_ambient) = caps
    cfg.no_new_privs = int(no_new_privs)
    cfg.unshare_cgroupns = int(cgroupns)
    keyring = ffi.new("char[]", session_keyring.encode()) if session_keyring else ffi.NULL
    cfg.session_keyring = keyring
    cfg.first_cloexec_fd = first_cloexec_fd
    cfg.fifo_fd = fifo_fd
    cpath = ffi.new("char[]", path.encode())
    cfg.path = cpath
    # cdata assigned to a struct field is not kept alive by it: hold the arrays here.
    argv_arr, env_arr = cstrs(argv), cstrs(env)
    cfg.argv = argv_arr
    cfg.envp = env_arr
    # startContainer hooks: (path, argv, env, timeout seconds or 0)
    hooks = ffi.new("struct corral_hook[]", max(1, len(start_hooks)))
    for i, (hook_path, hook_argv, hook_env, timeout) in enumerate(start_hooks):
        hpath = ffi.new("char[]", hook_path.encode())
        keep.append(hpath)
        hooks[i].path = hpath
        hook_argv_arr, hook_env_arr = cstrs(hook_argv), cstrs(hook_env)
        keep.extend((hook_argv_arr, hook_env_arr))  # struct fields do not own their cdata
        hooks[i].argv = hook_argv_arr
        hooks[i].envp = hook_env_arr
        hooks[i].timeout = min(int(timeout), 2_000_000)  # poll() takes int milliseconds
    cfg.nstart_hooks = len(start_hooks)
    cfg.start_hooks = hooks
    cfg.hook_state_fd = -1
    if hook_state is not None:
        state_fd = os.memfd_create("corral-hook-state", os.MFD_CLOEXEC)
        os.write(state_fd, hook_state)
        cfg.hook_state_fd = state_fd
    # seccomp: (BPF program bytes, SECCOMP_FILTER_FLAG_* bits)
    cfg.seccomp_filter = ffi.NULL
    cfg.seccomp_listener_fd = -1
    if seccomp is not None and seccomp_listener is not None:
        # (connected socket to the SCMP_ACT_NOTIFY agent, containerProcessState JSON)
        listener_fd, listener_state = seccomp_listener
        state = ffi.new("char[]", listener_state)
        keep.append(state)
        cfg.seccomp_listener_fd = listener_fd
        cfg.seccomp_listener_state = state
    if seccomp is not None:
        program, flags = seccomp
        filt = ffi.from_buffer(program)
        keep.append(filt)
        cfg.seccomp_filter = filt
        cfg.seccomp_len = len(program) // 8  # struct sock_filter is 8 bytes
        cfg.seccomp_flags = flags
        cap_sys_admin = 1 << 21
        cfg.seccomp_sysadmin = int(not no_new_privs and not caps[1] & cap_sys_admin)
    lib.corral_finalize(cfg)
    os._exit(1)
