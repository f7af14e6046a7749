"""``BridgeNetwork``: a bridge on the host, a veth pair and a leased address per container.

Every netlink and nftables operation of one network runs on one worker thread that lives in
the host's network namespace (``host_netns``, or the namespace of the thread that made the
object).  That thread keeps one pyroute2 ``IPRoute`` and one libnftables context open, and
can step into a container's namespace for the instant it takes to open a netlink socket
there (``setns`` is per-thread): no process is forked per container.  The public methods are
blocking and thread-safe; a trio caller runs them with ``trio.to_thread.run_sync``.

Attaching a container (``attach``), each step undone if a later one fails:
  1. lease an address (``leases``): the record a restarted daemon cleans up from;
  2. one netlink request: the veth pair, host side up in the bridge, the peer created
     directly in the container's namespace as ``eth0`` with the bridge's MTU;
  3. two batches in the container's namespace: loopback up and find eth0; eth0 up, the
     addresses, the default routes;
  4. published ports, as elements of corral's nftables maps (``nft``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from typing import Callable, Iterable, TypeVar

from corral.net import bridge as bridges
from corral.net import netns as ns
from corral.net import rtnl
from corral.net.addresses import PortMapping, gateway_of, parse_ports, parse_subnet
from corral.net.errors import NetworkError
from corral.net.leases import Lease, Leases, check_container_id

T = TypeVar("T")
CONTAINER_IFNAME = "eth0"
_BRIDGE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
ENODEV = 19


@dataclass(frozen=True)
class Attachment:
    """What a container got on a network: for its /etc/hosts, its record and the user."""

    network: str
    container_id: str
    hostname: str
    address: ipaddress.IPv4Interface
    address6: ipaddress.IPv6Interface | None
    gateway: ipaddress.IPv4Address
    gateway6: ipaddress.IPv6Address | None
    ifname: str  # host side of the veth pair; ``eth0`` inside
    mtu: int
    ports: tuple[PortMapping, ...]


VETH_GRACE = 1.0  # seconds detach waits for the kernel to remove a veth with its namespace
VETH_POLL = 0.005


class BridgeNetwork:
    """One bridge network.  ``state_dir`` holds its leases (the engine passes
    ``<state root>/networks/<name>/``); ``subnet`` is IPv4 CIDR, ``subnet6`` optional IPv6;
    ``nat`` masquerades the containers' traffic leaving through other interfaces."""

    def __init__(self, name: str, state_dir: str, subnet: str, subnet6: str | None = None, *,
                 bridge: str = "corral0", nat: bool = False, mtu: int | None = None,
                 host_netns: str | int | None = None, table: str = "corral") -> None:
        if not _BRIDGE_NAME.match(bridge):
            raise NetworkError(f"bridge: {bridge!r} is not a valid interface name "
                               "(1-15 letters, digits, '_', '.', '-')")
        if mtu is not None and not 68 <= mtu <= 65535:
            raise NetworkError(f"mtu: {mtu} is out of range (68-65535)")
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", table):
            raise NetworkError(f"table: {table!r} is not a valid nftables table name")
        self.name = name
        self.bridge_name = bridge
        self.subnet = parse_subnet(subnet, 4, "subnet")
        self.subnet6 = parse_subnet(subnet6, 6, "subnet6") if subnet6 else None
        self.nat = nat
        self.mtu = mtu
        self.table_name = table
        self.leases = Leases(state_dir, self.subnet, self.subnet6)
        self._bridge: bridges.Bridge | None = None
        self._host_fd = ns.open_netns(host_netns, "host_netns") if host_netns is not None else None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"corral-net-{name}")
        self._broken: str | None = None
        self._lock = threading.Lock()
        try:
            self._run(self._start)
        except BaseException:
            self._worker.shutdown()
            if self._host_fd is not None:
                os.close(self._host_fd)
            raise

    # -- public API (blocking; thread-safe) ------------------------------------------------

    def ensure(self) -> None:
        """Make (or check) the bridge, its addresses and, with ``nat``, the masquerading."""
        self._run(self._ensure)

    def attach(self, container_id: str, netns: str | int, ports: Iterable[str | PortMapping] = (),
               hostname: str = "") -> Attachment:
        """Connect the container whose network namespace is ``netns`` (a path such as
        ``/proc/<pid>/ns/net``, or a descriptor) and publish ``ports``
        (``host_port:container_port/tcp|udp``).  On any error nothing is left behind."""
        return self.attach_start(container_id, netns, ports, hostname).result()

    def attach_start(self, container_id: str, netns: str | int,
                     ports: Iterable[str | PortMapping] = (), hostname: str = "") -> Future:
        """``attach`` begun on the worker thread: its ``Future`` gives the ``Attachment``
        (or raises its error).  The namespace is opened (and checked) before this returns,
        so the caller may let its process go on; a ``detach`` called meanwhile runs after
        it on the same thread, but finds the lease only once the attach has taken it: wait
        for the future first."""
        check_container_id(container_id)
        mappings = parse_ports(tuple(ports))
        fd = ns.open_netns(netns, "netns")
        try:
            return self._submit(self._attach_closing, container_id, fd, mappings,
                                hostname or container_id)
        except BaseException:
            os.close(fd)
            raise

    def detach(self, container_id: str, grace: float = VETH_GRACE) -> bool:
        """Remove the container's veth, published ports and lease (False if it had none).
        Safe to call again, and after the container's namespace is gone.

        The veth goes with the container's network namespace: the kernel removes the pair
        when it cleans the namespace up, in its own worker, batched with others.  An
        explicit delete costs the kernel an RCU grace period (~20 ms here) in the middle of
        the next container's start (a cgroup v1 join waits for one too), so this waits up to
        ``grace`` seconds for the kernel first, polling on the worker between other work,
        and deletes the veth itself only if something still holds the namespace.  The lease
        is freed only once the veth is gone: its address is never handed out while the old
        interface lives."""
        lease = self.leases.get(container_id)
        if lease is None:
            return False
        self._run(self._unpublish, lease)
        deadline = time.monotonic() + grace
        while self._run(self._link_exists, lease.ifname) and time.monotonic() < deadline:
            time.sleep(VETH_POLL)
        self._run(self._detach, lease, True)
        return True

    def reclaim(self, alive_ids: Iterable[str]) -> list[str]:
        """Detach every container that has a lease but is not in ``alive_ids`` (what a daemon
        killed mid-create leaves); returns their ids."""
        stale = self.leases.stale(alive_ids)
        for lease in stale:
            self._run(self._detach, lease)
        return [lease.container_id for lease in stale]

    def peers(self) -> dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
        """{hostname: addresses} of every container on the network, for /etc/hosts."""
        return {lease.hostname: [a for a in (lease.address, lease.address6) if a]
                for lease in self.leases.all()}

    def remove(self, force: bool = False) -> None:
        """Delete the bridge and corral's nftables entries for this network (and the table when
        nothing else is in it).  Containers still attached are an error unless ``force``,
        which detaches them first."""
        attached = self.leases.all()
        if attached and not force:
            raise NetworkError(f"network {self.name} still has {len(attached)} container(s) "
                               f"attached ({', '.join(a.container_id for a in attached[:5])})")
        for lease in attached:
            self._run(self._detach, lease)
        self._run(self._remove)

    def close(self) -> None:
        """Stop the worker thread (the network itself stays as it is)."""
        with self._lock:
            if self._worker is None:
                return
            worker, self._worker = self._worker, None
        worker.submit(self._stop).result()
        worker.shutdown()
        if self._host_fd is not None:
            os.close(self._host_fd)
            self._host_fd = None

    @property
    def closed(self) -> bool:
        return self._worker is None

    def __enter__(self) -> BridgeNetwork:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- worker side ----------------------------------------------------------------------

    def _run(self, fn: Callable[..., T], *args) -> T:
        return self._submit(fn, *args).result()

    def _submit(self, fn: Callable[..., T], *args) -> Future:
        if self._broken:
            raise NetworkError(f"network {self.name}: {self._broken}")
        if self._worker is None:
            raise NetworkError(f"network {self.name} is closed")
        return self._worker.submit(fn, *args)

    def _start(self) -> None:
        from pyroute2 import IPRoute

        if self._host_fd is not None:
            ns.setns(self._host_fd)
        self._home_fd = ns.current_netns()
        self._ipr = IPRoute(groups=0)
        self._batch = rtnl.Batch(rtnl.open_socket())
        self._table = None

    def _stop(self) -> None:
        self._ipr.close()
        self._batch.sock.close()
        if self._table is not None:
            self._table.nft.close()
        os.close(self._home_fd)

    def _ports(self):
        if self._table is None:
            from corral.net.nft import Nft, PortTable

            self._table = PortTable(Nft(), self.table_name)
        return self._table

    def _ensure(self) -> bridges.Bridge:
        self._bridge = bridges.ensure_bridge(self._ipr, self.bridge_name, self.subnet,
                                             self.subnet6, self.mtu)
        if self.nat:
            bridges.write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
            self._ports().masquerade(self.subnet)
            if self.subnet6:
                bridges.write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                self._ports().masquerade(self.subnet6)
        return self._bridge

    def _attach_closing(self, cid: str, fd: int, ports: tuple[PortMapping, ...],
                        hostname: str) -> Attachment:
        try:
            return self._attach(cid, fd, ports, hostname)
        finally:
            os.close(fd)

    def _attach(self, cid: str, fd: int, ports: tuple[PortMapping, ...],
                hostname: str) -> Attachment:
        bridge = self._bridge or self._ensure()
        ifname = veth_name(self.name, cid)
        lease = self.leases.acquire(cid, ifname, hostname, ports)
        made_veth = False
        try:
            self._batch.run([rtnl.create_veth(ifname, CONTAINER_IFNAME, fd, bridge.index,
                                              bridge.mtu)])
            made_veth = True
            self._configure_inside(fd, lease)
            if ports:
                self._ports().ensure()  # its guard rule first, then route_localnet
                self._set_localnet(bridge.name, True)
                self._ports().publish(lease.address, ports)
        except BaseException as err:
            self._undo(lease, made_veth)
            if isinstance(err, rtnl.RtnlError):
                raise NetworkError(f"network {self.name}: container {cid}: {err}") from None
            raise
        gateway6 = gateway_of(self.subnet6) if self.subnet6 else None
        return Attachment(
            self.name, cid, hostname,
            ipaddress.IPv4Interface(f"{lease.address}/{self.subnet.prefixlen}"),
            (ipaddress.IPv6Interface(f"{lease.address6}/{self.subnet6.prefixlen}")
             if lease.address6 else None),
            gateway_of(self.subnet), gateway6, ifname, bridge.mtu, ports)

    def _configure_inside(self, fd: int, lease: Lease) -> None:
        try:
            sock = ns.netlink_socket_in(fd, self._home_fd)
        except ns.NamespaceLost as err:
            self._broken = str(err)
            raise NetworkError(f"network {self.name}: {err}") from None
        except OSError as err:
            raise NetworkError(f"network {self.name}: cannot enter the container's network "
                               f"namespace: {err.strerror}") from None
        with rtnl.open_socket(sock):
            inside = rtnl.Batch(sock)
            replies = inside.run([rtnl.set_up(1), rtnl.get_link(CONTAINER_IFNAME)])
            index = rtnl.link_index(replies[1][0])
            requests = [rtnl.set_up(index),
                        rtnl.add_address(index, lease.address, self.subnet.prefixlen)]
            if lease.address6:
                requests.append(rtnl.add_address(index, lease.address6, self.subnet6.prefixlen))
            requests.append(rtnl.add_default_route(gateway_of(self.subnet)))
            if lease.address6:
                requests.append(rtnl.add_default_route(gateway_of(self.subnet6)))
            inside.run(requests)

    def _set_localnet(self, bridge: str, on: bool) -> None:
        """Published ports reached from the host's loopback are DNATed with their 127.x
        source, which the kernel routes out of a non-loopback device only with
        route_localnet.  It is on only while this network publishes ports, and then corral's
        table drops 127.x destinations arriving from anywhere but lo (see nft.py)."""
        bridges.write_sysctl(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet",
                             "1" if on else "0")

    def _undo(self, lease: Lease, made_veth: bool) -> None:
        if made_veth:
            self._delete_veth(lease.ifname)
        self._release(lease)

    def _unpublish(self, lease: Lease) -> None:
        if lease.ports:
            self._ports().unpublish(lease.address, lease.ports)

    def _link_exists(self, ifname: str) -> bool:
        return bool(self._ipr.link_lookup(ifname=ifname))

    def _detach(self, lease: Lease, unpublished: bool = False) -> None:
        if not unpublished:
            self._unpublish(lease)
        self._delete_veth(lease.ifname)
        self._forget_neighbour(lease.address)
        self._release(lease)

    def _release(self, lease: Lease) -> None:
        """Give the lease back; when it was the network's last published port, turn
        route_localnet off again and drop corral's table if nothing else is in it."""
        self.leases.release(lease.container_id)
        if lease.ports and not any(other.ports for other in self.leases.all()):
            if bridges.find_link(self._ipr, self.bridge_name):
                self._set_localnet(self.bridge_name, False)
            if not self.nat:
                self._ports().drop_if_empty()

    def _delete_veth(self, ifname: str) -> None:
        try:
            self._batch.run([rtnl.delete_link(ifname)])
        except rtnl.RtnlError as err:
            if err.errno != ENODEV:  # gone with the container's namespace: fine
                raise NetworkError(f"network {self.name}: {err}") from None

    def _forget_neighbour(self, address: ipaddress.IPv4Address) -> None:
        """The host's ARP entry for a freed address would point at the old container's MAC
        for its next holder; drop it (absent is fine)."""
        if self._bridge is None:
            return
        try:
            self._ipr.neigh("del", dst=str(address), ifindex=self._bridge.index)
        except Exception:
            pass

    def _remove(self) -> None:
        table = self._ports()
        for net in filter(None, (self.subnet, self.subnet6)):
            table.unmasquerade(net)
        table.drop_if_empty()
        bridges.remove_bridge(self._ipr, self.bridge_name)
        self._bridge = None


def veth_name(network: str, container_id: str) -> str:
    """The host side's name: derived from the network and the id, so a restarted daemon finds
    it again (15 characters, the kernel's limit)."""
    return "cr" + sha256(f"{network}\0{container_id}".encode()).hexdigest()[:13]
