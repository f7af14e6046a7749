"""IP address management: one file per leased address, in a directory the caller owns.

Layout of ``directory`` (the engine passes ``<state root>/networks/<name>/``)::

    leases/<IPv4 address>   JSON: container id, hostname, host-side veth, IPv6 address, ports
    ids/<container id>      symlink to the leased address (a fast index, never the truth)
    next                    where the next search starts (a hint: recently freed addresses are
                            handed out last, so stale ARP entries of peers do not bite)

A lease is taken by ``link(2)``-ing a complete temporary file to ``leases/<address>``: the
link fails with EEXIST when the address is taken, so concurrent threads and processes never
get one address twice, and a lease file is never seen half-written.  The files are the
record a restarted daemon reads to clean up (``stale``).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Iterable

from corral.net.addresses import IPNetwork, PortMapping, host_offsets
from corral.net.errors import NetworkError

_ID = re.compile(r"^[\w+-][\w+.-]*$")
_TMP = ".tmp-"


@dataclass(frozen=True)
class Lease:
    """One container's addresses on one network, and what was made for it."""

    container_id: str
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address | None
    ifname: str  # the host side of the veth pair
    hostname: str
    ports: tuple[PortMapping, ...]

    def to_json(self) -> str:
        return json.dumps({
            "container": self.container_id, "address": str(self.address),
            "address6": str(self.address6) if self.address6 else None,
            "ifname": self.ifname, "hostname": self.hostname,
            "ports": [str(p) for p in self.ports],
        })

    @classmethod
    def from_json(cls, text: str) -> Lease:
        raw = json.loads(text)
        return cls(raw["container"], ipaddress.IPv4Address(raw["address"]),
                   ipaddress.IPv6Address(raw["address6"]) if raw["address6"] else None,
                   raw["ifname"], raw["hostname"],
                   tuple(PortMapping.parse(p) for p in raw["ports"]))


def check_container_id(container_id: str) -> None:
    """Ids become file names here: the same rule runc applies to container ids."""
    if not isinstance(container_id, str) or not _ID.match(container_id) or len(container_id) > 1024:
        raise NetworkError(f"container id {container_id!r} is not valid "
                           "(letters, digits, '_', '+', '-', '.'; not starting with '.')")


class Leases:
    """The leases of one network (``subnet`` and optionally ``subnet6``) in ``directory``.

    Safe to use from many threads and processes at once: every change is one atomic
    file-system operation (link, symlink, unlink)."""

    def __init__(self, directory: str, subnet: IPNetwork, subnet6: IPNetwork | None = None) -> None:
        if subnet6 is not None and subnet6.num_addresses < subnet.num_addresses:
            raise NetworkError(f"subnet6: {subnet6} is smaller than subnet {subnet}: each "
                               "container's IPv6 address has the same host part as its IPv4 one")
        self.directory = directory
        self.subnet = subnet
        self.subnet6 = subnet6
        self._leases = os.path.join(directory, "leases")
        self._ids = os.path.join(directory, "ids")
        self._made = False

    # -- taking and giving back ------------------------------------------------------------

    def acquire(self, container_id: str, ifname: str, hostname: str = "",
                ports: tuple[PortMapping, ...] = ()) -> Lease:
        """Lease a free address for ``container_id``; errors when it already has one or the
        subnet is exhausted, leaving no file behind."""
        check_container_id(container_id)
        if not self._made:
            os.makedirs(self._leases, exist_ok=True)
            os.makedirs(self._ids, exist_ok=True)
            self._made = True
        id_link = os.path.join(self._ids, container_id)
        if os.path.lexists(id_link):
            raise NetworkError(f"container {container_id} already has an address on "
                               f"{self.subnet}")
        taken = set(os.listdir(self._leases))
        tmp = os.path.join(self._leases, f"{_TMP}{container_id}-{secrets.token_hex(4)}")
        try:
            for address in self._candidates(taken):
                lease = Lease(container_id, address, self._address6(address), ifname,
                              hostname or container_id, ports)
                _write_file(tmp, lease.to_json())
                path = os.path.join(self._leases, str(address))
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    continue  # another creation won this address: try the next one
                try:
                    os.symlink(str(address), id_link)
                except FileExistsError:
                    os.unlink(path)
                    raise NetworkError(f"container {container_id} already has an address on "
                                       f"{self.subnet}") from None
                self._write_hint(address)
                return lease
            raise NetworkError(f"subnet {self.subnet} is exhausted "
                               f"({len(host_offsets(self.subnet))} addresses leased)")
        finally:
            _unlink(tmp)

    def release(self, container_id: str) -> Lease | None:
        """Give back the container's address (no error if it had none).  The index link goes
        first: a crash in between leaves a lease that ``stale`` finds, never a link that
        blocks the id."""
        lease = self.get(container_id)
        _unlink(os.path.join(self._ids, container_id))
        if lease is not None:
            _unlink(os.path.join(self._leases, str(lease.address)))
        return lease

    # -- reading --------------------------------------------------------------------------

    def get(self, container_id: str) -> Lease | None:
        check_container_id(container_id)
        try:
            address = os.readlink(os.path.join(self._ids, container_id))
        except FileNotFoundError:
            return self._scan_for(container_id)
        lease = self._read(address)
        if lease is None or lease.container_id != container_id:
            return self._scan_for(container_id)
        return lease

    def all(self) -> list[Lease]:
        """Every lease, ordered by address."""
        leases = []
        for name in _listdir(self._leases):
            if not name.startswith(_TMP):
                lease = self._read(name)
                if lease is not None:
                    leases.append(lease)
        return sorted(leases, key=lambda lease: lease.address)

    def stale(self, alive_ids: Iterable[str]) -> list[Lease]:
        """Leases of containers not in ``alive_ids``.  Also removes what a crash mid-lease
        can leave: temporary files and index links of dead containers."""
        alive = set(alive_ids)
        for name in _listdir(self._leases):
            if name.startswith(_TMP) and name[len(_TMP):].rpartition("-")[0] not in alive:
                _unlink(os.path.join(self._leases, name))
        leased = {lease.container_id: lease for lease in self.all()}
        for name in _listdir(self._ids):
            if name not in alive and name not in leased:
                _unlink(os.path.join(self._ids, name))
        return [lease for cid, lease in leased.items() if cid not in alive]

    # -- helpers --------------------------------------------------------------------------

    def _candidates(self, taken: set[str]):
        offsets = host_offsets(self.subnet)
        start = min(max(self._read_hint(), offsets.start), offsets.stop - 1)
        base = self.subnet.network_address
        for offset in itertools.chain(range(start, offsets.stop), range(offsets.start, start)):
            address = base + offset
            if str(address) not in taken:
                yield address

    def _address6(self, address: ipaddress.IPv4Address) -> ipaddress.IPv6Address | None:
        if self.subnet6 is None:
            return None
        return self.subnet6.network_address + (int(address) - int(self.subnet.network_address))

    def _read_hint(self) -> int:
        try:
            with open(os.path.join(self.directory, "next")) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_hint(self, address: ipaddress.IPv4Address) -> None:
        # Written in place: a reader that sees it torn falls back to the subnet's start.
        offset = int(address) - int(self.subnet.network_address) + 1
        _write_file(os.path.join(self.directory, "next"), f"{offset:<12}")

    def _read(self, address: str) -> Lease | None:
        try:
            with open(os.path.join(self._leases, address)) as f:
                return Lease.from_json(f.read())
        except FileNotFoundError:
            return None

    def _scan_for(self, container_id: str) -> Lease | None:
        return next((lease for lease in self.all() if lease.container_id == container_id), None)


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return []
        raise
