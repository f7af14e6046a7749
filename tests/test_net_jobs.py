"""Jobs on bridge networks through `corral supervise`, against the real kernel.

The daemon runs inside a private network namespace made by the test (``nsenter --net``),
so its bridges, veths and nftables table live there and never in the host's namespace;
"the host" below is that namespace.  Traffic goes only to addresses inside it, its
containers' namespaces and loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from corral.errors import ConfigError
from corral.jobs.job import Job
from corral.net.nft import Nft, PortTable
from corral.net.registry import DEFAULT_SUBNET, parse_flag, parse_options
from tests.conftest import CORRAL, Corral
from tests.supervisor_fixture import ApiError, Client, Daemon, wait_gone
from tests.test_net_bridge import Netns

NETWORKS = ("--network", "t1=10.77.0.0/24", "--network", "tiny=10.78.0.0/30",
            "--network", "ov=10.66.1.0/24")


# ---- the private "host" and a daemon in it ----


@pytest.fixture
def host(_no_leaks):
    real_links = set(os.listdir("/sys/class/net"))
    h = Netns()
    h.iproute(lambda ipr: ipr.link("set", index=1, state="up"))
    yield h
    h.close()
    assert set(os.listdir("/sys/class/net")) == real_links, "the host's own links changed"


class NetDaemon(Daemon):
    def __init__(self, root: str, host: Netns, rootfs: str) -> None:
        super().__init__(root, *NETWORKS, netns=f"/proc/{os.getpid()}/fd/{host.fd}")
        self.host = host
        self.rootfs = rootfs
        self.networks = os.path.join(root, ".supervisor", "networks")

    def job(self, args: list[str], **fields) -> dict:
        return Job(args, root=self.rootfs, **fields).to_dict()

    def leases(self, network: str = "corral0") -> dict[str, str]:
        """{address: container id} from the lease files."""
        directory = os.path.join(self.networks, network, "leases")
        out = {}
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            with open(os.path.join(directory, name)) as f:
                out[name] = json.load(f)["container"]
        return out

    def veths(self) -> set[str]:
        return {name for name in self.host.links() if name.startswith("cr")}

    def published(self) -> dict:
        return self.host.call(lambda: PortTable(Nft()).published())

    def table_exists(self) -> bool:
        return self.host.call(lambda: PortTable(Nft()).exists())


@pytest.fixture
def daemon(tmp_path, host, rootfs_template):
    d = NetDaemon(str(tmp_path / "state"), host, rootfs_template).start()
    yield d
    shutdown(d)


def shutdown(d: NetDaemon) -> None:
    """Deletes every container through the API, stops the daemon (which removes its unused
    bridges) and its keeper; then nothing of corral's networks may remain in the host."""
    keeper = d.keeper_pid()
    d.delete_all_and_stop()
    wait_gone(keeper)
    assert d.host.links() == {"lo"}
    assert not d.table_exists()
    assert not os.path.exists(d.networks), os.listdir(d.networks)
    shutil.rmtree(os.path.join(d.root, ".supervisor"))


def output(c: Client, cid: str) -> str:
    items: list = []
    c.reply(c.send("logs", id=cid), items)
    return "".join(i["data"] for i in items)


def finish(c: Client, cid: str) -> tuple[int, str]:
    status = c.call("wait", id=cid, timeout=30)["exitStatus"]
    return status, output(c, cid)


def retry(command: str, tries: int = 100) -> list[str]:
    """sh -c: ``command`` until it succeeds (a server that is still starting)."""
    return ["sh", "-c", f"for i in $(seq {tries}); do {command} && exit 0; sleep 0.05; done; "
                        "exit 1"]


# ---- options and jobs, no kernel ----


