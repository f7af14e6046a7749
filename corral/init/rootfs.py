"""The container's filesystem: from the bundle's rootfs to the container's ``/``.

Called by the container init, root in its namespaces, single-threaded, already inside a new
mount namespace.  Order (model: runc's prepareRootfs / finalizeRootfs, crun's linux.c):

1. ``/`` gets the asked propagation (recursively private by default) before anything is
   mounted, so no mount below can reach the host; then the rootfs is bound onto itself so
   it is a mount point (pivot_root needs one) -- or, when ``mounts[0]`` is an overlay with
   destination ``/``, that overlay is mounted onto the rootfs instead (see ``root_overlay``).
2. ``config.mounts`` in order, each destination resolved inside the rootfs.
3. /dev: device nodes and symlinks.
4. pivot_root (or MS_MOVE + chroot with ``no_pivot``); the host's tree is detached.
5. ``linux.readonlyPaths``, ``linux.maskedPaths``, ``root.readonly``.

``prepare_rootfs`` is steps 1-4 and ``finalize_rootfs`` step 5, for a caller that must write
sysctls in between (before /proc/sys turns read-only); ``setup_rootfs`` does both.
"""

from __future__ import annotations

import errno
import os
import stat

from corral import nsenter
from corral.errors import ConfigError, CorralError
from corral.init import devices, mounts, paths
from corral.init.paths import reason
from corral.nsenter import MNT_DETACH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_REC, MS_SLAVE

DEFAULT_ROOT_PROPAGATION = MS_REC | MS_PRIVATE


def setup_rootfs(config, rootfs: str, *, no_pivot: bool = False, cgroup_mounts=(),
                 in_userns: bool = False) -> None:
    """Make ``rootfs`` (a host path) the container's ``/`` as ``config`` says.

    ``cgroup_mounts``: (name, host directory) pairs that make up a ``cgroup`` mount; a
    single ("", dir) binds dir itself.  ``in_userns``: device nodes are bind-mounted from
    the host instead of made with mknod.  Raises ``ConfigError`` naming the field at fault.
    """
    prepare_rootfs(config, rootfs, no_pivot=no_pivot, cgroup_mounts=cgroup_mounts,
                   in_userns=in_userns)
    finalize_rootfs(config)


def prepare_rootfs(config, rootfs: str, *, no_pivot: bool = False, cgroup_mounts=(),
                   in_userns: bool = False, before_pivot=None, idmapped=None) -> None:
    """Steps 1-4: on return the process's root and working directory are the container's /.
    ``idmapped``: {index in config.mounts: detached idmapped tree} (mounts.open_idmapped_trees).
    ``before_pivot()``, when given, runs once everything is mounted, just before step 4 (the
    moment of the createRuntime and createContainer hooks)."""
    root = checked_root(rootfs)
    propagation = root_propagation(config.linux.rootfs_propagation)
    set_root_propagation(propagation or DEFAULT_ROOT_PROPAGATION)
    if not _leaves_nothing_shared(propagation or DEFAULT_ROOT_PROPAGATION):
        make_parent_private(root)
    overlay = root_overlay(config.mounts)
    if overlay is None:
        bind_root(root)
    else:
        mount_root_overlay(root, overlay, config.mounts[overlay])
    idmapped = idmapped or {}
    for i, m in enumerate(config.mounts):
        if i == overlay:
            continue
        mounts.mount_entry(root, i, m, cgroup_mounts=cgroup_mounts, idmapped=idmapped.get(i),
                           mount_label=config.linux.mount_label)
    devices.setup_dev(config, root, in_userns=in_userns)
    if before_pivot is not None:
        before_pivot()
    if no_pivot:
        move_root(root)
    else:
        pivot_root(root)
    if propagation:
        # Asked for explicitly: give it to the new / too (runc applies it after the pivot,
        # since pivot_root refuses a shared parent).
        set_root_propagation(propagation)
    os.chdir("/")


def finalize_rootfs(config) -> None:
    """Step 5, after the pivot: read-only /dev, read-only and masked paths, read-only root."""
    remount_dev_readonly(config)
    # runc's order: read-only first, so a masked path inside a read-only one stays masked.
    mounts.readonly_paths(config.linux.readonly_paths)
    mounts.mask_paths(config.linux.masked_paths)
    if config.root_readonly:
        mounts.remount_root_readonly()


def remount_dev_readonly(config) -> None:
    """A read-only /dev of the container's own was mounted writable for its device nodes."""
    index, devm = devices.dev_mount_index(config)
    if devm is None:
        return
    opts = mounts.parse_mount_options(devm.options)
    if mounts.is_bind(devm, opts) or not opts.flags & nsenter.MS_RDONLY:
        return  # a bind mount got its flags when it was made
    try:
        mounts.remount_readonly("/dev")
    except OSError as err:
        raise ConfigError(f"mounts[{index}]", f"remount /dev read-only: {reason(err)}") from err


# --- step 1 ------------------------------------------------------------------------------


