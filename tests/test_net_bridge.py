"""Bridge networks against the real kernel, never in the host's own network namespace.

Every namespace here is made by a short-lived thread that unshares CLONE_NEWNET and opens
/proc/thread-self/ns/net: the descriptor keeps it alive (no process, no mount), closing it
frees it.  One such namespace plays the host (bridge, nftables table), others containers.
Programs run inside through ``nsenter --net=/proc/self/fd/N``.  Traffic goes only to
addresses inside these namespaces and to their loopback.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from corral.net import BridgeNetwork, Leases, NetworkError, veth_name
from corral.net import netns as ns
from corral.net.nft import Nft, PortTable

SUBNET = "10.88.0.0/24"


class Netns:
    """A network namespace held by a descriptor."""

    def __init__(self) -> None:
        self.fd = self.call(lambda: (ns.unshare(ns.CLONE_NEWNET), ns.current_netns())[1],
                            enter=False)

    def call(self, fn, enter: bool = True):
        """fn() in a thread inside this namespace."""
        result: dict = {}

        def run() -> None:
            try:
                if enter:
                    ns.setns(self.fd)
                result["value"] = fn()
            except BaseException as err:  # handed to the caller
                result["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    def iproute(self, fn):
        """fn(ipr) with a pyroute2 IPRoute of this namespace."""
        def run():
            from pyroute2 import IPRoute

            with IPRoute(groups=0) as ipr:
                return fn(ipr)
        return self.call(run)

    def argv(self, *args: str) -> list[str]:
        return ["nsenter", f"--net=/proc/self/fd/{self.fd}", *args]

    def run(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), pass_fds=[self.fd], capture_output=True,
                              text=True, timeout=timeout)

    def links(self) -> set[str]:
        return set(self.iproute(lambda ipr: [l.get("ifname") for l in ipr.link("dump")]))

    def sysctl(self, path: str) -> str:
        return self.call(lambda: open(path).read().strip())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
def namespaces(_no_leaks):
    made: list[Netns] = []

    def make() -> Netns:
        made.append(Netns())
        return made[-1]

    host_links = set(os.listdir("/sys/class/net"))
    yield make
    for n in made:
        n.close()
    assert set(os.listdir("/sys/class/net")) == host_links, "the host's own links changed"


@pytest.fixture
def host(namespaces) -> Netns:
    h = namespaces()
    h.iproute(lambda ipr: ipr.link("set", index=1, state="up"))
    return h


@pytest.fixture
def make_network(host, tmp_path):
    made: list[BridgeNetwork] = []

    def make(subnet: str = SUBNET, **options) -> BridgeNetwork:
        made.append(BridgeNetwork("test", str(tmp_path / "net"), subnet,
                                  host_netns=host.fd, **options))
        return made[-1]

    yield make
    for net in made:
        if not net.closed:
            try:
                net.remove(force=True)
            finally:
                net.close()


class Server:
    """busybox httpd in a namespace, serving one file; stopped by the test's cleanup."""

    def __init__(self, where: Netns, root, listen: str = "80") -> None:
        root.mkdir(exist_ok=True)
        self.body = f"hello {os.urandom(4).hex()}\n"
        (root / "index.html").write_text(self.body)
        self.where = where
        self.proc = subprocess.Popen(where.argv("busybox", "httpd", "-f", "-vv", "-p", listen,
                                                "-h", str(root)),
                                     pass_fds=[where.fd], stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        """Stops the server; returns its log (one line per request, with the client)."""
        self.proc.terminate()
        return self.proc.communicate(timeout=10)[1]


@pytest.fixture
def serve(tmp_path):
    servers: list[Server] = []

    def start(where: Netns, listen: str = "80") -> Server:
        servers.append(Server(where, tmp_path / f"www{len(servers)}", listen))
        return servers[-1]

    yield start
    for s in servers:
        if s.proc.poll() is None:
            s.stop()


def fetch(client: Netns, url: str, tries: int = 50) -> str:
    """GET url from inside ``client``; retried while the server starts (bounded)."""
    for _ in range(tries):
        proc = client.run("busybox", "wget", "-q", "-O", "-", url)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(0.1)
    raise AssertionError(f"{url} unreachable: {proc.stderr.strip()}")


def published(host: Netns) -> dict:
    return host.call(lambda: PortTable(Nft()).published())


def table_exists(host: Netns) -> bool:
    return host.call(lambda: PortTable(Nft()).exists())


def test_containers_talk_and_a_published_port_reaches_one_from_host_loopback(
        host, namespaces, make_network, serve):
    net = make_network(subnet6="fd00:88::/64")
    c1, c2 = namespaces(), namespaces()
    a1 = net.attach("c1", c1.fd, ports=["8080:80/tcp"], hostname="web")
    a2 = net.attach("c2", f"/proc/self/fd/{c2.fd}")
    assert a1.address != a2.address
    assert a1.address in ipaddress.ip_network(SUBNET) and str(a1.gateway) == "10.88.0.1"
    assert a1.mtu == 1500 and a1.ifname == veth_name("test", "c1")

    inside = c1.iproute(lambda ipr: {
        "links": {l.get("ifname"): (l.get("state"), l.get("mtu")) for l in ipr.link("dump")},
        "addrs": {a.get("address") for a in ipr.addr("dump")},
        "default": [r.get("gateway") for r in ipr.route("dump") if r["dst_len"] == 0],
    })
    assert inside["links"] == {"lo": ("up", 65536), "eth0": ("up", 1500)}
    assert {str(a1.address.ip), str(a1.address6.ip), "127.0.0.1"} <= inside["addrs"]
    assert inside["default"] == ["10.88.0.1", "fd00:88::1"]

    server = serve(c1)
    assert fetch(c2, f"http://{a1.address.ip}/") == server.body
    assert fetch(c2, f"http://[{a1.address6.ip}]/") == server.body
    assert fetch(host, "http://127.0.0.1:8080/") == server.body
    log = server.stop()
    assert f"[::ffff:{a2.address.ip}]:" in log  # container to container: no NAT between them
    assert f"[::ffff:{a1.gateway}]:" in log  # from the host's loopback: masqueraded
    assert net.peers() == {"web": [a1.address.ip, a1.address6.ip],
                           "c2": [a2.address.ip, a2.address6.ip]}


def test_detach_leaves_no_veth_lease_or_nftables_entry(host, namespaces, make_network):
    net = make_network()
    c1, c2 = namespaces(), namespaces()
    net.attach("c1", c1.fd, ports=["8080:80/tcp", "5353:53/udp"])
    net.attach("c2", c2.fd)
    assert {veth_name("test", "c1"), veth_name("test", "c2"), "corral0"} <= host.links()
    assert set(published(host)) == {(8080, "tcp"), (5353, "udp")}
    assert host.sysctl("/proc/sys/net/ipv4/conf/corral0/route_localnet") == "1"

    assert net.detach("c1") is True
    assert net.detach("c1") is False
    assert host.links() == {"lo", "corral0", veth_name("test", "c2")}
    assert "eth0" not in c1.links()
    assert [lease.container_id for lease in net.leases.all()] == ["c2"]
    assert not table_exists(host)  # its last entry went with c1
    assert host.sysctl("/proc/sys/net/ipv4/conf/corral0/route_localnet") == "0"

    with pytest.raises(NetworkError, match="still has 1 container"):
        net.remove()
    net.detach("c2")
    net.remove()
    assert host.links() == {"lo"}
    assert net.leases.all() == []
    assert os.listdir(os.path.join(net.leases.directory, "ids")) == []


def test_reclaim_after_a_daemon_died_frees_dead_containers(host, namespaces, make_network, tmp_path):
    net = make_network()
    c1, c2 = namespaces(), namespaces()
    a1 = net.attach("c1", c1.fd, ports=["8080:80/tcp"])
    net.attach("c2", c2.fd, ports=["8081:80/tcp"])
    net.close()  # the daemon dies: nothing is detached
    c1.close()  # and container c1 exits meanwhile
    namespaces_left = [c2]
    # a half-made creation: the lease was taken, the daemon died before the veth
    Leases(str(tmp_path / "net"), ipaddress.ip_network(SUBNET)).acquire("c3", "crhalfmade")

    restarted = make_network()
    assert sorted(restarted.reclaim(alive_ids=["c2"])) == ["c1", "c3"]
    assert [lease.container_id for lease in restarted.leases.all()] == ["c2"]
    assert set(published(host)) == {(8081, "tcp")}
    assert veth_name("test", "c1") not in host.links()
    # the freed address is handed out again, last (after the rest of the subnet)
    assert restarted.leases.get("c2").address != a1.address
    assert namespaces_left[0].links() == {"lo", "eth0"}


def test_overlapping_subnet_is_refused_and_nothing_is_made(host, make_network):
    def add_route(ipr):
        ipr.link("add", ifname="uplink0", kind="bridge")  # (no dummy driver on every kernel)
        index = ipr.link_lookup(ifname="uplink0")[0]
        ipr.link("set", index=index, state="up")
        ipr.addr("add", index=index, address="10.77.0.5", prefixlen=16)
    host.iproute(add_route)
    net = make_network("10.77.8.0/24")
    with pytest.raises(NetworkError,
                       match=r"subnet 10.77.8.0/24 overlaps route 10.77.0.0/16 on dev uplink0"):
        net.ensure()
    with pytest.raises(NetworkError, match="overlaps route 127.0.0.0/8 on dev lo"):
        make_network("127.1.0.0/16").ensure()
    assert host.links() == {"lo", "uplink0"}


def test_exhausted_subnet_leaves_nothing_behind(host, namespaces, make_network):
    net = make_network("10.88.0.0/30")  # gateway .1, one container .2, broadcast .3
    c1, c2 = namespaces(), namespaces()
    assert str(net.attach("c1", c1.fd).address.ip) == "10.88.0.2"
    with pytest.raises(NetworkError, match=r"subnet 10.88.0.0/30 is exhausted"):
        net.attach("c2", c2.fd, ports=["8080:80/tcp"])
    assert c2.links() == {"lo"}
    assert host.links() == {"lo", "corral0", veth_name("test", "c1")}
    assert [lease.container_id for lease in net.leases.all()] == ["c1"]
    assert not table_exists(host)


def test_port_already_published_is_named_and_nothing_is_left(host, namespaces, make_network):
    net = make_network()
    c1, c2 = namespaces(), namespaces()
    a1 = net.attach("c1", c1.fd, ports=["8080:80/tcp"])
    with pytest.raises(NetworkError, match=r"host port 8080/tcp is already published "
                                           rf"\(to {a1.address.ip}:80\)"):
        net.attach("c2", c2.fd, ports=["9090:90/udp", "8080:8080/tcp"])
    assert published(host) == {(8080, "tcp"): (a1.address.ip, 80)}  # all or none: no 9090
    assert c2.links() == {"lo"}
    assert veth_name("test", "c2") not in host.links()
    assert net.leases.get("c2") is None


def test_bad_input_is_refused_by_name(host, namespaces, make_network, tmp_path):
    for subnet, message in [("10.88.0.1/24", "subnet: '10.88.0.1/24' is not a network"),
                            ("fd00::/64", "subnet: 'fd00::/64' is not an IPv4 network"),
                            ("10.88.0.0/31", "subnet: 10.88.0.0/31 is too small"),
                            ("banana", "subnet: 'banana' is not a network")]:
        with pytest.raises(NetworkError, match=message.replace("(", r"\(")):
            make_network(subnet)
    with pytest.raises(NetworkError, match="bridge: 'a/b' is not a valid interface name"):
        make_network(bridge="a/b")
    net = make_network()
    c1 = namespaces()
    for ports, message in [(["80"], "is not host_port:container_port"),
                           (["8080:80/sctp"], "protocol must be tcp or udp"),
                           (["8080:0"], "'0' is not a port number"),
                           (["8080:80", "8080:81/tcp"], "host port 8080/tcp is given twice")]:
        with pytest.raises(NetworkError, match=f"ports: .*{message}"):
            net.attach("c1", c1.fd, ports=ports)
    with pytest.raises(NetworkError, match="netns: '/proc/self/ns/mnt' is not a network namespace"):
        net.attach("c1", "/proc/self/ns/mnt")
    with pytest.raises(NetworkError, match="netns: cannot open '/nonexistent'"):
        net.attach("c1", "/nonexistent")
    with pytest.raises(NetworkError, match="container id '../x' is not valid"):
        net.attach("../x", c1.fd)
    net.attach("c1", c1.fd)
    with pytest.raises(NetworkError, match="container c1 already has an address"):
        net.attach("c1", namespaces().fd)
    assert len(net.leases.all()) == 1


def test_100_concurrent_attaches_get_distinct_addresses_and_detach_cleanly(
        host, namespaces, make_network):
    net = make_network("10.88.0.0/16")
    containers = {f"c{i}": namespaces() for i in range(100)}
    with ThreadPoolExecutor(16) as pool:
        attached = list(pool.map(lambda cid: net.attach(cid, containers[cid].fd), containers))
    assert len({a.address for a in attached}) == 100
    assert len(host.links()) == 2 + 100
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(net.detach, containers))
    assert host.links() == {"lo", "corral0"}
    assert net.leases.all() == []


