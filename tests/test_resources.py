"""linux.resources: parsing, runc's v1 → v2 conversions, the v1 and v2 drivers on fake trees,
and real containers with memory, cpu and pids limits on this host."""

from __future__ import annotations

import json
import os

import pytest

from corral.cgroups import UNIFIED, Cgroup, detect
from corral.cgroups import resources as res_mod
from corral.cgroups.resources import (convert_blkio_weight, convert_cpu_max,
                                      convert_cpu_shares, convert_memory_swap)
from corral.errors import ConfigError
from corral.oci.config import parse_config
from tests.conftest import CGROUP_PARENT

REAL = detect()
V1_HOST = REAL.mode in ("v1", "hybrid")


def resources(**res):
    doc = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"args": ["true"], "cwd": "/"},
           "linux": {"namespaces": [{"type": "mount"}], "resources": res}}
    return parse_config(doc).linux.resources


# ---- parsing --------------------------------------------------------------------------------


def test_parse_all_fields():
    r = resources(
        memory={"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
                "kernelTCP": 1 << 20, "swappiness": 10, "disableOOMKiller": True},
        cpu={"shares": 512, "quota": 50000, "period": 100000, "burst": 1000,
             "realtimeRuntime": 950, "realtimePeriod": 1000, "cpus": "0-1", "mems": "0",
             "idle": 1},
        pids={"limit": 10},
        blockIO={"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
                 "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}]},
        hugepageLimits=[{"pageSize": "2MB", "limit": 1 << 21}],
        network={"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 5}]},
        unified={"io.weight": "default 100", "cgroup.max.depth": "3"})
    assert r.memory.limit == 64 << 20 and r.memory.swappiness == 10
    assert r.memory.disable_oom_killer is True
    assert r.warnings and "kernel memory settings" in r.warnings[0]  # kernelTCP: ignored
    assert (r.cpu.shares, r.cpu.quota, r.cpu.period, r.cpu.burst) == (512, 50000, 100000, 1000)
    assert (r.cpu.cpus, r.cpu.mems, r.cpu.idle) == ("0-1", "0", 1)
    assert r.pids_limit == 10
    assert r.block_io.weight_device[0].weight == 300
    assert r.block_io.throttle_read_bps_device[0].rate == 1024
    assert r.hugepage_limits[0].page_size == "2MB"
    assert r.network.priorities[0].name == "eth0"
    assert r.unified == {"io.weight": "default 100", "cgroup.max.depth": "3"}
    assert resources().empty() and not r.empty()


@pytest.mark.parametrize("res, field", [
    ({"memory": {"kernel": "1G"}}, "linux.resources.memory.kernel"),  # ignored, but typed
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": 100, "swap": 50}}, "linux.resources.memory.swap"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness"),
    ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit"),
    ({"cpu": {"shares": 1}}, "linux.resources.cpu.shares"),
    ({"cpu": {"period": 10}}, "linux.resources.cpu.period"),
    ({"cpu": {"quota": 10}}, "linux.resources.cpu.quota"),
    ({"cpu": {"cpus": "0-"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "a"}}, "linux.resources.cpu.mems"),
    ({"cpu": {"idle": 2}}, "linux.resources.cpu.idle"),
    ({"pids": {}}, "linux.resources.pids.limit"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight"),
    ({"blockIO": {"weightDevice": [{"major": 8}]}}, "linux.resources.blockIO.weightDevice[0].minor"),
    ({"blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": 0}]}},
     "linux.resources.blockIO.throttleWriteIOPSDevice[0].rate"),
    ({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize"),
    ({"network": {"priorities": [{"name": "a/b", "priority": 1}]}},
     "linux.resources.network.priorities[0].name"),
    ({"unified": {"memory": "1"}}, 'linux.resources.unified["memory"]'),
    ({"unified": {"../memory.max": "1"}}, 'linux.resources.unified["../memory.max"]'),
    ({"unified": {"memory.max": 1}}, 'linux.resources.unified["memory.max"]'),
])
def test_bad_values_name_the_field(res, field):
    with pytest.raises(ConfigError) as err:
        resources(**res)
    assert str(err.value).startswith(field + ": "), str(err.value)


# ---- conversions ----------------------------------------------------------------------------


def test_convert_cpu_shares():
    assert [convert_cpu_shares(s) for s in (0, 2, 1024, 262144, 1 << 20)] == [0, 1, 100, 10000,
                                                                              10000]
    assert convert_cpu_shares(512) == 59 and convert_cpu_shares(2048) == 174
    values = [convert_cpu_shares(s) for s in range(2, 262145, 997)]
    assert values == sorted(values)


def test_convert_memory_swap():
    assert convert_memory_swap(0, -1) == -1
    assert convert_memory_swap(-1, 100) == -1 and convert_memory_swap(0, 100) == 0
    assert convert_memory_swap(300, 100) == 200 and convert_memory_swap(100, 100) == 0
    with pytest.raises(ConfigError, match="memory.swap: a swap limit needs a memory limit"):
        convert_memory_swap(100, 0)
    with pytest.raises(ConfigError, match="below the memory limit"):
        convert_memory_swap(50, 100)


def test_convert_blkio_weight_and_cpu_max():
    assert [convert_blkio_weight(w) for w in (0, 10, 500, 1000)] == [0, 1, 4950, 10000]
    assert convert_cpu_max(50000, 100000) == "50000 100000"
    assert convert_cpu_max(-1, 100000) == "max 100000"
    assert convert_cpu_max(-1, None) == "max"
    assert convert_cpu_max(25000, None) == "25000"
    assert convert_cpu_max(None, None) == ""


# ---- drivers on fake trees ------------------------------------------------------------------


def _files(directory, names, content=""):
    os.makedirs(directory, exist_ok=True)
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write(content)


def _read(path):
    with open(path) as f:
        return f.read()


V2_FILES = ["memory.max", "memory.swap.max", "memory.low", "cpu.weight", "cpu.max",
            "cpu.max.burst", "cpu.idle", "pids.max", "io.weight", "io.max", "cpuset.cpus",
            "cpuset.mems", "hugetlb.2MB.max", "cgroup.max.depth"]


@pytest.fixture
def v2_tree(tmp_path):
    top = str(tmp_path / "cg")
    controllers = "cpuset cpu io memory hugetlb pids"
    for d in (top, top + "/parent", top + "/parent/c"):
        _files(d, ["cgroup.subtree_control"])
        _files(d, ["cgroup.controllers"], controllers)
    _files(top + "/parent/c", V2_FILES)
    return Cgroup("v2", "/parent/c", {UNIFIED: top + "/parent/c"}, {UNIFIED: top})


def test_v2_driver_converts(v2_tree, monkeypatch):
    writes = []
    real_write = res_mod.write

    def spy(directory, name, value, field, **kw):
        writes.append((os.path.relpath(directory, v2_tree.mounts[UNIFIED]), name, value))
        return real_write(directory, name, value, field, **kw)

    monkeypatch.setattr(res_mod, "write", spy)
    v2_tree.set_resources(resources(
        memory={"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20},
        cpu={"shares": 1024, "quota": 50000, "period": 100000, "burst": 500, "cpus": "0",
             "idle": 0},
        pids={"limit": -1},
        blockIO={"weight": 1000, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 9}],
                 "throttleWriteIOPSDevice": [{"major": 8, "minor": 1, "rate": 7}]},
        hugepageLimits=[{"pageSize": "2MB", "limit": 4 << 21}],
        unified={"memory.max": "100000000", "cgroup.max.depth": "4"}))
    leaf = v2_tree.paths[UNIFIED]
    got = {name: _read(f"{leaf}/{name}") for name in V2_FILES}
    assert got["memory.max"] == "100000000"  # unified wins: written last
    assert got["memory.swap.max"] == str(32 << 20)
    assert got["memory.low"] == str(16 << 20)
    assert got["cpu.weight"] == "100" and got["cpu.max"] == "50000 100000"
    assert got["cpu.max.burst"] == "500" and got["cpu.idle"] == "0"
    assert got["pids.max"] == "max" and got["io.weight"] == "10000"
    assert got["cpuset.cpus"] == "0" and got["hugetlb.2MB.max"] == str(4 << 21)
    assert got["cgroup.max.depth"] == "4"
    io_max = [w[2] for w in writes if w[1] == "io.max"]
    assert io_max == ["8:0 rbps=9", "8:1 wiops=7"]
    # Controllers enabled from the mount down to the parent, never in the leaf.
    enabled = {(d, v) for d, n, v in writes if n == "cgroup.subtree_control"}
    for d in (".", "parent"):
        assert {v for dd, v in enabled if dd == d} == {
            "+memory", "+cpu", "+cpuset", "+pids", "+io", "+hugetlb"}
    assert not [w for w in writes if w[0] == "parent/c" and w[1] == "cgroup.subtree_control"]


