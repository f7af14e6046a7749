"""``linux.netDevices``: host network devices moved into the container's network namespace.

One rtnetlink request per device, on a plain ``socket`` (pyroute2's import alone costs
~120 ms, and this runs on `corral create`'s path): RTM_NEWLINK on the device's index with
IFLA_NET_NS_FD (the init's namespace) and IFLA_IFNAME (its name there).  The kernel moves
first and renames after, in the new namespace, so a refused rename (the name is taken
there) leaves the device moved under its host name: ``moved`` records each device under the
name it may have there, for ``move_back``.  The kernel closes the device as it moves it
(it arrives down, without its addresses).

Until creation is over the runtime holds a descriptor of the container's namespace, so a
failed create can move the devices it moved back to the runtime's namespace under their
original names (``move_back``) even after the init was killed: the death of a new namespace
would otherwise destroy virtual devices (and return physical ones under their new names),
and a joined one would keep them.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from corral.errors import ConfigError

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
IFLA_IFNAME = 3
IFLA_NET_NS_FD = 28
CLONE_NEWNET = 0x40000000


def field(host_name: str) -> str:
    return f'linux.netDevices["{host_name}"]'


def check_present(devices) -> None:
    """The spec's 'MUST check that it is possible to move': each device exists in the
    runtime's namespace (checked before anything is made for the container)."""
    for dev in devices:
        try:
            socket.if_nametoindex(dev.host_name)
        except OSError:
            raise ConfigError(field(dev.host_name), f"no network device {dev.host_name} in "
                                                    f"the runtime's network namespace") from None


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _set_link(sock: socket.socket, index: int, netns_fd: int, name: str) -> None:
    """RTM_NEWLINK(index): into the namespace of ``netns_fd``, named ``name`` there."""
    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    body = (ifinfo + _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
            + _attr(IFLA_IFNAME, name.encode() + b"\0"))
    sock.send(struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                          1, 0) + body)
    reply = sock.recv(65536)
    _, kind = struct.unpack_from("=IH", reply)
    if kind != NLMSG_ERROR:
        raise OSError(errno.EPROTO, "rtnetlink: no acknowledgement")
    (code,) = struct.unpack_from("=i", reply, 16)
    if code:
        raise OSError(-code, os.strerror(-code))


def _netlink() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_ROUTE)


def open_netns(pid: int) -> int:
    """A descriptor of the init's network namespace: it keeps the namespace (and the devices
    moved into it) alive even if the init dies, until ``move_back`` is done with it."""
    return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def move_in(devices, netns: int, moved: list) -> None:
    """Moves each device into the network namespace ``netns``, appending (name there, host
    name) of each one that may have moved to ``moved`` (for ``move_back``).  Errors name
    the device."""
    with _netlink() as sock:
        for dev in devices:
            index = socket.if_nametoindex(dev.host_name)
            try:
                _set_link(sock, index, netns, dev.name)
            except OSError as exc:
                moved.append((dev.host_name, dev.host_name))  # maybe moved, not renamed
                why = (f"the name {dev.name} is taken in the container's network namespace"
                       if exc.errno == errno.EEXIST else os.strerror(exc.errno).lower())
                raise ConfigError(field(dev.host_name),
                                  f"move {dev.host_name} into the container's network "
                                  f"namespace as {dev.name}: {why}") from None
            moved.append((dev.name, dev.host_name))


def _setns(fd: int) -> None:
    """setns(2) for the calling thread only (a network namespace is per thread; Python 3.11
    has no os.setns)."""
    import ctypes  # only on this failure path: ~15 ms

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _index(name: str) -> int:
    """The device's index in the calling thread's network namespace, 0 if there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def move_back(moved: list, netns: int) -> None:
    """Moves the devices of a failed create back from the namespace ``netns`` into the
    runtime's, under their original names.  A netlink socket opened inside that namespace
    (the thread enters it and comes straight back) acts on the devices there."""
    if not moved:
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns)
        try:
            sock = _netlink()
            indexes = [(host_name, _index(name)) for name, host_name in moved]
        finally:
            _setns(home)
        with sock:
            for host_name, index in indexes:
                if index:  # else it never left (or is gone)
                    _set_link(sock, index, home, host_name)
    finally:
        os.close(home)
    moved.clear()
