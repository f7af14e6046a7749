"""Published ports and egress NAT in an nftables table of corral's own, through libnftables.

libnftables is used through cffi's ABI mode (no compiler, no ``nft`` binary).  All of corral's
rules live in one table (``inet corral`` by default), made in one transaction the first time
it is needed and deleted when nothing is left in it; corral never touches any other table.
The rules never change after that: what varies is data, in maps and sets::

    map ports_tcp / ports_udp  { host port : container address . container port }
    set masq4 / masq6          { subnets whose egress is masqueraded }

so publishing is ``create element`` (refused by the kernel, atomically, when the port is
already published) and removing is ``delete element``.  Traffic to a local address of the
host (``fib daddr type local``) is DNATed in ``prerouting`` (from outside) and ``output``
(from the host itself, loopback included); connections from 127.0.0.0/8 that were DNATed
are masqueraded so the container can answer them, which also needs ``route_localnet`` on the
bridge (the kernel otherwise drops a loopback source on a non-loopback device).  Because
route_localnet would also let a container reach the host's 127.0.0.1 services through the
bridge, the ``guard`` chain drops any 127.0.0.0/8 destination that did not arrive on lo.
"""

from __future__ import annotations

import ipaddress
import json
import threading

from corral.net.addresses import IPNetwork, PortMapping
from corral.net.errors import NetworkError

_CDEF = """
struct nft_ctx;
struct nft_ctx *nft_ctx_new(uint32_t flags);
void nft_ctx_free(struct nft_ctx *ctx);
int nft_ctx_buffer_output(struct nft_ctx *ctx);
const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx);
int nft_ctx_buffer_error(struct nft_ctx *ctx);
const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx);
int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf);
void nft_ctx_output_set_flags(struct nft_ctx *ctx, unsigned int flags);
"""
NFT_CTX_OUTPUT_JSON = 1 << 4
_LIBRARY = "libnftables.so.1"

_ffi = None
_lib = None
_load_lock = threading.Lock()


def _load():
    global _ffi, _lib
    with _load_lock:
        if _lib is None:
            import cffi

            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            try:
                _lib = ffi.dlopen(_LIBRARY)
            except OSError as err:
                raise NetworkError(f"published ports and NAT need {_LIBRARY} (Debian package "
                                   f"libnftables1): {err}") from None
            _ffi = ffi
    return _ffi, _lib


class Nft:
    """One libnftables context.  Its netlink socket belongs to the network namespace of the
    thread that runs the first command: use it from one thread only."""

    def __init__(self) -> None:
        self._ffi, self._lib = _load()
        ctx = self._lib.nft_ctx_new(0)
        if ctx == self._ffi.NULL:
            raise NetworkError("nftables: cannot create a libnftables context")
        self._ctx = self._ffi.gc(ctx, self._lib.nft_ctx_free)
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)
        self._lib.nft_ctx_output_set_flags(self._ctx, NFT_CTX_OUTPUT_JSON)

    def run(self, commands: str) -> tuple[int, str, str]:
        """(return code, output, error text) of ``commands``, one transaction."""
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = self._ffi.string(self._lib.nft_ctx_get_output_buffer(self._ctx)).decode()
        err = self._ffi.string(self._lib.nft_ctx_get_error_buffer(self._ctx)).decode()
        return rc, out, err

    def check(self, commands: str, what: str) -> str:
        rc, out, err = self.run(commands)
        if rc != 0:
            raise NetworkError(f"{what}: nftables: {_first_line(err)}")
        return out

    def close(self) -> None:
        self._ctx = None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "failed"


