"""Parsing of the user's network options: subnets and published ports (pure, no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from corral.net.errors import NetworkError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_subnet(text: str, version: int, field: str = "subnet") -> IPNetwork:
    """A network address with a prefix, of IP ``version``, large enough for a gateway and one
    container (an IPv4 /30, an IPv6 /126); errors name ``field``."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise NetworkError(f"{field}: {text!r} is not a network in CIDR form ({err})") from None
    if net.version != version:
        raise NetworkError(f"{field}: {text!r} is not an IPv{version} network")
    if net.num_addresses < 4:
        raise NetworkError(f"{field}: {text} is too small (a gateway and one container need "
                           f"a /{net.max_prefixlen - 2} or larger)")
    return net


def gateway_of(net: IPNetwork) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The bridge's own address: the subnet's first host address."""
    return net.network_address + 1


def host_offsets(net: IPNetwork) -> range:
    """Offsets from the network address that containers may lease: after the gateway, before
    the broadcast address (IPv4) or the last address (IPv6, kept symmetrical)."""
    return range(2, net.num_addresses - 1)


@dataclass(frozen=True)
class PortMapping:
    """``host_port:container_port/proto``: connections to ``host_port`` on any local address
    of the host are forwarded to ``container_port`` of the container."""

    host_port: int
    container_port: int
    protocol: str  # "tcp" or "udp"

    def __str__(self) -> str:
        return f"{self.host_port}:{self.container_port}/{self.protocol}"

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        spec, _, protocol = text.partition("/")
        protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp"):
            raise NetworkError(f"ports: {text!r}: protocol must be tcp or udp")
        host, sep, container = spec.partition(":")
        if not sep:
            raise NetworkError(f"ports: {text!r} is not host_port:container_port[/tcp|udp]")
        return cls(_port(host, text), _port(container, text), protocol)


def _port(value: str, text: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise NetworkError(f"ports: {text!r}: {value!r} is not a port number (1-65535)")
    return int(value)


def parse_ports(items: list[str] | tuple[str, ...] | tuple[PortMapping, ...]) -> tuple[PortMapping, ...]:
    """Every mapping parsed; a host port named twice is an error naming it."""
    mappings = tuple(p if isinstance(p, PortMapping) else PortMapping.parse(p) for p in items)
    seen: set[tuple[int, str]] = set()
    for m in mappings:
        key = (m.host_port, m.protocol)
        if key in seen:
            raise NetworkError(f"ports: host port {m.host_port}/{m.protocol} is given twice")
        seen.add(key)
    return mappings
