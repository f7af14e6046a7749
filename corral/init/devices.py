"""The container's /dev: default device nodes, ``linux.devices``, and the usual symlinks.

Runs before the pivot, on paths resolved inside the rootfs.  Model: runc's createDevices,
setupPtmx and setupDevSymlinks.  In a user namespace the kernel refuses ``mknod`` of device
nodes, so the host's node is bind-mounted onto an empty file instead; a node made that way is
the host's own object and is never chmod-ed or chown-ed.
"""

from __future__ import annotations

import errno
import os
import stat

from corral import nsenter
from corral.errors import ConfigError, CorralError
from corral.init import mounts, paths
from corral.init.paths import reason

# The devices every container gets when it has its own /dev: (name, major, minor).
DEFAULT_DEVICES = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
    ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)

# /dev/<name> -> target.  /dev/core is added only when the host has a /proc/kcore.
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
)

_TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def dev_mount_index(config):
    """(index, mount) of the last ``config.mounts`` entry exactly at /dev, or (-1, None)."""
    found = (-1, None)
    for i, m in enumerate(config.mounts):
        if paths.clean_path(m.destination) == "/dev":
            found = (i, m)
    return found


def dev_mount(config):
    return dev_mount_index(config)[1]


def has_mount_at(config, destination: str) -> bool:
    return any(paths.clean_path(m.destination) == destination for m in config.mounts)


def setup_dev(config, root: str, *, in_userns: bool = False) -> None:
    """Populate /dev inside ``root``.

    ``linux.devices`` are created unless /dev is a bind mount (that would be the host's own
    /dev, as runc's needsSetupDev judges); the defaults, symlinks and ptmx only when the
    config gives the container its own /dev (e.g. a tmpfs).
    """
    devm = dev_mount(config)
    dev_is_bind = devm is not None and mounts.is_bind(
        devm, mounts.parse_mount_options(devm.options))
    if not dev_is_bind:
        create_config_devices(root, config.linux.devices, in_userns=in_userns)
    if devm is None or dev_is_bind:
        return
    listed = {paths.clean_path(d.path) for d in config.linux.devices}
    create_default_devices(root, skip=listed, in_userns=in_userns)
    try:
        create_dev_symlinks(root)
        if has_mount_at(config, "/dev/pts"):
            link_ptmx(root)
    except OSError as err:
        raise CorralError(f"create /dev symlinks: {reason(err)}") from err


def device_path(index: int, device) -> str:
    """The device's clean container path; refuses anything not below /dev."""
    field = f"linux.devices[{index}].path"
    if not device.path.startswith("/"):
        raise ConfigError(field, f"{device.path!r} is not an absolute path")
    path = paths.clean_path(device.path)
    if not path.startswith("/dev/"):
        raise ConfigError(field, f"{device.path!r} is not under /dev")
    return path


def device_mode(index: int, device) -> int:
    """st_mode for mknod: the type bits and the permission bits (default 0666)."""
    if device.type not in _TYPE_BITS:
        raise ConfigError(f"linux.devices[{index}].type", f"unknown device type {device.type!r}")
    perm = 0o666 if device.file_mode is None else device.file_mode & 0o777
    return _TYPE_BITS[device.type] | perm


def create_config_devices(root: str, devices, *, in_userns: bool) -> None:
    for i, dev in enumerate(devices):
        path = device_path(i, dev)
        mode = device_mode(i, dev)
        try:
            create_device(root, path, mode, dev.major, dev.minor, dev.uid, dev.gid,
                          in_userns=in_userns)
        except OSError as err:
            raise ConfigError(f"linux.devices[{i}]",
                              f"create {path}: {reason(err)}") from err


def create_default_devices(root: str, *, skip=frozenset(), in_userns: bool) -> None:
    for name, major, minor in DEFAULT_DEVICES:
        path = "/dev/" + name
        if path in skip:
            continue  # linux.devices already made it, its way
        try:
            create_device(root, path, stat.S_IFCHR | 0o666, major, minor, 0, 0,
                          in_userns=in_userns)
        except OSError as err:
            raise CorralError(f"create {path}: {reason(err)}") from err


def create_device(root: str, path: str, mode: int, major: int, minor: int,
                  uid: int | None, gid: int | None, *, in_userns: bool) -> None:
    """Make device ``path`` (a clean container path) inside ``root``.

    An existing node is left alone (runc does the same).  Character and block devices are
    bind-mounted from the host's ``path`` in a user namespace, or when mknod is refused
    (EPERM: a device cgroup, or a user namespace the caller did not know about).
    """
    target = paths.resolve_in_root(root, path)
    if not paths.is_within(paths.clean_root(root) + "/dev", target):
        raise OSError(errno.EXDEV, "resolves outside /dev", path)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)
    is_fifo = stat.S_ISFIFO(mode)
    if in_userns and not is_fifo:
        bind_host_device(root, path)
        return
    try:
        os.mknod(target, mode, os.makedev(major, minor))
    except FileExistsError:
        return
    except PermissionError:
        if is_fifo:
            raise
        bind_host_device(root, path)
        return
    set_owner_and_mode(root, target, stat.S_IMODE(mode), uid, gid)


def set_owner_and_mode(root: str, target: str, perm: int, uid: int | None,
                       gid: int | None) -> None:
    """chmod (mknod's mode went through the umask) and chown the node we just made,
    through a checked descriptor so a swapped path cannot redirect them."""
    fd = paths.open_in_root(root, target)
    try:
        via = paths.procfd(fd, target)
        os.chmod(via, perm)
        if uid is not None or gid is not None:
            os.chown(via, -1 if uid is None else uid, -1 if gid is None else gid)
    finally:
        os.close(fd)


def bind_host_device(root: str, path: str) -> None:
    """Bind the host's node at ``path`` onto an empty file at the same place in ``root``."""
    if not os.path.exists(path):
        raise OSError(errno.ENOENT, "no such device on the host to bind", path)
    target = paths.create_file_in_root(root, path)
    mounts.mount_in_root(root, target, path, None, nsenter.MS_BIND)


def create_dev_symlinks(root: str) -> None:
    links = list(DEV_SYMLINKS)
    # The host's /proc (still visible before the pivot) tells whether the kernel has kcore.
    if os.path.exists("/proc/kcore"):
        links.append(("core", "/proc/kcore"))
    dev = paths.resolve_in_root(root, "/dev")
    for name, target in links:
        try:
            os.symlink(target, dev + "/" + name)
        except FileExistsError:
            pass  # something already there (a mount, or the rootfs's own link): keep it


def link_ptmx(root: str) -> None:
    """/dev/ptmx -> pts/ptmx, so ptys come from the container's own devpts instance."""
    link = paths.resolve_in_root(root, "/dev") + "/ptmx"
    try:
        os.unlink(link)
    except FileNotFoundError:
        pass
    os.symlink("pts/ptmx", link)
