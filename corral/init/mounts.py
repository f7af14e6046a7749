"""``config.mounts`` and the masking / read-only mounts, inside the container's mount namespace.

Model: runc's ``libcontainer/rootfs_linux.go`` (mountToRootfs, bindMountDeviceNode, maskPath,
readonlyPath) and crun's ``linux.c``.  Every destination is resolved inside the rootfs with
``paths.resolve_in_root`` and mounted through an ``O_PATH`` descriptor that was checked to be
inside the rootfs (``paths.open_in_root``), so no symlink in the rootfs can send a mount onto
the host.
"""

from __future__ import annotations

import errno
import os
import stat

from corral import nsenter
from corral.errors import ConfigError, NotSupportedError
from corral.oci.config import id_map_text
from corral.record import Record
from corral.init import paths
from corral.init.paths import reason
from corral.nsenter import (
    MS_BIND, MS_DIRSYNC, MS_LAZYTIME, MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME,
    MS_NOEXEC, MS_NOSUID, MS_NOSYMFOLLOW, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME,
    MS_REMOUNT, MS_SHARED, MS_SILENT, MS_SLAVE, MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE,
)

MS_I_VERSION = 1 << 23

# option -> (clears the flag?, flag).  Later options win over earlier ones, as in mount(8).
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID),
    "nosuid": (False, MS_NOSUID),
    "dev": (True, MS_NODEV),
    "nodev": (False, MS_NODEV),
    "exec": (True, MS_NOEXEC),
    "noexec": (False, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME),
    "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, MS_LAZYTIME),
    "nolazytime": (True, MS_LAZYTIME),
    "iversion": (False, MS_I_VERSION),
    "noiversion": (True, MS_I_VERSION),
    "symfollow": (True, MS_NOSYMFOLLOW),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "silent": (False, MS_SILENT),
    "loud": (True, MS_SILENT),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
}

PROPAGATION_OPTIONS: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# mount_setattr(2) attributes (linux/mount.h).
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70  # the atime mode field: relatime (0), noatime, strictatime
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# The spec's recursive options (config.md, since 1.1): option -> (clears the attribute?,
# MOUNT_ATTR_*), applied with mount_setattr(AT_RECURSIVE) after the mount, as runc does.
RECURSIVE_OPTIONS: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME),
    "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}

#: idmapped mount options (the mapping is made before the namespaces: open_idmapped_trees).
IDMAP_OPTIONS = frozenset({"idmap", "ridmap"})

# Options runc/crun know that need path tricks: refused, never ignored.
UNSUPPORTED_OPTIONS = frozenset({"copy-symlink", "src-nofollow", "dest-nofollow"})

# Flags the kernel locks on mounts inherited by a less privileged (user) namespace; a
# bind remount must repeat them or it fails with EPERM.
LOCKED_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
ATIME_FLAGS = MS_NOATIME | MS_RELATIME | MS_STRICTATIME | MS_NODIRATIME

# statvfs f_flag bits (ST_*) -> mount(2) flags.  They differ: ST_RELATIME is 4096 = MS_BIND.
_ST_TO_MS = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
             (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
             (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))

# The only paths under /proc that may be mounted over (lxcfs-style); anything else could
# hide the kernel's own protections (runc's checkProcMount, CVE-2019-16884).
PROC_OVERRIDES = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
})


class MountOptions(Record):
    """A mount's ``options`` split the way mount(2) needs them.

    flags: MS_* to set; cleared: MS_* the options explicitly turn off (rw, suid, atime...);
    propagation: MS_* propagation changes, one mount call each after the mount itself;
    data: the filesystem's own options (mode=755,size=65536k, ...);
    rec_set, rec_clear: MOUNT_ATTR_* of the recursive options (rro, ...), and
    recursive: those options' names, for errors.
    """

    flags: int = 0
    cleared: int = 0
    propagation: tuple[int, ...] = ()
    data: str = ""
    rec_set: int = 0
    rec_clear: int = 0
    recursive: tuple[str, ...] = ()
    tmpcopyup: bool = False

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)


