"""The mounts of a container without a mount namespace of its own.

Such a container's mounts are made under its rootfs in the runtime's mount namespace (runc's
way, which leaves them there).  Here the record notes what was mounted under the rootfs
before, and whoever deletes the container (or undoes its creation) detaches the rest, from
that same mount namespace, so none outlives the container.
"""

from __future__ import annotations

import errno
import os

from corral.procfs import unescape

MOUNTINFO = "/proc/self/mountinfo"


def _below(rootfs: str) -> list[tuple[int, str]]:
    """(mount id, mount point) of every mount strictly below ``rootfs``, in mount order."""
    prefix = os.path.realpath(rootfs).rstrip("/") + "/"
    out = []
    with open(MOUNTINFO) as f:
        for line in f:
            fields = line.split(" ", 5)
            point = unescape(fields[4])
            if point.startswith(prefix):
                out.append((int(fields[0]), point))
    return out


def note(rootfs: str) -> dict:
    """What the record keeps at create: the mount namespace and the mounts already there."""
    return {"mntns": os.readlink("/proc/self/ns/mnt"),
            "kept": [mount_id for mount_id, _ in _below(rootfs)]}


def release(noted: dict | None, rootfs: str) -> None:
    """Detaches what the container mounted below its rootfs (deepest first); nothing from
    another mount namespace, where these mounts are not."""
    if not noted or os.readlink("/proc/self/ns/mnt") != noted.get("mntns"):
        return
    from corral import nsenter

    kept = set(noted.get("kept", ()))
    for mount_id, point in reversed(_below(rootfs)):
        if mount_id in kept:
            continue
        try:
            nsenter.umount_detach(point)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):  # gone with a parent
                raise
