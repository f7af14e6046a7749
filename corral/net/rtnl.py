"""Batched rtnetlink requests: pyroute2 encodes the messages, one ``send`` carries them all.

The attach path is latency-bound: pyroute2's ``IPRoute`` runs each request through an
asyncio round trip (~0.3 ms here), while the kernel needs ~20 us for most of them.  So the
hot path builds pyroute2 messages (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``), writes them in one
datagram and reads one ack per request.  Each request is still carried out by the kernel on
its own: a failing one is reported (first failure wins) and the caller undoes the step.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import (RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK,
                                   RTM_NEWROUTE)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSG_ERROR = 2
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
_HEADER = struct.Struct("=IHHII")


class RtnlError(OSError):
    """A request the kernel refused: ``what`` names the request, ``errno`` the reason."""

    def __init__(self, code: int, what: str, detail: str = "") -> None:
        self.what = what
        self.text = f"{what}: {os.strerror(code)}" + (f" ({detail})" if detail else "")
        super().__init__(code, self.text)

    def __str__(self) -> str:
        return self.text


@dataclass
class Request:
    what: str  # for errors: "create veth crX", "add address 10.88.0.2/16"
    msg: object  # a pyroute2 nlmsg with its fields and attrs set
    type: int
    flags: int = NLM_F_REQUEST | NLM_F_ACK


def open_socket(sock: socket.socket | None = None) -> socket.socket:
    """A NETLINK_ROUTE socket (``sock`` if given) that reports the kernel's error text and
    echoes only the header of a failed request."""
    sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.bind((0, 0))
    return sock


class Batch:
    """Sends requests in one datagram over ``sock`` and returns each one's replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = 0

    def run(self, requests: list[Request]) -> list[list[bytes]]:
        """The reply messages (besides the ack) of each request, in order; raises the first
        failure as ``RtnlError`` after reading every ack."""
        data = bytearray()
        first_seq = self._seq + 1
        for req in requests:
            self._seq += 1
            req.msg["header"]["type"] = req.type
            req.msg["header"]["flags"] = req.flags
            req.msg["header"]["sequence_number"] = self._seq
            req.msg.encode()
            data += req.msg.data
        self.sock.send(data)
        replies: list[list[bytes]] = [[] for _ in requests]
        pending = len(requests)
        failure: RtnlError | None = None
        while pending:
            buf = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(buf):
                length, kind, flags, seq, _pid = _HEADER.unpack_from(buf, offset)
                index = seq - first_seq
                if not 0 <= index < len(requests):
                    offset += _align(length)
                    continue  # a reply to an earlier, abandoned batch
                if kind == NLMSG_ERROR:
                    pending -= 1
                    (code,) = struct.unpack_from("=i", buf, offset + _HEADER.size)
                    if code and failure is None:
                        detail = _ext_ack_message(buf, offset, length, flags)
                        failure = RtnlError(-code, requests[index].what, detail)
                else:
                    replies[index].append(bytes(buf[offset:offset + length]))
                offset += _align(length)
        if failure is not None:
            raise failure
        return replies


def _align(length: int) -> int:
    return (length + 3) & ~3


def _ext_ack_message(buf: bytes, offset: int, length: int, flags: int) -> str:
    if not flags & NLM_F_ACK_TLVS:
        return ""
    pos = offset + _HEADER.size + 4 + _HEADER.size  # error code, then the capped header
    end = offset + length
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, pos)
        if alen < 4:
            break
        if atype == NLMSGERR_ATTR_MSG:
            return bytes(buf[pos + 4:pos + alen]).rstrip(b"\0").decode(errors="replace")
        pos += _align(alen)
    return ""


# -- message builders ---------------------------------------------------------------------

def create_veth(host_name: str, peer_name: str, peer_netns_fd: int, master: int,
                mtu: int) -> Request:
    """One request for the whole pair: the host side up, enslaved to ``master``; the peer
    created directly inside the container's namespace, already named.  (The peer cannot be
    brought up by this request: the kernel opens it before the pair is linked, ENOTCONN.)"""
    msg = ifinfmsg()
    msg["index"] = 0
    msg["flags"] = msg["change"] = IFF_UP
    peer = {"index": 0, "flags": 0, "change": 0,
            "attrs": [("IFLA_IFNAME", peer_name), ("IFLA_MTU", mtu),
                      ("IFLA_NET_NS_FD", peer_netns_fd)]}
    msg["attrs"] = [
        ("IFLA_IFNAME", host_name), ("IFLA_MTU", mtu), ("IFLA_MASTER", master),
        ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]}),
        ]}),
    ]
    return Request(f"create veth {host_name}", msg, RTM_NEWLINK,
                   NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)


def delete_link(name: str) -> Request:
    msg = ifinfmsg()
    msg["index"] = 0
    msg["attrs"] = [("IFLA_IFNAME", name)]
    return Request(f"delete link {name}", msg, RTM_DELLINK)


def get_link(name: str) -> Request:
    msg = ifinfmsg()
    msg["index"] = 0
    msg["attrs"] = [("IFLA_IFNAME", name)]
    return Request(f"find link {name}", msg, RTM_GETLINK)


def link_index(reply: bytes) -> int:
    """The ifindex in an RTM_NEWLINK reply (ifinfomsg: family, pad, type, index)."""
    return struct.unpack_from("=i", reply, _HEADER.size + 4)[0]


def set_up(index: int) -> Request:
    msg = ifinfmsg()
    msg["index"] = index
    msg["flags"] = msg["change"] = IFF_UP
    return Request(f"set link {index} up", msg, RTM_NEWLINK)


def add_address(index: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                prefixlen: int) -> Request:
    """IPv6 addresses skip duplicate address detection (the lease is the proof of
    uniqueness; DAD would make the address unusable for a second after start)."""
    msg = ifaddrmsg()
    msg["index"] = index
    msg["prefixlen"] = prefixlen
    msg["scope"] = 0
    if address.version == 4:
        msg["family"] = socket.AF_INET
        net = ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
        msg["attrs"] = [("IFA_LOCAL", str(address)), ("IFA_ADDRESS", str(address)),
                        ("IFA_BROADCAST", str(net.broadcast_address))]
    else:
        msg["family"] = socket.AF_INET6
        msg["flags"] = IFA_F_NODAD
        msg["attrs"] = [("IFA_ADDRESS", str(address))]
    return Request(f"add address {address}/{prefixlen}", msg, RTM_NEWADDR,
                   NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)


def add_default_route(gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Request:
    msg = rtmsg()
    msg["family"] = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    msg["dst_len"] = 0
    msg["table"] = RT_TABLE_MAIN
    msg["proto"] = RTPROT_STATIC
    msg["scope"] = 0
    msg["type"] = RTN_UNICAST
    msg["attrs"] = [("RTA_GATEWAY", str(gateway))]
    return Request(f"add default route via {gateway}", msg, RTM_NEWROUTE,
                   NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
