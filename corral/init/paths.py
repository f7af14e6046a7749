"""Paths from config.json, resolved inside the container's rootfs.

A rootfs is untrusted data: any of its components may be a symlink, absolute (``/etc``) or
relative (``../../..``), meant to send a mount or a ``mknod`` out onto the host.  Every path
from the config therefore goes through ``resolve_in_root``, which walks the path one component
at a time the way the kernel would if ``root`` were ``/`` (the algorithm of Go's
filepath-securejoin): symlinks are read and resolved relative to ``root``, ``..`` stops at
``root``.  The result is a host path under ``root`` whose existing components are no symlinks.

Resolution and use are two steps, so a path could change in between; ``open_in_root`` closes
that gap for mounts: it opens the resolved path with ``O_PATH|O_NOFOLLOW`` and checks, through
``/proc/self/fd``, where the descriptor really points before anything is mounted on it.
"""

from __future__ import annotations

import errno
import os
import stat

# The kernel's limit on symlinks followed in one lookup (MAXSYMLINKS is 40; securejoin 255).
MAX_SYMLINKS = 255

_O_PATH_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def clean_root(root: str) -> str:
    """``root`` without trailing slashes; ``"/"`` becomes ``""`` so ``root + "/x"`` works."""
    if not root.startswith("/"):
        raise ValueError(f"rootfs must be an absolute path: {root!r}")
    return os.path.normpath(root).rstrip("/")


def clean_path(path: str) -> str:
    """A container path made absolute and lexically clean (``/dev/../x`` -> ``/x``)."""
    cleaned = os.path.normpath("/" + path)
    # normpath keeps a leading "//" (POSIX allows it to mean something else); we do not.
    return "/" + cleaned.lstrip("/")


def is_within(root: str, host_path: str) -> bool:
    """True when ``host_path`` is ``root`` or below it (both already clean)."""
    root = clean_root(root)
    return root == "" or host_path == root or host_path.startswith(root + "/")


def resolve_in_root(root: str, path: str) -> str:
    """The host path that ``path`` names when ``root`` is the root directory.

    Components that do not exist yet are kept as written (so the result can be created).
    Raises ``OSError(ELOOP)`` after ``MAX_SYMLINKS`` symlinks, like the kernel does.
    """
    root = clean_root(root)
    parts: list[str] = []  # resolved components below root; none of them is a symlink
    todo = path.split("/")
    todo.reverse()  # a stack: the next component is at the end
    links = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            # Physical "..": the parent of what we resolved so far, never above root.
            if parts:
                parts.pop()
            continue
        candidate = root + "/" + "/".join(parts + [name])
        target = _symlink_target(candidate)
        if target is None:
            parts.append(name)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), root + "/" + path.lstrip("/"))
        if target.startswith("/"):
            parts = []  # an absolute link starts again from root, not from the host's /
        pieces = target.split("/")
        pieces.reverse()
        todo.extend(pieces)
    return root + "/" + "/".join(parts) if parts else (root or "/")


def _symlink_target(host_path: str) -> str | None:
    """The target of ``host_path`` if it is a symlink; None if it is anything else or missing."""
    try:
        st = os.lstat(host_path)
    except (FileNotFoundError, NotADirectoryError):
        # Missing (or below a non-directory): kept literally; creating it will report ENOTDIR.
        return None
    if not stat.S_ISLNK(st.st_mode):
        return None
    return os.readlink(host_path)


def mkdir_in_root(root: str, path: str, mode: int = 0o755) -> str:
    """Resolve ``path`` inside ``root`` and create it and its parents as directories.

    Returns the resolved host path.  An existing non-directory raises ``FileExistsError``.
    """
    target = resolve_in_root(root, path)
    if not os.path.isdir(target):
        os.makedirs(target, mode, exist_ok=True)
    return target


def create_file_in_root(root: str, path: str, mode: int = 0o644) -> str:
    """Resolve ``path`` inside ``root``; create its parent directories and, if nothing is
    there yet, an empty regular file (the mount point for a bind mount of a file).

    Returns the resolved host path.  Something already there (of any type) is kept.
    """
    target = resolve_in_root(root, path)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)
    try:
        # O_NOFOLLOW: a symlink planted here since resolving is an error, not followed.
        fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except IsADirectoryError:
        return target  # an existing directory: mounting a file on it will fail clearly
    os.close(fd)
    return target


def open_in_root(root: str, host_path: str) -> int:
    """An ``O_PATH`` descriptor of ``host_path`` (already resolved), checked to be in ``root``.

    Mounting on ``/proc/self/fd/N`` then acts on exactly the object that was checked, even if
    the path is swapped for a symlink meanwhile.  Raises ``OSError(EXDEV)`` when the object
    is outside ``root``.
    """
    fd = os.open(host_path, _O_PATH_NOFOLLOW)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "mount target became a symlink", host_path)
        real = fd_path(fd)
        if real is not None and not is_within(root, real):
            raise OSError(errno.EXDEV, f"resolves outside the rootfs to {real}", host_path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> str | None:
    """Where ``fd`` points, from ``/proc/self/fd``; None when /proc is not mounted."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return None


def procfd(fd: int, fallback: str) -> str:
    """The path through which mount(2) reaches ``fd``; ``fallback`` without a /proc."""
    link = f"/proc/self/fd/{fd}"
    return link if os.path.lexists(link) else fallback


def reason(err: OSError) -> str:
    """The part of an OSError worth showing after our own "mount X on Y: " prefix.

    The nsenter wrappers put their own call (with /proc/self/fd paths) in front of the
    kernel's message; a message of ours (``resolves outside the rootfs ...``) is kept whole.
    """
    text = err.strerror or str(err)
    if err.errno and text.endswith(os.strerror(err.errno)):
        return os.strerror(err.errno)
    return text