def checked_root(rootfs: str) -> str:
    """The canonical rootfs path; refuses a missing rootfs and a /proc or /sys symlink
    (a symlink there would redirect the container's procfs / sysfs mounts)."""
    root = os.path.realpath(rootfs)
    if not os.path.isdir(root):
        raise ConfigError("root.path", f"{rootfs}: not a directory")
    for name in ("proc", "sys"):
        try:
            st = os.lstat(root + "/" + name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError("root.path", f"{rootfs}/{name} is a symlink: refused")
    return root


def root_propagation(value: str | None) -> int:
    """``linux.rootfsPropagation`` as MS_* flags; 0 when not given."""
    if not value:
        return 0
    try:
        return mounts.PROPAGATION_OPTIONS[value]
    except KeyError:
        raise ConfigError("linux.rootfsPropagation",
                          f"unknown propagation {value!r}") from None


def set_root_propagation(flags: int) -> None:
    try:
        nsenter.mount(None, "/", None, flags)
    except OSError as err:
        raise CorralError(f"set the propagation of /: {reason(err)}") from err


def _leaves_nothing_shared(flags: int) -> bool:
    """After a recursive private or slave propagation of ``/`` no mount of the namespace is
    shared, so ``make_parent_private`` has nothing to do (and need not parse mountinfo)."""
    return bool(flags & MS_REC) and bool(flags & (MS_PRIVATE | MS_SLAVE)) \
        and not flags & nsenter.MS_SHARED


def make_parent_private(root: str) -> None:
    """Make the mount holding the rootfs private if it is shared: pivot_root refuses a
    shared parent, and the bind of the rootfs must not propagate to peers outside."""
    parent = mounts.mount_containing(root, mounts.read_mountinfo())
    if parent is None or not any(o.startswith("shared:") for o in parent.optional):
        return
    try:
        nsenter.mount(None, parent.mount_point, None, MS_PRIVATE)
    except OSError as err:
        raise CorralError(f"make {parent.mount_point} private: {reason(err)}") from err


def bind_root(root: str) -> None:
    """Bind the rootfs onto itself: pivot_root and MS_MOVE need a mount point."""
    try:
        nsenter.mount(root, root, None, MS_BIND | MS_REC)
    except OSError as err:
        raise ConfigError("root.path", f"bind {root}: {reason(err)}") from err


def root_overlay(mounts_) -> int | None:
    """The index of an overlay mount on ``/`` (the writable layer of a job's directory root),
    or None.

    It is mounted onto the rootfs, inside the container's mount namespace, before every other
    mount: the overlay then dies with the namespace and can never be left mounted on the
    host.  The spec does not forbid ``/`` as a destination, and runc mounts it in config
    order over the rootfs (a first overlay on ``/`` runs the same under runc), so here too
    it must come first: anywhere else it would hide the mounts before it, and is refused.
    Other types on ``/`` keep the plain in-order behaviour.
    """
    for i, m in enumerate(mounts_):
        if m.type == "overlay" and paths.clean_path(m.destination) == "/":
            if i != 0:
                raise ConfigError(f"mounts[{i}]", "an overlay on / (the root filesystem) must be "
                                                  "the first mount")
            return i
    return None


def mount_root_overlay(root: str, index: int, mount) -> None:
    """Mount ``config.mounts[index]`` (an overlay) on the rootfs: it becomes the mount that
    pivot_root makes ``/``.  Its lowerdir/upperdir/workdir options are host paths, relative
    ones relative to the bundle (our working directory), like a bind mount's source."""
    opts = mounts.parse_mount_options(mount.options, f"mounts[{index}].options")
    if opts.is_bind or opts.propagation or opts.recursive:
        raise ConfigError(f"mounts[{index}].options", "an overlay on / takes no bind, "
                                                      "propagation or recursive options")
    try:
        nsenter.mount(mount.source or "overlay", root, "overlay", opts.flags, opts.data or None)
    except OSError as err:
        raise mounts.mount_error(index, mount, err) from err
    checked_root(root)  # the /proc and /sys checks again, on the merged view


# --- step 4 ------------------------------------------------------------------------------


def pivot_root(root: str) -> None:
    """pivot_root(".", ".") inside the rootfs, then detach the old root stacked on top.

    No directory for the old root is needed (runc's trick): after the call the old root is
    mounted over the new one, and unmounting "." from inside it takes it away.
    """
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        nsenter.pivot_root(".", ".")
        # The kernel does not promise where "." is now; be in the old root on purpose.
        os.fchdir(old)
        # The detach must not propagate to the host.  Slave rather than private, as runc:
        # host events still reach the detached tree while references to it drain.
        nsenter.mount(None, ".", None, MS_SLAVE | MS_REC)
        nsenter.umount2(".", MNT_DETACH)
    except OSError as err:
        raise CorralError(f"pivot_root into {root}: {reason(err)}") from err
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def move_root(root: str) -> None:
    """``--no-pivot``: move the rootfs mount over / and chroot into it.

    The host's tree stays reachable in the namespace under a chroot, so first detach the
    host's full procfs and sysfs mounts: with them present the kernel would let the
    container mount fresh, unmasked procfs / sysfs (runc's msMoveRoot).
    """
    hide_host_pseudo_filesystems(root)
    try:
        os.chdir(root)
        nsenter.mount(root, "/", None, MS_MOVE)
        os.chroot(".")
    except OSError as err:
        raise CorralError(f"move {root} to /: {reason(err)}") from err
    os.chdir("/")


def hide_host_pseudo_filesystems(root: str) -> None:
    for info in mounts.read_mountinfo():
        if info.fstype not in ("proc", "sysfs") or info.root != "/":
            continue
        if paths.is_within(root, info.mount_point):
            continue  # the container's own
        hide_mount(info.mount_point)


def hide_mount(mount_point: str) -> None:
    """Detach a host mount from this namespace, or cover it when it is locked."""
    try:
        # Slave first, so the unmount cannot propagate to the host.
        nsenter.mount(None, mount_point, None, MS_SLAVE | MS_REC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.EINVAL):
            return  # gone already, with a parent detached before it
        raise CorralError(f"detach {mount_point}: {reason(err)}") from err
    try:
        nsenter.umount2(mount_point, MNT_DETACH)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EPERM):
            raise CorralError(f"detach {mount_point}: {reason(err)}") from err
        # Locked into a user namespace (EINVAL): cover it instead.
        nsenter.mount("tmpfs", mount_point, "tmpfs", 0)