def parse_mount_options(options, field: str = "options") -> MountOptions:
    """Parse OCI / mount(8) options.  ``field`` names them in errors (``mounts[3].options``)."""
    flags = cleared = rec_set = rec_clear = 0
    propagation: list[int] = []
    data: list[str] = []
    recursive: list[str] = []
    tmpcopyup = False
    for option in options:
        if option == "tmpcopyup":
            tmpcopyup = True  # a tmpfs starts with a copy of what it covers (runc, crun)
        elif option in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[option]
            if clear:
                flags &= ~flag
                cleared |= flag
            else:
                flags |= flag
                cleared &= ~flag
        elif option in PROPAGATION_OPTIONS:
            propagation.append(PROPAGATION_OPTIONS[option])
        elif option in RECURSIVE_OPTIONS:
            clear, attr = RECURSIVE_OPTIONS[option]
            recursive.append(option)
            if clear:
                rec_clear |= attr
                rec_set &= ~attr
            else:
                rec_set |= attr
                rec_clear &= ~attr
                if attr & MOUNT_ATTR__ATIME == attr:
                    # mount_setattr(2): an atime mode is set by clearing the whole field
                    rec_clear |= MOUNT_ATTR__ATIME
        elif option in IDMAP_OPTIONS:
            continue  # the idmapped tree is made before the namespaces
        elif option in UNSUPPORTED_OPTIONS:
            raise NotSupportedError(f"{field}: {option}")
        elif option.startswith("x-"):
            continue  # mount(8): comments for userspace tools, never given to the kernel
        elif option:
            data.append(option)
    return MountOptions(flags, cleared, tuple(propagation), ",".join(data), rec_set,
                        rec_clear, tuple(recursive), tmpcopyup)