def test_engine_options_and_flags_are_checked_by_name():
    assert parse_options(None)["corral0"].subnet == DEFAULT_SUBNET
    assert parse_flag("n1=10.1.0.0/24,nat,mtu=1400") == (
        "n1", {"subnet": "10.1.0.0/24", "nat": True, "mtu": 1400})
    for bad, message in [
        ({"n1": {"subnet": "10.91.3.0/24"}}, "networks.n1.subnet: 10.91.3.0/24 overlaps network "
                                             "corral0's"),
        ({"n1": {}}, "networks.n1.subnet: is required"),
        ({"n1": "10.0.0.1/24"}, "networks.n1.subnet: '10.0.0.1/24' is not a network in CIDR"),
        ({"n1": {"subnet": "10.1.0.0/24", "nat": "yes"}}, "networks.n1.nat: 'yes' is not"),
        ({"n1": {"subnet": "10.1.0.0/24", "color": 1}}, "networks.n1.color: unknown option"),
        ({"n1": {"subnet": "10.1.0.0/24", "bridge": "corral0"}}, "networks.n1.bridge: bridge "
                                                                 "corral0 is network corral0's"),
        ({"much-too-long-name": "10.1.0.0/24"}, "networks.much-too-long-name: "),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_options(bad)
        assert str(err.value).startswith(message), str(err.value)
    with pytest.raises(ConfigError, match="^--network: 'n1=10.1.0.0/24,color': 'color' is not nat"):
        parse_flag("n1=10.1.0.0/24,color")


def test_job_network_fields():
    job = Job(["true"], network="bridge", ports=["8080:80"], peer_names=True)
    assert (job.bridge, job.ports, job.joins) == ("corral0", ("8080:80/tcp",), None)
    assert Job.from_dict(job.to_dict()) == job
    assert Job(["true"], network="bridge:t1").bridge == "t1"
    assert Job(["true"], network="container:web").joins == "web"
    for fields, message in [
        ({"network": "bridge:"}, "job.network: 'bridge:': '' is not a network name"),
        ({"network": "container:a b"}, "job.network: 'container:a b': container id: invalid"),
        ({"network": "bridge", "ports": ["80"]}, "job.ports: '80' is not host_port:"),
        ({"network": "bridge", "ports": ["80:70000"]}, "job.ports: '80:70000': '70000' is not"),
        ({"network": "bridge", "ports": ["1:1", "1:2"]}, "job.ports: host port 1/tcp is given"),
        ({"ports": ["80:80"]}, "job.ports: only a bridge network publishes ports"),
        ({"network": "host", "peer_names": True}, "job.peer_names: only a bridge network"),
    ]:
        with pytest.raises(ConfigError) as err:
            Job(["true"], **fields)
        assert str(err.value).startswith(message), str(err.value)


def test_bridge_job_bundle_has_its_namespace_hostname_and_names(tmp_path, rootfs_template):
    made = Job(["true"], root=rootfs_template, network="bridge").bundle(
        str(tmp_path / "w"), "web-1", "corral-x")
    config = made.config
    assert {"type": "network"} in config["linux"]["namespaces"]
    assert config["hostname"] == "web-1"
    binds = {m["destination"]: m["source"] for m in config["mounts"] if m["type"] == "bind"}
    assert binds["/etc/hosts"] == str(tmp_path / "w" / "names" / "hosts")
    assert "127.0.1.1\tweb-1" in open(binds["/etc/hosts"]).read()
    made.cleanup()
    joined = Job(["true"], root=rootfs_template, network="container:web-1").bundle(
        str(tmp_path / "j"), "j", "corral-x", netns="/proc/1/ns/net")
    assert {"type": "network", "path": "/proc/1/ns/net"} in joined.config["linux"]["namespaces"]
    joined.cleanup()
    with pytest.raises(ConfigError, match="^netns: "):
        Job(["true"], network="container:web-1").bundle(str(tmp_path / "k"), "k", "corral-x")
    assert not os.path.exists(tmp_path / "k")


def test_bad_network_flags_stop_the_daemon_with_one_line(tmp_path):
    for flag, message in [("t1", "--network: 't1' is not NAME=SUBNET"),
                          ("a=10.91.0.0/24", "--network: networks.a.subnet: 10.91.0.0/24 "
                                             "overlaps network corral0's")]:
        proc = subprocess.run([*CORRAL, "--root", str(tmp_path / "state"), "supervise",
                               "--network", flag], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    shutil.rmtree(tmp_path / "state", ignore_errors=True)


# ---- containers on a bridge ----


def test_jobs_talk_by_name_a_port_answers_on_loopback_and_delete_leaves_nothing(
        daemon, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    body = f"hello {os.urandom(4).hex()}"
    (www / "index.html").write_text(body + "\n")
    c = daemon.client()
    c.call("run", id="web", job=daemon.job(["httpd", "-f", "-p", "80", "-h", "/www"],
                                           network="bridge", ports=["18080:80/tcp"],
                                           mounts=[f"{www}:/www"], peer_names=True))
    (address, owner), = daemon.leases().items()
    assert owner == "web" and ipaddress.ip_address(address) in ipaddress.ip_network(DEFAULT_SUBNET)
    # by name (peer_names: web is in its /etc/hosts), from another container on the bridge
    c.call("run", id="client", job=daemon.job(
        retry("wget -q -O - http://web/ && cat /etc/hosts && hostname"), network="bridge",
        peer_names=True))
    status, out = finish(c, "client")
    assert status == 0, out
    assert body in out and f"{address}\tweb" in out and out.strip().endswith("client")
    # web asked for its peers' names too: its hosts file was rewritten when client came
    client_address = next(a for a, owner in daemon.leases().items() if owner == "client")
    hosts = c.call("exec", id="web", args=["cat", "/etc/hosts"])["stdout"]
    assert f"{client_address}\tclient" in hosts and f"{address}\tweb" in hosts, hosts
    # container:web shares web's namespace: its loopback is web's
    c.call("run", id="side", job=daemon.job(retry("wget -q -O - http://127.0.0.1:80/"),
                                            network="container:web"))
    assert finish(c, "side") == (0, body + "\n")
    # a published port, from the host's loopback
    fetched = daemon.host.run("busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:18080/")
    assert fetched.stdout == body + "\n", fetched.stderr
    assert daemon.published() == {(18080, "tcp"): (ipaddress.IPv4Address(address), 80)}
    assert sorted(daemon.leases().values()) == ["client", "web"]  # until deleted
    c.call("delete", id="client")
    assert "client" not in c.call("exec", id="web", args=["cat", "/etc/hosts"])["stdout"]
    for cid in ("side", "web"):
        c.call("delete", id=cid, force=True)
    assert daemon.veths() == set() and daemon.leases() == {}
    assert not daemon.table_exists()
    assert os.listdir(os.path.join(daemon.networks, "corral0", "ids")) == []


def test_100_concurrent_creations_get_distinct_addresses(daemon):
    clients = [daemon.client() for _ in range(4)]  # a connection takes 64 requests at most
    c = clients[0]
    ids = [f"n{k}" for k in range(100)]
    job = daemon.job(["true"], network="bridge:t1")
    all_at_once(clients, "create", [{"id": cid, "job": job} for cid in ids])
    leases = daemon.leases("t1")
    assert sorted(leases.values()) == sorted(ids)
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.77.0.0/24") for a in leases)
    assert len(daemon.veths()) == 100
    # each container has its own address on its eth0 (checked for a few)
    for cid in ids[:3]:
        got = c.call("exec", id=cid, args=["ip", "-4", "-o", "addr", "show", "eth0"])
        mine = next(a for a, owner in leases.items() if owner == cid)
        assert f"inet {mine}/24" in got["stdout"], got
    all_at_once(clients, "delete", [{"id": cid, "force": True} for cid in ids])
    assert daemon.veths() == set() and daemon.leases("t1") == {}
    for client in clients:
        client.close()


def all_at_once(clients: list[Client], method: str, params: list[dict]) -> None:
    """Every request sent (spread over the connections) before any answer is read."""
    sent = [(clients[k % len(clients)], clients[k % len(clients)].send(method, **p))
            for k, p in enumerate(params)]
    for client, rid in sent:
        client.reply(rid)


def test_bad_input_gets_clear_errors_and_leaves_nothing(daemon):
    # a route in the host that overlaps network ov (on a link of its own)
    def add_dummy(ipr):
        ipr.link("add", ifname="dummy0", kind="bridge")
        index = ipr.link_lookup(ifname="dummy0")[0]
        ipr.addr("add", index=index, address="10.66.0.1", prefixlen=16)
        ipr.link("set", index=index, state="up")
    daemon.host.iproute(add_dummy)
    c = daemon.client()
    before = daemon.host.links()

    def refused(cid: str, message: str, **fields) -> None:
        with pytest.raises(ApiError) as err:
            c.call("run", id=cid, job=daemon.job(["sleep", "30"], **fields))
        assert message in str(err.value), str(err.value)
        assert cid not in {s["id"] for s in c.call("list")}
        assert not os.path.exists(os.path.join(daemon.root, ".supervisor", "jobs", cid))
        assert daemon.host.links() == before

    refused("o1", "network ov: subnet 10.66.1.0/24 overlaps route 10.66.0.0/16 on dev dummy0",
            network="bridge:ov")
    refused("u1", "job.network: no network named 'nope'", network="bridge:nope")
    refused("j1", "job.network: container:ghost: no such container", network="container:ghost")
    # exhausted: a /30 has one address for a container
    c.call("run", id="only", job=daemon.job(["sleep", "30"], network="bridge:tiny"))
    before = daemon.host.links()
    refused("t2", "subnet 10.78.0.0/30 is exhausted", network="bridge:tiny")
    assert list(daemon.leases("tiny").values()) == ["only"]
    # a host port already published
    c.call("run", id="p1", job=daemon.job(["sleep", "30"], network="bridge", ports=["18082:80"]))
    before = daemon.host.links()
    published = daemon.published()
    refused("p2", "ports: host port 18082/tcp is already published (to 10.91.", network="bridge",
            ports=["18083:80", "18082:81"])
    assert daemon.published() == published
    assert sorted(daemon.leases().values()) == ["p1"]
    for cid in ("only", "p1"):
        c.call("delete", id=cid, force=True)
    assert daemon.veths() == set() and not daemon.table_exists()
    assert not os.path.exists(os.path.join(daemon.networks, "ov"))
    daemon.host.iproute(lambda ipr: ipr.link("del", ifname="dummy0"))


def test_daemon_killed_mid_create_restarts_and_frees_the_half_made_network(
        daemon, make_bundle, tmp_path):
    """A createRuntime hook holds the creation after the attach (lease, veth, published
    port made); the daemon is SIGKILLed there; a new daemon undoes the container and frees
    its network."""
    pid_file = tmp_path / "hook.pid"
    bundle = make_bundle(["true"])
    bundle.config["hooks"] = {"createRuntime": [{
        "path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"]}]}
    bundle.write()
    c = daemon.client()
    c.send("run", id="half", job=Job(bundle=bundle.path, network="bridge",
                                     ports=["18084:80"]).to_dict())
    end = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < end, "the hook never ran"
        time.sleep(0.02)
    hook = int(pid_file.read_text())
    assert list(daemon.leases().values()) == ["half"] and len(daemon.veths()) == 1
    assert (18084, "tcp") in daemon.published()
    daemon.stop(signal.SIGKILL)
    c.close()
    os.kill(hook, signal.SIGKILL)
    wait_gone(hook)
    daemon.start()
    c = daemon.client()
    # the creation was in flight (its client never heard it was made): undone, state dir
    # and all, and its network freed at once (a "pending" attachment)
    assert c.call("list") == []
    assert not os.path.exists(os.path.join(daemon.root, "half"))
    assert daemon.leases() == {} and daemon.veths() == set()
    assert daemon.published() == {} and not daemon.table_exists()
    # the network works again afterwards, with the freed port
    c.call("run", id="again", job=daemon.job(["true"], network="bridge", ports=["18084:80"]))
    assert finish(c, "again")[0] == 0
    c.call("delete", id="again")


def test_a_bridge_job_deleted_by_the_command_line_gives_its_lease_back(daemon):
    """The command line deletes the container (it does not load the network code); the
    daemon's next sweep notices, frees the veth and the lease, and says "deleted"."""
    c = daemon.client()
    c.call("run", id="cli-gone", job=daemon.job(["sleep", "100"], network="bridge:t1"))
    assert list(daemon.leases("t1").values()) == ["cli-gone"]
    Corral(daemon.root)("delete", "--force", "cli-gone")
    end = time.monotonic() + 10
    while daemon.leases("t1") or daemon.veths():
        assert time.monotonic() < end, (daemon.leases("t1"), daemon.veths())
        time.sleep(0.1)
    assert c.call("list") == []
    c.close()
