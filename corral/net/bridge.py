"""The host side of a bridge network: the bridge, its gateway addresses, the route check.

These are the slow, once-per-network steps: they go through pyroute2's ``IPRoute`` (the
per-container hot path is in ``rtnl``).  Every function runs in the calling thread's network
namespace, which ``network.BridgeNetwork`` keeps on the host's.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from corral.net.addresses import IPNetwork, gateway_of
from corral.net.errors import NetworkError
from corral.net.rtnl import IFA_F_NODAD

RTN_BROADCAST = 3
RTN_ANYCAST = 4
RTN_MULTICAST = 5


@dataclass(frozen=True)
class Bridge:
    name: str
    index: int
    mtu: int


def find_link(ipr: IPRoute, name: str):
    found = ipr.link_lookup(ifname=name)
    return ipr.link("get", index=found[0])[0] if found else None


def ensure_bridge(ipr: IPRoute, name: str, subnet: IPNetwork, subnet6: IPNetwork | None,
                  mtu: int | None = None) -> Bridge:
    """The bridge ``name`` up, with the subnets' gateway addresses: made (after checking the
    subnets against the routes here) when missing, checked when it exists.  A failure after
    the bridge was made deletes it."""
    link = find_link(ipr, name)
    made = False
    if link is None:
        for net in filter(None, (subnet, subnet6)):
            check_overlap(ipr, net, exclude_index=None)
        _create(ipr, name, mtu)
        link = find_link(ipr, name)
        made = True
    elif _kind(link) != "bridge":
        raise NetworkError(f"bridge: {name} exists and is not a bridge "
                           f"(it is a {_kind(link) or 'plain device'})")
    index = link["index"]
    try:
        for net in filter(None, (subnet, subnet6)):
            _ensure_gateway(ipr, name, index, net)
        if mtu is not None and link.get("mtu") != mtu:
            ipr.link("set", index=index, mtu=mtu)
        ipr.link("set", index=index, state="up")
        return Bridge(name, index, ipr.link("get", index=index)[0].get("mtu"))
    except BaseException:
        if made:
            remove_bridge(ipr, name)
        raise


def remove_bridge(ipr: IPRoute, name: str) -> bool:
    """Delete the bridge (its routes go with it); False if there was none."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as err:
        if err.code != 19:  # ENODEV: someone else deleted it
            raise NetworkError(f"bridge {name}: cannot delete: {err.args[1]}") from None
    return True


def check_overlap(ipr: IPRoute, subnet: IPNetwork, exclude_index: int | None) -> None:
    """Refuse a subnet that overlaps a route of this namespace (any table; default routes
    and routes through ``exclude_index``, the network's own bridge, aside)."""
    family = socket.AF_INET if subnet.version == 4 else socket.AF_INET6
    names = None
    for route in ipr.route("dump", family=family):
        if route["dst_len"] == 0 or route["type"] in (RTN_BROADCAST, RTN_ANYCAST, RTN_MULTICAST):
            continue
        oif = route.get("oif")
        if exclude_index is not None and oif == exclude_index:
            continue
        dst = ipaddress.ip_network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
        if dst.overlaps(subnet):
            if names is None:
                names = {link["index"]: link.get("ifname") for link in ipr.link("dump")}
            where = f"on dev {names.get(oif, oif)}" if oif else f"(type {route['type']})"
            raise NetworkError(f"subnet {subnet} overlaps route {dst} {where}")


def write_sysctl(path: str, value: str) -> None:
    """Write ``/proc/sys/net/...`` as seen by the calling thread's network namespace."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as err:
        raise NetworkError(f"cannot set {path} to {value}: {err.strerror}") from None


def _create(ipr: IPRoute, name: str, mtu: int | None) -> None:
    # A fixed MAC: a bridge left to pick its own takes its ports' lowest one, which changes
    # as containers come and go and makes peers' ARP entries stale.
    mac = bytearray(secrets.token_bytes(6))
    mac[0] = (mac[0] & 0xFE) | 0x02  # unicast, locally administered
    spec = {"ifname": name, "kind": "bridge", "address": ":".join(f"{b:02x}" for b in mac)}
    if mtu is not None:
        spec["mtu"] = mtu
    try:
        ipr.link("add", **spec)
    except NetlinkError as err:
        if err.code != 17:  # EEXIST: made by a concurrent creator, checked by the caller
            raise NetworkError(f"bridge {name}: cannot create: {err.args[1]}") from None


def _kind(link) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def _ensure_gateway(ipr: IPRoute, name: str, index: int, net: IPNetwork) -> None:
    gateway = gateway_of(net)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    have = [(ipaddress.ip_address(a.get("address")), a["prefixlen"])
            for a in ipr.addr("dump", index=index, family=family)
            if not ipaddress.ip_address(a.get("address")).is_link_local]
    if (gateway, net.prefixlen) in have:
        return
    if have:
        shown = ", ".join(f"{a}/{p}" for a, p in have)
        raise NetworkError(f"bridge {name} exists with address {shown}, "
                           f"not {gateway}/{net.prefixlen}")
    check_overlap(ipr, net, exclude_index=index)
    extra = {"flags": IFA_F_NODAD} if net.version == 6 else {}
    try:
        ipr.addr("add", index=index, address=str(gateway), prefixlen=net.prefixlen, **extra)
    except NetlinkError as err:
        raise NetworkError(f"bridge {name}: cannot add {gateway}/{net.prefixlen}: "
                           f"{err.args[1]}") from None
