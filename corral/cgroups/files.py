"""Reading and writing cgroup files: the one copy of these helpers for ``corral.cgroups``.

A cgroup file parses each write(2) as one whole value, so a value is written with exactly
one write on a fresh descriptor. ``read``/``write`` raise ``CgroupError`` naming the file;
``read_raw``/``write_raw`` let ``OSError`` through for callers that name a config field
instead (``resources.py``); ``read_or_none`` is for optional files (``stats.py``).

Only ``os`` and corral's own errors: imported by every ``corral create``.
"""

from __future__ import annotations

import os

from ..errors import CgroupError


def fail(op: str, path: str, e: OSError) -> CgroupError:
    """``"<op> <path>: <strerror>"``, one line."""
    return CgroupError(f"{op} {path}: {os.strerror(e.errno) if e.errno else e}")


def read_raw(path: str) -> str:
    """The whole file, through os.open/os.read: a buffered ``open()`` adds an fstat, an
    isatty ioctl and an lseek to each of the supervisor's many small cgroup reads."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def write_raw(path: str, data: str) -> None:
    """One write(2) of ``data``; OSError as the kernel reports it."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def write_each(path: str, values) -> None:
    """Several values into one file (devices.allow), each its own write(2) on one descriptor:
    a cgroup file parses each write as one value.  CgroupError naming the file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise fail("write", path, e) from None
    try:
        for value in values:
            try:
                os.write(fd, value.encode())
            except OSError as e:
                raise fail(f"write {value!r} to", path, e) from None
    finally:
        os.close(fd)


def read(path: str) -> str:
    try:
        return read_raw(path)
    except OSError as e:
        raise fail("read", path, e) from None


def write(path: str, data: str) -> None:
    try:
        write_raw(path, data)
    except OSError as e:
        raise fail("write", path, e) from None


def read_or_none(path: str) -> str | None:
    """The file's text, or None if it is missing or unreadable."""
    try:
        return read_raw(path)
    except OSError:
        return None