def test_nat_masquerades_egress_to_another_namespace(host, namespaces, make_network, serve):
    """An "outside" namespace behind the host (172.31.250.0/24, no route back to the
    containers' subnet): reachable from a container only through masquerading."""
    outside = namespaces()

    def wire(ipr):
        ipr.link("add", ifname="up0", kind="veth",
                 peer={"ifname": "wan0", "net_ns_fd": outside.fd})
        index = ipr.link_lookup(ifname="up0")[0]
        ipr.addr("add", index=index, address="172.31.250.1", prefixlen=24)
        ipr.link("set", index=index, state="up")
    host.iproute(wire)

    def wire_outside(ipr):
        index = ipr.link_lookup(ifname="wan0")[0]
        ipr.addr("add", index=index, address="172.31.250.2", prefixlen=24)
        ipr.link("set", index=index, state="up")
    outside.iproute(wire_outside)

    net = make_network(nat=True)
    c1 = namespaces()
    net.attach("c1", c1.fd)
    assert host.sysctl("/proc/sys/net/ipv4/ip_forward") == "1"
    server = serve(outside, "172.31.250.2:80")
    assert fetch(c1, "http://172.31.250.2/") == server.body
    log = server.stop()
    assert "172.31.250.1:" in log and "10.88.0." not in log
    net.detach("c1")
    assert table_exists(host)  # the masquerading stays while the network exists
    net.remove()
    assert not table_exists(host)