def test_v2_missing_file_and_controller_name_the_field(v2_tree):
    leaf = v2_tree.paths[UNIFIED]
    os.unlink(leaf + "/memory.swap.max")  # no swap accounting
    # "max" and "0" swap are fine without it (runc ignores them too) ...
    v2_tree.set_resources(resources(memory={"limit": 1 << 26, "swap": 1 << 26}))
    v2_tree.set_resources(resources(memory={"limit": -1}))
    # ... a real swap limit is not.
    with pytest.raises(ConfigError, match=r"^linux.resources.memory.swap: not supported by "):
        v2_tree.set_resources(resources(memory={"limit": 1 << 26, "swap": 1 << 27}))
    with pytest.raises(ConfigError, match=r"^linux.resources.memory.swappiness: not supported "
                                          r"on cgroup v2"):
        v2_tree.set_resources(resources(memory={"swappiness": 5}))
    with pytest.raises(ConfigError, match=r"^linux.resources.cpu.realtimePeriod: "):
        v2_tree.set_resources(resources(cpu={"realtimePeriod": 1000}))
    with pytest.raises(ConfigError, match=r"^linux.resources.network: "):
        v2_tree.set_resources(resources(network={"classID": 1}))
    with pytest.raises(ConfigError,
                       match=r'^linux.resources.unified\["rdma.max"\]: the rdma controller is '
                             r"not available"):
        v2_tree.set_resources(resources(unified={"rdma.max": "x"}))


