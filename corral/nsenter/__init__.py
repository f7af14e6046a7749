"""The C side of corral.  ``corral-exec`` (executor.c) runs container plans from fork to exec
(see ``corral.plan``); this module is the thin Python face of the few syscalls the parent
needs that Python lacks (helpers.c).  Every wrapper raises ``OSError`` with the kernel's errno,
like the ``os`` module does.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing and collections.abc cost ms on the CLI's start-up path
if TYPE_CHECKING:
    from collections.abc import Sequence

from corral.nsenter._nsenter import ffi, lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    rc = lib.prctl(option, a2, a3, a4, a5)
    _check(rc, f"prctl({option})")
    return rc


def umount_detach(path: str) -> None:
    """umount2(path, MNT_DETACH): os has no umount."""
    _check(lib.umount2(path.encode(), lib.MNT_DETACH), f"umount {path}")


def ns_type(fd: int) -> int:
    """The CLONE_NEW* type of a namespace file (NS_GET_NSTYPE); OSError(ENOTTY) when the
    file is not a namespace."""
    rc = lib.corral_ns_type(fd)
    _check(rc, "ioctl(NS_GET_NSTYPE)")
    return rc


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
    """posix_spawn ``path`` in the directory ``cwd`` (see helpers.c); the child's pid."""
    keep = [ffi.new("char[]", s.encode()) for s in (*argv, *env)]
    cargv = ffi.new("char *[]", keep[:len(argv)] + [ffi.NULL])
    cenv = ffi.new("char *[]", keep[len(argv):] + [ffi.NULL])
    pid = ffi.new("int *")
    rc = lib.corral_spawn_hook(path.encode(), cargv, cenv, stdin_fd, out_fd, cwd.encode(), pid)
    if rc:
        raise OSError(rc, os.strerror(rc))
    return pid[0]
