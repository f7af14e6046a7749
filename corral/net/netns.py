"""Network namespaces by descriptor: open and check one, make a socket inside one.

``setns(CLONE_NEWNET)`` changes only the calling thread, and a socket stays in the namespace
it was created in: so a thread can step into a container's namespace, create a netlink socket
and step back, with no process forked (pyroute2's own netns support forks one per socket).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket

from corral.net.errors import NetworkError

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def open_netns(netns: str | int, field: str = "netns") -> int:
    """A new descriptor (the caller closes it) for ``netns``, a path such as
    ``/proc/<pid>/ns/net`` or an open descriptor, checked to be a network namespace."""
    try:
        fd = (os.open(netns, os.O_RDONLY | os.O_CLOEXEC) if isinstance(netns, str)
              else fcntl.fcntl(netns, fcntl.F_DUPFD_CLOEXEC, 0))
    except OSError as err:
        raise NetworkError(f"{field}: cannot open {netns!r}: {err.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.ENOTTY, errno.EINVAL):
            raise NetworkError(f"{field}: {netns!r} is not a namespace") from None
        raise
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise NetworkError(f"{field}: {netns!r} is not a network namespace")
    return fd


def current_netns() -> int:
    """A descriptor for the calling thread's own network namespace."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class NamespaceLost(OSError):
    """The thread could not return to its own namespace: it must not be used again."""


def netlink_socket_in(ns_fd: int, home_fd: int) -> socket.socket:
    """A NETLINK_ROUTE socket in namespace ``ns_fd``; the calling thread, which must be in
    ``home_fd``, is back there on return (or ``NamespaceLost`` is raised)."""
    setns(ns_fd)
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_ROUTE)
    finally:
        try:
            setns(home_fd)
        except OSError as err:
            raise NamespaceLost(err.errno, f"cannot return to the host namespace: {err}") from None