class PortTable:
    """corral's nftables table: published ports and masqueraded subnets."""

    def __init__(self, nft: Nft, name: str = "corral") -> None:
        self.nft = nft
        self.name = name
        self.ref = f"inet {name}"

    # -- the table itself ----------------------------------------------------------------

    def exists(self) -> bool:
        return self.nft.run(f"list table {self.ref}")[0] == 0

    def ensure(self) -> None:
        """Create the table with its maps, sets, chains and rules, in one transaction; a
        table that exists is complete (it was made the same way)."""
        if self.exists():
            return
        t = self.ref
        lookups = []
        for proto in ("tcp", "udp"):
            lookups.append(f"fib daddr type local dnat ip to {proto} dport map @ports_{proto}")
        commands = [
            f"add table {t}",
            f"add map {t} ports_tcp {{ type inet_service : ipv4_addr . inet_service; }}",
            f"add map {t} ports_udp {{ type inet_service : ipv4_addr . inet_service; }}",
            f"add set {t} masq4 {{ type ipv4_addr; flags interval; }}",
            f"add set {t} masq6 {{ type ipv6_addr; flags interval; }}",
            f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
            f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
            f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
            *(f"add rule {t} {chain} {rule}" for chain in ("prerouting", "output") for rule in lookups),
            f"add chain {t} guard {{ type filter hook prerouting priority raw; policy accept; }}",
            f"add rule {t} guard iifname != \"lo\" ip daddr 127.0.0.0/8 drop",
            f"add rule {t} postrouting ip saddr 127.0.0.0/8 ct status dnat masquerade",
            f"add rule {t} postrouting ip saddr @masq4 masquerade",
            f"add rule {t} postrouting ip6 saddr @masq6 masquerade",
        ]
        rc, _out, err = self.nft.run("\n".join(commands))
        if rc != 0 and not self.exists():  # lost a race with another creator: fine
            raise NetworkError(f"nftables table {t}: {_first_line(err)}")

    def drop_if_empty(self) -> bool:
        """Delete the table when no port and no subnet is left in it."""
        if not self.exists():
            return False
        if self.published() or self.masqueraded():
            return False
        self.nft.check(f"delete table {self.ref}", f"delete nftables table {self.ref}")
        return True

    # -- published ports -----------------------------------------------------------------

    def publish(self, address: ipaddress.IPv4Address, ports: tuple[PortMapping, ...]) -> None:
        """Publish every mapping to ``address``, all or none: a port already published is an
        error naming it and who has it."""
        if not ports:
            return
        self.ensure()
        commands = "\n".join(
            f"create element {self.ref} ports_{p.protocol} "
            f"{{ {p.host_port} : {address} . {p.container_port} }}" for p in ports)
        rc, _out, err = self.nft.run(commands)
        if rc == 0:
            return
        current = self.published()
        for p in ports:
            owner = current.get((p.host_port, p.protocol))
            if owner is not None:
                raise NetworkError(f"ports: host port {p.host_port}/{p.protocol} is already "
                                   f"published (to {owner[0]}:{owner[1]})")
        raise NetworkError(f"ports: nftables: {_first_line(err)}")

    def unpublish(self, address: ipaddress.IPv4Address, ports: tuple[PortMapping, ...]) -> None:
        """Remove the mappings that still point at ``address`` (a port published since by
        another container is left alone)."""
        if not ports or not self.exists():
            return
        current = self.published()
        mine = [p for p in ports if current.get((p.host_port, p.protocol))
                == (address, p.container_port)]
        if mine:
            self.nft.check("\n".join(
                f"delete element {self.ref} ports_{p.protocol} {{ {p.host_port} }}"
                for p in mine), f"unpublish ports of {address}")

    def published(self) -> dict[tuple[int, str], tuple[ipaddress.IPv4Address, int]]:
        """{(host port, protocol): (container address, container port)}."""
        found = {}
        for proto in ("tcp", "udp"):
            for item in self._elements(f"map {self.ref} ports_{proto}", "map"):
                port, value = item
                address, cport = value["concat"]
                found[(int(port), proto)] = (ipaddress.IPv4Address(address), int(cport))
        return found

    # -- egress NAT ----------------------------------------------------------------------

    def masquerade(self, subnet: IPNetwork) -> None:
        self.ensure()
        self.nft.check(f"add element {self.ref} masq{subnet.version} {{ {subnet} }}",
                       f"masquerade {subnet}")

    def unmasquerade(self, subnet: IPNetwork) -> None:
        if subnet in self.masqueraded():
            self.nft.check(f"delete element {self.ref} masq{subnet.version} {{ {subnet} }}",
                           f"stop masquerading {subnet}")

    def masqueraded(self) -> list[IPNetwork]:
        nets = []
        for version in (4, 6):
            for item in self._elements(f"set {self.ref} masq{version}", "set"):
                if isinstance(item, dict) and "prefix" in item:
                    nets.append(ipaddress.ip_network(
                        f"{item['prefix']['addr']}/{item['prefix']['len']}"))
                else:
                    nets.append(ipaddress.ip_network(item))
        return nets

    def _elements(self, what: str, key: str) -> list:
        rc, out, _err = self.nft.run(f"list {what}")
        if rc != 0:
            return []
        for obj in json.loads(out)["nftables"]:
            if key in obj:
                return obj[key].get("elem", [])
        return []