def _v1_tree(tmp_path, unified=True):
    top = str(tmp_path / "v1")
    paths, mounts = {}, {}
    for key, names in {
        "memory": ["memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.swappiness",
                   "memory.oom_control", "memory.kmem.tcp.limit_in_bytes"],
        "cpu,cpuacct": ["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us",
                        "cpu.rt_period_us", "cpu.rt_runtime_us"],
        "pids": ["pids.max"],
        "blkio": ["blkio.weight", "blkio.weight_device", "blkio.throttle.read_bps_device"],
    }.items():
        mounts[key] = f"{top}/{key}"
        paths[key] = f"{top}/{key}/c"
        _files(paths[key], names)
    with open(paths["memory"] + "/memory.limit_in_bytes", "w") as f:
        f.write("9223372036854771712\n")  # a new cgroup's: unlimited
    if unified:
        mounts[UNIFIED] = f"{top}/unified"
        paths[UNIFIED] = f"{top}/unified/c"
        _files(paths[UNIFIED], ["cgroup.controllers", "cgroup.max.depth"])
    return Cgroup("hybrid" if unified else "v1", "/c", paths, mounts)


def test_v1_driver_on_fake_tree(tmp_path):
    cg = _v1_tree(tmp_path)
    with open(cg.paths["cpu,cpuacct"] + "/cpu.shares", "w") as f:
        f.write("")
    cg.set_resources(resources(
        memory={"limit": 1 << 26, "reservation": 1 << 25, "swappiness": 0,
                "disableOOMKiller": True, "kernelTCP": 1 << 20},  # kernelTCP: ignored
        cpu={"shares": 256, "quota": 20000, "period": 100000, "realtimePeriod": 1000000,
             "realtimeRuntime": 9500},
        pids={"limit": 10},
        blockIO={"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                 "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 4096}]}))
    m, c = cg.paths["memory"], cg.paths["cpu,cpuacct"]
    assert _read(m + "/memory.limit_in_bytes") == str(1 << 26)
    assert _read(m + "/memory.soft_limit_in_bytes") == str(1 << 25)
    assert _read(m + "/memory.swappiness") == "0" and _read(m + "/memory.oom_control") == "1"
    assert _read(m + "/memory.kmem.tcp.limit_in_bytes") == ""  # never written
    assert _read(c + "/cpu.shares") == "256" and _read(c + "/cpu.cfs_quota_us") == "20000"
    assert _read(c + "/cpu.rt_runtime_us") == "9500"
    assert _read(cg.paths["pids"] + "/pids.max") == "10"
    b = cg.paths["blkio"]
    assert _read(b + "/blkio.weight") == "300" and _read(b + "/blkio.weight_device") == "8:0 200"
    assert _read(b + "/blkio.throttle.read_bps_device") == "8:0 4096"


@pytest.mark.parametrize("res, message", [
    ({"memory": {"limit": 1 << 26, "swap": 1 << 27}},
     r"^linux.resources.memory.swap: not supported by this host's kernel \(.*"
     r"memory.memsw.limit_in_bytes is missing\)"),
    ({"cpu": {"cpus": "0"}},
     r"^linux.resources.cpu.cpus: this host mounts no cpuset cgroup hierarchy"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]},
     r"^linux.resources.hugepageLimits\[0\]: this host mounts no hugetlb"),
    ({"network": {"classID": 1}}, r"^linux.resources.network.classID: this host mounts no "),
    ({"blockIO": {"leafWeight": 100}}, r"^linux.resources.blockIO.leafWeight: not supported"),
])
def test_v1_refusals_name_the_field(tmp_path, res, message):
    with pytest.raises(ConfigError, match=message):
        _v1_tree(tmp_path).set_resources(resources(**res))


