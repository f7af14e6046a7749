"""Address leases on disk, port and subnet parsing, /etc/hosts and resolv.conf (no netlink)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from corral.net import Leases, NetworkError, PortMapping, parse_subnet
from corral.net.names import hosts_content, resolv_content, write_hosts, write_names

NET = ipaddress.ip_network("10.88.0.0/16")


def test_100_concurrent_leases_from_threads_and_processes_are_distinct(tmp_path):
    directory = str(tmp_path / "net")
    script = ("import ipaddress, sys\n"
              "from corral.net import Leases\n"
              "leases = Leases(sys.argv[1], ipaddress.ip_network('10.88.0.0/16'))\n"
              "for i in range(25):\n"
              "    leases.acquire(f'{sys.argv[2]}-{i}', 'x')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, directory, f"p{n}"])
             for n in range(2)]
    leases = Leases(directory, NET)
    with ThreadPoolExecutor(50) as pool:
        mine = list(pool.map(lambda i: leases.acquire(f"t-{i}", "x"), range(50)))
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    everything = leases.all()
    assert len(everything) == 100
    assert len({lease.address for lease in everything}) == 100
    assert {lease.address for lease in mine} <= {lease.address for lease in everything}
    assert all(lease.address in NET and lease.address != NET.network_address + 1
               for lease in everything)
    assert not [n for n in os.listdir(os.path.join(directory, "leases")) if n.startswith(".")]


def test_release_get_and_the_next_address_is_not_a_just_freed_one(tmp_path):
    leases = Leases(str(tmp_path), ipaddress.ip_network("10.88.0.0/29"),
                    ipaddress.ip_network("fd00:88::/64"))
    a = leases.acquire("a", "cra", "alpha", (PortMapping.parse("8080:80"),))
    assert (str(a.address), str(a.address6)) == ("10.88.0.2", "fd00:88::2")
    assert leases.get("a") == a and a.hostname == "alpha" and str(a.ports[0]) == "8080:80/tcp"
    b = leases.acquire("b", "crb")
    assert leases.release("a") == a
    assert leases.get("a") is None and leases.release("a") is None
    c = leases.acquire("c", "crc")
    assert c.address == b.address + 1  # .2 was just freed: handed out last
    for cid in "def":
        leases.acquire(cid, "x")
    assert str(leases.get("f").address) == "10.88.0.2"  # wrapped around to the freed one
    with pytest.raises(NetworkError, match=r"subnet 10.88.0.0/29 is exhausted \(5 addresses"):
        leases.acquire("g", "x")
    assert len(os.listdir(tmp_path / "leases")) == 5


def test_stale_finds_dead_containers_and_crash_leftovers(tmp_path):
    leases = Leases(str(tmp_path), NET)
    for cid in ("alive", "dead"):
        leases.acquire(cid, "x")
    (tmp_path / "leases" / ".tmp-half-0011").write_text("{")  # crash while leasing
    os.symlink("10.88.9.9", tmp_path / "ids" / "gone")  # crash while releasing
    assert [lease.container_id for lease in leases.stale(["alive"])] == ["dead"]
    assert sorted(os.listdir(tmp_path / "leases")) == ["10.88.0.2", "10.88.0.3"]
    assert sorted(os.listdir(tmp_path / "ids")) == ["alive", "dead"]


def test_subnets_and_ports_are_parsed_with_errors_naming_them():
    assert parse_subnet("10.88.0.0/16", 4) == NET
    with pytest.raises(NetworkError, match="subnet6: 'fd00::1/64' is not a network"):
        parse_subnet("fd00::1/64", 6, "subnet6")
    with pytest.raises(NetworkError, match="subnet6: fd00::/120 is smaller than subnet"):
        Leases("/nonexistent", NET, ipaddress.ip_network("fd00::/120"))
    assert PortMapping.parse("53:5353/udp") == PortMapping(53, 5353, "udp")
    with pytest.raises(NetworkError, match=r"ports: '70000:80': '70000' is not a port"):
        PortMapping.parse("70000:80")


def test_hosts_lists_the_job_and_its_peers():
    text = hosts_content("web", [ipaddress.ip_address("10.88.0.2")],
                         {"web": [ipaddress.ip_address("10.88.0.2")],
                          "db": [ipaddress.ip_address("10.88.0.3"),
                                 ipaddress.ip_address("fd00::3")]})
    assert text.splitlines() == ["127.0.0.1\tlocalhost",
                                 "::1\tlocalhost ip6-localhost ip6-loopback",
                                 "10.88.0.2\tweb", "10.88.0.3\tdb", "fd00::3\tdb"]
    assert "127.0.1.1\tsolo" in hosts_content("solo", [])


def test_resolv_conf_drops_loopback_nameservers(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\n"
                    "search example.test\noptions edns0 trust-ad\n")
    assert resolv_content(host_resolv=str(host)) == (
        "nameserver 192.0.2.53\nsearch example.test\noptions edns0 trust-ad\n")
    assert resolv_content(["192.0.2.1"], ["corp.test"], host_resolv=str(host)) == (
        "nameserver 192.0.2.1\nsearch corp.test\noptions edns0 trust-ad\n")


def test_write_names_rewrites_in_place_for_bind_mounts(tmp_path):
    hosts, resolv = write_names(str(tmp_path / "job"), "web", [ipaddress.ip_address("10.88.0.2")])
    inode = os.stat(hosts).st_ino
    write_names(str(tmp_path / "job"), "web", [ipaddress.ip_address("10.88.0.2")],
                peers={"db": [ipaddress.ip_address("10.88.0.3")]}, nameservers=["192.0.2.1"])
    assert os.stat(hosts).st_ino == inode
    assert open(hosts).read().endswith("10.88.0.2\tweb\n10.88.0.3\tdb\n")
    assert open(resolv).read().startswith("nameserver 192.0.2.1\n")


def test_write_hosts_rewrites_hosts_in_place_and_leaves_resolv_conf(tmp_path):
    hosts, resolv = write_names(str(tmp_path / "job"), "web", [], nameservers=["192.0.2.1"])
    inode = os.stat(hosts).st_ino
    before = os.stat(resolv)
    assert write_hosts(str(tmp_path / "job"), "web", [ipaddress.ip_address("10.88.0.2")]) == hosts
    assert os.stat(hosts).st_ino == inode
    assert open(hosts).read().endswith("10.88.0.2\tweb\n")
    assert "127.0.1.1" not in open(hosts).read()
    after = os.stat(resolv)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