def statvfs_flags(path: str) -> int:
    """The MS_* flags of the mount that holds ``path``."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


def mount_error(index: int, mount, err: OSError) -> ConfigError:
    return ConfigError(f"mounts[{index}]",
                       f"mount {mount.source or mount.type} on {mount.destination}: "
                       f"{reason(err)}")


# --- mounting on a checked target -------------------------------------------------------


def mount_in_root(root: str, target: str, source: str | None, fstype: str | None,
                  flags: int = 0, data: str | None = None) -> None:
    """mount(2) on ``target`` (a host path already resolved inside ``root``), through a fresh
    ``O_PATH`` descriptor checked to be inside ``root``.

    Reopened for every call on purpose: after a mount the same path names the new mount's
    root, which is what a following remount or propagation change must act on.
    """
    fd = paths.open_in_root(root, target)
    try:
        nsenter.mount(source, paths.procfd(fd, target), fstype, flags, data)
    finally:
        os.close(fd)


def set_propagation(root: str, target: str, propagation) -> None:
    """Apply each propagation flag with its own mount call (mount(2) takes one at a time)."""
    for flag in propagation:
        mount_in_root(root, target, None, None, flag)


def remount_bind(root: str, target: str, flags: int, cleared: int = 0) -> None:
    """Apply per-mount flags to a bind mount (a plain MS_BIND ignores them).

    First as asked; when that fails with EPERM the mount has flags locked by a user
    namespace, so retry keeping them (runc's approach) -- unless the user explicitly asked
    to clear one of them, where the EPERM is the right answer.
    """
    flags = (flags & ~MS_REC) | MS_BIND | MS_REMOUNT
    try:
        mount_in_root(root, target, None, None, flags)
        return
    except OSError as err:
        if err.errno != errno.EPERM:
            raise
        first = err
    current = statvfs_flags(target)
    if current & cleared & LOCKED_FLAGS:
        raise first  # e.g. "rw" asked on a locked read-only mount: cannot be honoured
    # Atime flags need no help: with none named the kernel keeps the current (maybe locked)
    # mode; a named one that conflicts with a locked mode still fails, as it should.
    mount_in_root(root, target, None, None, flags | (current & LOCKED_FLAGS))


def needs_remount(opts: MountOptions) -> bool:
    """A bind mount needs a second MS_REMOUNT call when any per-mount flag was named."""
    return bool(opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT) or opts.cleared)


def bind_mount(root: str, target: str, source: str, opts: MountOptions) -> None:
    mount_in_root(root, target, source, None, MS_BIND | (opts.flags & MS_REC))
    if needs_remount(opts):
        remount_bind(root, target, opts.flags, opts.cleared)


# --- config.mounts -----------------------------------------------------------------------


def is_bind(mount, opts: MountOptions) -> bool:
    """OCI: a bind mount has option bind/rbind; type "bind" and a missing type or "none"
    (with a source) are treated as bind too, as crun does."""
    return opts.is_bind or mount.type in ("bind", "rbind", "none", None)


def bind_options(mount, opts: MountOptions) -> MountOptions:
    """The options of a bind mount, with MS_BIND (and MS_REC for type rbind) set."""
    extra = MS_BIND | (MS_REC if mount.type == "rbind" else 0)
    return MountOptions(opts.flags | extra, opts.cleared, opts.propagation, opts.data)


def mount_entry(root: str, index: int, mount, *, cgroup_mounts=(), idmapped: int | None = None,
                mount_label: str | None = None) -> None:
    """Mount ``config.mounts[index]`` inside ``root``.  Errors name the mount.
    ``idmapped``: the detached idmapped tree made for it before the namespaces
    (``open_idmapped_trees``), moved into place instead of a bind mount."""
    opts = parse_mount_options(mount.options, f"mounts[{index}].options")
    if mount_label and mount.type in LABELLED_TYPES and not is_bind(mount, opts):
        data = f'{opts.data},context="{mount_label}"' if opts.data else f'context="{mount_label}"'
        opts = MountOptions(opts.flags, opts.cleared, opts.propagation, data, opts.rec_set,
                            opts.rec_clear, opts.recursive)
    try:
        if idmapped is not None:
            _mount_idmapped(root, mount, bind_options(mount, opts), idmapped)
            set_propagation(root, paths.resolve_in_root(root, mount.destination),
                            opts.propagation)
        else:
            _mount_entry(root, mount, opts, cgroup_mounts)
        if opts.recursive:
            set_recursive_attributes(root, index, mount, opts)
    except OSError as err:
        raise mount_error(index, mount, err) from err
    except ConfigError as err:
        if err.field:
            raise
        raise ConfigError(f"mounts[{index}]", str(err)) from err


def set_recursive_attributes(root: str, index: int, mount, opts: MountOptions) -> None:
    """The recursive options (rro, rnosuid, ...) on the finished mount and every mount
    under it: mount_setattr(AT_RECURSIVE), through a descriptor checked to be inside."""
    target = paths.resolve_in_root(root, mount.destination)
    fd = paths.open_in_root(root, target)
    try:
        nsenter.mount_setattr_recursive(fd, opts.rec_set, opts.rec_clear, mount.destination)
    except OSError as err:
        names = ", ".join(opts.recursive)
        if err.errno == errno.ENOSYS:
            raise ConfigError(f"mounts[{index}].options", f"{names}: this kernel has no "
                              f"mount_setattr(2) (Linux 5.12 or later)") from None
        raise ConfigError(f"mounts[{index}].options", f"{names} on {mount.destination}: "
                          f"{reason(err)}") from None
    finally:
        os.close(fd)


def _mount_entry(root: str, mount, opts: MountOptions, cgroup_mounts) -> None:
    if is_bind(mount, opts):
        _mount_bind(root, mount, bind_options(mount, opts))
    elif mount.type in ("cgroup", "cgroup2"):
        _mount_cgroup(root, mount, opts, cgroup_mounts)
    elif mount.type == "sysfs":
        _mount_sysfs(root, mount, opts)
    elif mount.type == "tmpfs":
        _mount_tmpfs(root, mount, opts)
    else:
        # tmpfs, proc, devpts, mqueue, and any other filesystem: straight to mount(2).
        target = _directory_target(root, mount)
        _mount_fs(root, target, mount, opts)
    # Propagation options need calls of their own, on the finished mount.
    set_propagation(root, paths.resolve_in_root(root, mount.destination), opts.propagation)


def _directory_target(root: str, mount) -> str:
    target = paths.resolve_in_root(root, mount.destination)
    check_proc_destination(root, target, mount)
    return paths.mkdir_in_root(root, mount.destination)


def _mount_fs(root: str, target: str, mount, opts: MountOptions) -> None:
    flags = opts.flags
    if is_dev(mount):
        flags &= ~MS_RDONLY  # device nodes go in first; finalize_rootfs makes it read-only
    mount_in_root(root, target, mount.source or mount.type, mount.type, flags,
                  opts.data or None)


def is_dev(mount) -> bool:
    return paths.clean_path(mount.destination) == "/dev"


def _mount_tmpfs(root: str, mount, opts: MountOptions) -> None:
    """A tmpfs, with runc's two refinements: without ``mode=`` it keeps the mode of the
    directory it covers (a tmpfs on /tmp stays 1777), and a read-only one is mounted
    writable, given that mode, then made read-only."""
    covered = _dir_mode(paths.resolve_in_root(root, mount.destination))
    target = _directory_target(root, mount)
    # tmpcopyup: the directory about to be covered, held open: still the old one after the mount
    below = _open_below(root, target) if opts.tmpcopyup else -1
    try:
        mount_in_root(root, target, mount.source or "tmpfs", "tmpfs", opts.flags & ~MS_RDONLY,
                      opts.data or None)
        if covered is not None and not any(o.startswith("mode=") for o in opts.data.split(",")):
            fd = paths.open_in_root(root, target)
            try:
                os.chmod(paths.procfd(fd, target), covered)
            finally:
                os.close(fd)
        if below >= 0:
            fd = paths.open_in_root(root, target)
            try:
                top = os.open(paths.procfd(fd, target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            finally:
                os.close(fd)
            try:
                _copy_tree(below, top)
            finally:
                os.close(top)
    finally:
        if below >= 0:
            os.close(below)
    if opts.flags & MS_RDONLY and not is_dev(mount):
        remount_bind(root, target, opts.flags, opts.cleared)


def _open_below(root: str, target: str) -> int:
    """The directory a tmpfs will cover, opened (through the checked path) for reading."""
    fd = paths.open_in_root(root, target)
    try:
        return os.open(paths.procfd(fd, target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(fd)


def _copy_tree(src: int, dst: int) -> None:
    """Copies a directory's entries (files, directories, symlinks, device and fifo nodes)
    with their modes and owners, by descriptors only: nothing is looked up by path, so no
    symlink in the copied tree is ever followed."""
    for entry in os.scandir(src):
        name = entry.name
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            os.mkdir(name, 0o700, dir_fd=dst)
            sub_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=src)
            try:
                sub_dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                                  os.O_CLOEXEC, dir_fd=dst)
                try:
                    _copy_tree(sub_src, sub_dst)
                finally:
                    os.close(sub_dst)
            finally:
                os.close(sub_src)
        elif kind == stat.S_IFREG:
            fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                fout = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                               os.O_CLOEXEC, 0o600, dir_fd=dst)
                try:
                    while os.sendfile(fout, fin, None, 1 << 20):
                        pass
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
        else:
            continue  # sockets: nothing to copy
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        if kind != stat.S_IFLNK:
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst)


def _dir_mode(host_path: str) -> int | None:
    """The permission bits (with sticky/setgid) of an existing directory, else None."""
    try:
        st = os.stat(host_path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISDIR(st.st_mode) else None


def check_proc_destination(root: str, target: str, mount) -> None:
    """Only procfs goes on /proc, and only a few files under /proc may be covered."""
    proc = paths.clean_root(root) + "/proc"
    if target == proc:
        if mount.type != "proc":
            raise ConfigError("", f"{mount.destination} can only be a proc mount")
    elif target.startswith(proc + "/"):
        if target[len(paths.clean_root(root)):] not in PROC_OVERRIDES:
            raise ConfigError("", f"{mount.destination} is under /proc: refused")


def _mount_bind(root: str, mount, opts: MountOptions) -> None:
    if not mount.source:
        raise ConfigError("", "a bind mount needs a source")
    # Host path; relative ones are relative to the bundle (our working directory now).
    source = os.path.abspath(mount.source)
    target = _mount_point(root, mount, stat.S_ISDIR(os.stat(source).st_mode))
    bind_mount(root, target, source, opts)


def _mount_point(root: str, mount, is_dir: bool) -> str:
    """The destination, checked and made: a directory for a directory, an empty file for
    anything else."""
    check_proc_destination(root, paths.resolve_in_root(root, mount.destination), mount)
    if is_dir:
        return paths.mkdir_in_root(root, mount.destination)
    return paths.create_file_in_root(root, mount.destination)


#: Filesystems that take linux.mountLabel as their context= option (SELinux hosts only).
LABELLED_TYPES = frozenset({"tmpfs", "devpts", "mqueue"})


def open_idmapped_trees(mounts_, linux=None) -> dict[int, int]:
    """For each idmapped bind mount, a detached idmapped copy of its source (host paths,
    host privileges: call before the namespaces).  {index in config.mounts: fd}.

    The idmap is the mount's own uidMappings/gidMappings, or else the container's user
    namespace (config.md: the ``idmap``/``ridmap`` options without mappings): its maps, for
    a new one (the same mapping, before that namespace exists), or the one joined by path.
    ``ridmap`` idmaps every mount of an rbind copy, ``idmap`` only its top."""
    trees: dict[int, int] = {}
    try:
        for i, m in enumerate(mounts_):
            if m.idmap is None:
                continue
            opts = parse_mount_options(m.options, f"mounts[{i}].options")
            uid_map, gid_map, userns_path = m.uid_mappings, m.gid_mappings, None
            if not uid_map:
                user = linux.namespace("user")
                uid_map, gid_map, userns_path = linux.uid_mappings, linux.gid_mappings, user.path
            try:
                trees[i] = nsenter.idmapped_tree(
                    os.path.abspath(m.source or ""), id_map_text(uid_map), id_map_text(gid_map),
                    clone_recursive=bool(bind_options(m, opts).flags & MS_REC),
                    idmap_recursive=m.idmap == "ridmap", userns_path=userns_path)
            except OSError as err:
                raise ConfigError(f"mounts[{i}]", f"idmapped mount of {m.source}: "
                                                  f"{err.strerror}") from None
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    return trees


def _mount_idmapped(root: str, mount, opts: MountOptions, tree_fd: int) -> None:
    """Attach the idmapped tree on the destination, then apply the per-mount flags."""
    target = _mount_point(root, mount, stat.S_ISDIR(os.fstat(tree_fd).st_mode))
    fd = paths.open_in_root(root, target)
    try:
        nsenter.move_mount(tree_fd, fd, mount.destination)
    finally:
        os.close(fd)
        os.close(tree_fd)
    if needs_remount(opts):
        remount_bind(root, target, opts.flags, opts.cleared)


def _mount_sysfs(root: str, mount, opts: MountOptions) -> None:
    target = _directory_target(root, mount)
    try:
        _mount_fs(root, target, mount, opts)
    except OSError as err:
        if err.errno != errno.EPERM:
            raise
        # sysfs may only be mounted by the owner of the network namespace; without a
        # private one, show the host's /sys (read-only as asked), as runc does.
        bind_mount(root, target, "/sys", MountOptions(opts.flags | MS_BIND | MS_REC,
                                                      opts.cleared))


def _mount_cgroup(root: str, mount, opts: MountOptions, cgroup_mounts) -> None:
    """The container's /sys/fs/cgroup: host cgroup directories bound into a tmpfs."""
    target = _directory_target(root, mount)
    flags = opts.flags | MS_BIND | MS_REC
    if len(cgroup_mounts) == 1 and cgroup_mounts[0][0] == "":
        bind_mount(root, target, cgroup_mounts[0][1], MountOptions(flags, opts.cleared))
        return
    # Read-only is applied at the end: the tmpfs must stay writable to make the subdirs.
    mount_in_root(root, target, "tmpfs", "tmpfs", opts.flags & ~MS_RDONLY, "mode=755")
    for name, host_dir in cgroup_mounts:
        sub = paths.mkdir_in_root(root, mount.destination + "/" + name)
        bind_mount(root, sub, host_dir, MountOptions(flags, opts.cleared))
        _link_comounted(root, mount.destination, name)
    if opts.flags & MS_RDONLY:
        mount_in_root(root, target, None, None, (opts.flags | MS_REMOUNT) & ~MS_BIND)


def _link_comounted(root: str, destination: str, name: str) -> None:
    """``cpu,cpuacct`` is also reachable as ``cpu`` and ``cpuacct`` (as on the host)."""
    if "," not in name:
        return
    for part in name.split(","):
        if part.startswith("name="):
            continue
        link = paths.resolve_in_root(root, destination + "/" + part)
        if not os.path.lexists(link):
            os.symlink(name, link)


# --- after the pivot: masked and read-only paths, read-only root --------------------------


def mask_path(path: str, null_device) -> None:
    """Hide ``path``: /dev/null over a file, an empty read-only tmpfs over a directory.
    A missing path is nothing to hide.  ``null_device()`` gives the bind source for files."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        nsenter.mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        nsenter.mount(null_device(), path, None, MS_BIND)


def open_dev_null() -> int:
    """An O_PATH descriptor of the container's /dev/null, checked to be the null device.

    A rootfs could make /dev/null a symlink to (or a bind of) something it wants mounted
    read-write over a masked path (runc CVE-2025-31133); refuse anything but char 1:3.
    """
    fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 1 or os.minor(st.st_rdev) != 3:
        os.close(fd)
        raise OSError(errno.EINVAL, "/dev/null in the container is not the null device")
    return fd


def mask_paths(masked) -> None:
    """``linux.maskedPaths``, after the pivot."""
    null_fd: list[int] = []  # opened on first need: a config may mask directories only

    def null_device() -> str:
        if not null_fd:
            null_fd.append(open_dev_null())
        # Bind the checked object itself, not whatever the path names by now.
        return paths.procfd(null_fd[0], "/dev/null")

    try:
        for i, path in enumerate(masked):
            try:
                mask_path(path, null_device)
            except OSError as err:
                raise ConfigError(f"linux.maskedPaths[{i}]",
                                  f"mask {path}: {reason(err)}") from err
    finally:
        for fd in null_fd:
            os.close(fd)


def readonly_path(path: str) -> None:
    """Make ``path`` a read-only (nosuid, nodev, noexec) mount; missing paths are skipped."""
    try:
        nsenter.mount(path, path, None, MS_BIND | MS_REC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return
        raise
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    # Keep the flags the mount already has (locked ones would make the remount fail).
    nsenter.mount(None, path, None, flags | statvfs_flags(path))


def readonly_paths(paths_) -> None:
    for i, path in enumerate(paths_):
        try:
            readonly_path(path)
        except OSError as err:
            raise ConfigError(f"linux.readonlyPaths[{i}]",
                              f"make {path} read-only: {reason(err)}") from err


def remount_readonly(path: str) -> None:
    """Make the mount at ``path`` read-only, keeping its other (maybe locked) flags."""
    nsenter.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | statvfs_flags(path))


def remount_root_readonly() -> None:
    """``root.readonly``: remount / read-only, keeping its other (maybe locked) flags."""
    try:
        remount_readonly("/")
    except OSError as err:
        raise ConfigError("root.readonly", f"remount / read-only: {reason(err)}") from err


# --- /proc/self/mountinfo ----------------------------------------------------------------


# One /proc/self/mountinfo line: root is the part of the filesystem that is mounted ("/" for
# a full mount); optional holds the propagation fields ("shared:N", "master:N", ...).
class MountInfo(Record):
    mount_point: str
    root: str
    fstype: str
    optional: tuple[str, ...]


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mountinfo() -> list[MountInfo]:
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    result = []
    for line in lines:
        fields = line.split(" ")
        sep = fields.index("-")
        result.append(MountInfo(_unescape(fields[4]), _unescape(fields[3]), fields[sep + 1],
                                tuple(fields[6:sep])))
    return result


def mount_containing(path: str, infos: list[MountInfo]) -> MountInfo | None:
    """The last-mounted (topmost) mount whose mount point is the longest prefix of path."""
    best = None
    for info in infos:
        mp = info.mount_point
        if path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = info
    return best
