"""/etc/hosts and /etc/resolv.conf for a job, written as files to bind-mount into it."""

from __future__ import annotations

import ipaddress
import os
from typing import Iterable, Mapping

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def hosts_content(hostname: str, addresses: Iterable[Address],
                  peers: Mapping[str, Iterable[Address]] | None = None) -> str:
    """The loopback names, the job's own name on each of its addresses (on 127.0.1.1 when it
    has none, as Debian does), then each peer's name on its addresses."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    own = list(addresses)
    for address in own or [ipaddress.IPv4Address("127.0.1.1")]:
        lines.append(f"{address}\t{hostname}")
    for name, peer_addresses in sorted((peers or {}).items()):
        if name != hostname:
            lines.extend(f"{address}\t{name}" for address in peer_addresses)
    return "\n".join(lines) + "\n"


def resolv_content(nameservers: Iterable[str] | None = None, search: Iterable[str] | None = None,
                   host_resolv: str = "/etc/resolv.conf") -> str:
    """Given nameservers, or else the host's, less loopback ones (127.0.0.53 and the like
    answer in the host's namespace only, not in the job's); the host's search and options
    lines are kept unless ``search`` is given."""
    host_servers, host_search, host_options = _read_resolv(host_resolv)
    servers = list(nameservers) if nameservers is not None else [
        s for s in host_servers if not ipaddress.ip_address(s.split("%")[0]).is_loopback]
    domains = list(search) if search is not None else host_search
    lines = [f"nameserver {s}" for s in servers]
    if domains:
        lines.append("search " + " ".join(domains))
    lines.extend(f"options {o}" for o in host_options)
    return "\n".join(lines) + "\n" if lines else ""


def _read_resolv(path: str) -> tuple[list[str], list[str], list[str]]:
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return servers, search, options
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            try:
                ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options.append(" ".join(words[1:]))
    return servers, search, options


def write_names(directory: str, hostname: str, addresses: Iterable[Address],
                peers: Mapping[str, Iterable[Address]] | None = None,
                nameservers: Iterable[str] | None = None,
                search: Iterable[str] | None = None) -> tuple[str, str]:
    """Write ``<directory>/hosts`` and ``<directory>/resolv.conf``; returns their paths.

    An existing file is rewritten in place, not replaced: a bind mount pins the inode, so
    rewriting is how a running job sees a refreshed peer list."""
    os.makedirs(directory, exist_ok=True)
    hosts = os.path.join(directory, "hosts")
    resolv = os.path.join(directory, "resolv.conf")
    _write(hosts, hosts_content(hostname, addresses, peers))
    _write(resolv, resolv_content(nameservers, search))
    return hosts, resolv


def write_hosts(directory: str, hostname: str, addresses: Iterable[Address],
                peers: Mapping[str, Iterable[Address]] | None = None) -> str:
    """Rewrite ``<directory>/hosts`` only (in place when it exists): what changes once a job
    has its address or its peers change; its resolv.conf does not depend on either, so the
    engine's attach leaves the one ``write_names`` made alone."""
    os.makedirs(directory, exist_ok=True)
    hosts = os.path.join(directory, "hosts")
    _write(hosts, hosts_content(hostname, addresses, peers))
    return hosts


def _write(path: str, text: str) -> None:
    if os.path.exists(path):
        with open(path, "r+") as f:
            f.write(text)
            f.truncate()
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