@pytest.mark.parametrize("unified", [True, False], ids=["hybrid", "v1"])
def test_unified_refused_off_pure_v2(tmp_path, unified):
    """runc's refusal, before any field is written."""
    cg = _v1_tree(tmp_path, unified=unified)
    with pytest.raises(ConfigError, match=r"^linux.resources.unified: cannot use unified on "
                                          r"cgroup v1$"):
        cg.set_resources(resources(pids={"limit": 5}, unified={"cgroup.max.depth": "1"}))
    assert _read(cg.paths["pids"] + "/pids.max") == ""


def test_v1_kernel_refusal_names_the_field(tmp_path):
    cg = _v1_tree(tmp_path)
    os.chmod(cg.paths["pids"] + "/pids.max", 0o444)
    os.unlink(cg.paths["pids"] + "/pids.max")
    os.mkdir(cg.paths["pids"] + "/pids.max")  # writing a directory fails with EISDIR
    with pytest.raises(ConfigError, match=r"^linux.resources.pids.limit: '5' refused by "
                                          r"pids.max: Is a directory"):
        cg.set_resources(resources(pids={"limit": 5}))


# ---- real containers ------------------------------------------------------------------------

needs_v1 = pytest.mark.skipif(not V1_HOST or not all(REAL.find(c) for c in
                                                     ("memory", "cpu", "pids")),
                              reason="needs v1 memory, cpu and pids hierarchies")


def _host_file(controller, cid, name):
    return _read(f"{REAL.v1[REAL.find(controller)]}/{CGROUP_PARENT}/{cid}/{name}").strip()


@needs_v1
def test_real_limits_applied(corral, make_bundle):
    b = make_bundle(["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                     "/sys/fs/cgroup/pids/pids.max"])
    b.config["linux"]["resources"] = {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 16}}
    b.write()
    corral("create", "-b", b.path, b.id)
    assert _host_file("memory", b.id, "memory.limit_in_bytes") == str(64 << 20)
    assert _host_file("memory", b.id, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert _host_file("memory", b.id, "memory.swappiness") == "10"
    assert _host_file("cpu", b.id, "cpu.shares") == "512"
    assert _host_file("cpu", b.id, "cpu.cfs_quota_us") == "50000"
    assert _host_file("cpu", b.id, "cpu.cfs_period_us") == "100000"
    assert _host_file("pids", b.id, "pids.max") == "16"
    corral("delete", "--force", b.id)
    # And from inside (its own cgroup namespace and /sys/fs/cgroup view).
    out = corral("run", "-b", b.path, b.id).stdout
    assert out.split() == [str(64 << 20), "16"]


@needs_v1
def test_real_pids_limit_enforced(corral, make_bundle):
    b = make_bundle(["sh", "-c", "for i in $(seq 20); do sleep 1 & done; wait"])
    b.config["linux"]["resources"] = {"pids": {"limit": 10}}
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False)
    assert "fork" in proc.stderr, proc.stderr


@pytest.mark.parametrize("res, field", [
    ({"cpu": {"quota": 50000, "period": 1000000, "burst": 1 << 40}}, "linux.resources.cpu.burst"),
    ({"unified": {"memory.max": "64M"}}, "linux.resources.unified"),
    ({"memory": {"limit": 64 << 20, "swap": -2}}, "linux.resources.memory.swap"),
])
@needs_v1
def test_real_refusals_name_the_field_and_leave_nothing(corral, make_bundle, res, field):
    if "unified" in res and REAL.mode == "v2":
        pytest.skip("unified is refused only on a host that is not pure cgroup v2")
    b = make_bundle(["true"])
    b.config["linux"]["resources"] = res
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"corral: {field}: "), proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))


@pytest.mark.skipif(os.path.isdir("/sys/fs/cgroup/hugetlb") or not V1_HOST,
                    reason="this host mounts hugetlb")
def test_real_hugetlb_missing_is_named(corral, make_bundle):
    b = make_bundle(["true"])
    b.config["linux"]["resources"] = {"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.stderr.startswith("corral: linux.resources.hugepageLimits[0]: "), proc.stderr


def test_config_json_round_trip_unchanged():
    raw = {"memory": {"limit": 1}, "unified": {"pids.max": "3"}}
    before = json.dumps(raw)
    resources(**raw)
    assert json.dumps(raw) == before
