"""Issue 4's acceptance points, against the real kernel of this host (v1 controllers and a
cgroup2 hierarchy without controllers) and a temp directory shaped like a cgroup2 tree:
OOM (exit 137, the `events` oom event, clean-up), a fork bomb stopped by pids.max, cpu
throttling measured, pause/resume of a counting loop, live updates, `ps`, v2 freeze and kill,
every resource field read back, bad values named, a 500-container create/delete loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from corral.cgroups import UNIFIED, Cgroup, detect
from corral.cgroups import resources as res_mod
from corral.oci.config import parse_config
from tests.conftest import CGROUP_PARENT, CORRAL, cgroup_dirs, read_line, reap_exited

REAL = detect()
V1_HOST = REAL.mode in ("v1", "hybrid")
needs_v1 = pytest.mark.skipif(
    not V1_HOST or not all(REAL.find(c) for c in ("memory", "cpu", "pids", "freezer")),
    reason="needs v1 memory, cpu, pids and freezer hierarchies")
needs_unified = pytest.mark.skipif(REAL.unified is None, reason="no cgroup2 hierarchy")


# ---- helpers ---------------------------------------------------------------------------------


def _read(path):
    with open(path) as f:
        return f.read()


def _cgroup_of(corral, cid) -> Cgroup:
    with open(os.path.join(corral.root, cid, "state.json")) as f:
        return Cgroup.from_json(json.load(f)["cgroup"])


def _dir(cg: Cgroup, controller: str) -> str:
    if controller == UNIFIED:
        return cg.paths[UNIFIED]
    return next(p for k, p in cg.paths.items() if k != UNIFIED and controller in k.split(","))


def _dirs_named(cid):
    """Every directory called ``cid`` under the tests' cgroup parent, in every hierarchy."""
    return [d for d in cgroup_dirs() if os.path.basename(d) == cid]


def _wait_for(predicate, timeout=5.0, what="condition"):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def _reap(pid):
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _counter(rootfs):
    """The value a counting loop last wrote to /tmp/count (None while it is rewritten)."""
    try:
        text = _read(os.path.join(rootfs, "tmp", "count")).strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _stable_counter(rootfs):
    """The counter's value, once the loop has written one."""
    seen = []
    _wait_for(lambda: seen.append(_counter(rootfs)) or seen[-1] is not None,
              what="the counter")
    return seen[-1]


COUNTING = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; usleep 10000; done"
# The init itself (pid 1, which the OOM killer picks: it holds the memory) doubles a string
# once /tmp/go exists; 32 MiB are reached in ~25 doublings.
HOG = "while [ ! -e /tmp/go ]; do usleep 20000; done; x=a; while :; do x=$x$x; done"
MEM_32M = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}  # memory+swap = memory: no swap


# ---- OOM: exit 137, the events stream, clean-up ----------------------------------------------


@needs_v1
def test_oom_run_exits_137_events_reports_it_and_nothing_is_left(corral, make_bundle):
    b = make_bundle(["sh", "-c", HOG])
    b.config["linux"]["resources"] = MEM_32M
    b.write()
    with open(os.path.join(corral.root + ".run.out"), "w+b") as out:
        run = subprocess.Popen([*CORRAL, "--root", corral.root, "run", "-b", b.path, b.id],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        stream = None
        try:
            _wait_for(lambda: os.path.exists(os.path.join(corral.root, b.id, "state.json"))
                      and corral.state(b.id)["status"] == "running", what="running")
            cg = _cgroup_of(corral, b.id)
            assert all(os.path.isdir(p) for p in cg.paths.values())
            stream = subprocess.Popen([*CORRAL, "--root", corral.root, "events", "--interval",
                                       "100ms", b.id], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            deadline = time.monotonic() + 15
            first = json.loads(read_line(stream.stdout, deadline))  # the watch is set up
            assert first["type"] == "stats"
            assert first["data"]["memory"]["usage"]["limit"] == 32 << 20
            open(os.path.join(b.rootfs, "tmp", "go"), "w").close()
            seen = []
            while line := read_line(stream.stdout, deadline):
                seen.append(json.loads(line))
            assert stream.wait(5) == 0, stream.stderr.read()
            assert run.wait(15) == 137, _read(out.name)
        finally:
            for p in (stream, run):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    assert {"type": "oom", "id": b.id} in seen
    # `run` deleted it: no cgroup in any hierarchy, no state dir.
    assert [p for p in cg.paths.values() if os.path.exists(p)] == []
    assert _dirs_named(b.id) == []
    assert not os.path.exists(os.path.join(corral.root, b.id))
    os.unlink(out.name)


@needs_v1
def test_oom_killed_container_deletes_cleanly(corral, make_bundle):
    """create + start, the init is OOM-killed (SIGKILL: 137 to its waiter), the container
    reads stopped, and a plain `delete` removes its cgroup in every hierarchy."""
    b = make_bundle(["sh", "-c", "touch /tmp/go; " + HOG])
    b.config["linux"]["resources"] = MEM_32M
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    cg = _cgroup_of(corral, b.id)
    corral("start", b.id)
    status = _reap(pid)  # the init was reparented to us (a subreaper), as to a shim
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    oom = dict(line.split() for line in _read(_dir(cg, "memory") + "/memory.oom_control")
               .splitlines())
    assert int(oom["oom_kill"]) >= 1  # the kernel's OOM killer, not someone else's SIGKILL
    assert corral.state(b.id)["status"] == "stopped"
    corral("delete", b.id)
    assert [p for p in cg.paths.values() if os.path.exists(p)] == []
    assert _dirs_named(b.id) == []


def test_signal_killed_init_without_pid_namespace_deletes_everything(corral, make_bundle):
    """No pid namespace: the init's child outlives a SIGKILL of the init; delete kills it
    and removes the cgroup in every hierarchy."""
    b = make_bundle(["sh", "-c", "sleep 30 & exec sleep 31"])
    b.config["linux"]["namespaces"] = [ns for ns in b.config["linux"]["namespaces"]
                                       if ns["type"] != "pid"]
    b.write()
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    cg = _cgroup_of(corral, b.id)
    _wait_for(lambda: len(cg.pids()) == 2, what="two processes")
    (orphan,) = [p for p in cg.pids() if p != pid]
    os.kill(pid, signal.SIGKILL)
    assert os.waitstatus_to_exitcode(_reap(pid)) == -signal.SIGKILL
    assert corral.state(b.id)["status"] == "stopped"
    assert cg.pids() == [orphan]
    corral("delete", b.id)
    _wait_for(lambda: not os.path.exists(f"/proc/{orphan}")
              or _read(f"/proc/{orphan}/stat").split(") ")[1][0] == "Z", what="orphan dead")
    reap_exited()
    assert [p for p in cg.paths.values() if os.path.exists(p)] == []
    assert _dirs_named(b.id) == []


# ---- pids: a fork bomb -----------------------------------------------------------------------


@needs_v1
def test_pids_limit_stops_a_fork_bomb(corral, make_bundle):
    # Each process forks two more, down nine levels: 1023 processes wanted, 24 allowed.
    bomb = "f() { if [ $1 -gt 0 ]; then f $(($1-1)) & f $(($1-1)) & fi; sleep 30; }; f 9"
    b = make_bundle(["sh", "-c", bomb])
    b.config["linux"]["resources"] = {"pids": {"limit": 24}}
    b.write()
    corral("run", "-d", "-b", b.path, b.id)
    cg = _cgroup_of(corral, b.id)
    pids_dir = _dir(cg, "pids")

    def refused():
        events = dict(line.split() for line in _read(pids_dir + "/pids.events").splitlines())
        return int(events["max"]) > 0

    _wait_for(refused, what="a refused fork")
    time.sleep(0.2)
    assert int(_read(pids_dir + "/pids.current")) <= 24
    assert len(cg.pids()) <= 24
    stats = json.loads(corral("events", "--stats", b.id).stdout)["data"]
    assert stats["pids"]["limit"] == 24 and stats["pids"]["current"] <= 24
    corral("delete", "--force", b.id)
    assert _dirs_named(b.id) == []


# ---- cpu: a quota throttles a busy loop ------------------------------------------------------


@needs_v1
def test_cpu_quota_throttles_a_busy_loop(corral, make_bundle):
    b = make_bundle(["sh", "-c", "while :; do :; done"])
    b.config["linux"]["resources"] = {"cpu": {"quota": 10000, "period": 100000}}
    b.write()
    corral("run", "-d", "-b", b.path, b.id)
    cg = _cgroup_of(corral, b.id)
    usage_file = _dir(cg, "cpuacct") + "/cpuacct.usage"
    time.sleep(0.2)
    t0, u0 = time.monotonic(), int(_read(usage_file))
    time.sleep(0.8)
    t1, u1 = time.monotonic(), int(_read(usage_file))
    stat = dict(line.split() for line in _read(_dir(cg, "cpu") + "/cpu.stat").splitlines())
    corral("delete", "--force", b.id)
    rate = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.02 < rate < 0.25, f"busy loop used {rate:.2f} CPU under a 10% quota"
    assert int(stat["nr_throttled"]) > 0 and int(stat["throttled_time"]) > 0


# ---- pause / resume a counting loop ----------------------------------------------------------


def test_pause_freezes_a_counting_loop_and_resume_continues_it(corral, make_bundle):
    b = make_bundle(["sh", "-c", COUNTING])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    start = _stable_counter(b.rootfs)
    _wait_for(lambda: (_counter(b.rootfs) or 0) > start + 2, what="counting")
    corral("pause", b.id)
    assert corral.state(b.id)["status"] == "paused"
    frozen_at = _counter(b.rootfs)
    time.sleep(0.3)  # ~30 increments if it were running
    assert _counter(b.rootfs) == frozen_at
    corral("resume", b.id)
    assert corral.state(b.id)["status"] == "running"
    _wait_for(lambda: (_counter(b.rootfs) or 0) > (frozen_at or 0) + 5, what="counting again")
    corral("kill", b.id, "KILL")
    _reap(pid)
    corral("delete", b.id)


@needs_unified
def test_v2_freeze_and_kill_in_the_unified_hierarchy(corral, make_bundle):
    """The container's cgroup in the cgroup2 hierarchy, driven as on a pure-v2 host:
    cgroup.freeze stops the loop (cgroup.events says frozen), cgroup.kill ends it."""
    b = make_bundle(["sh", "-c", "sleep 30 & " + COUNTING])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    mine = _cgroup_of(corral, b.id)
    v2 = Cgroup("v2", mine.path, {UNIFIED: mine.paths[UNIFIED]},
                {UNIFIED: mine.mounts[UNIFIED]})
    assert pid in v2.pids() and len(v2.pids()) >= 2
    start = _stable_counter(b.rootfs)
    _wait_for(lambda: (_counter(b.rootfs) or 0) > start + 2, what="counting")
    v2.freeze()
    assert v2.frozen() and "frozen 1" in _read(mine.paths[UNIFIED] + "/cgroup.events")
    assert corral.state(b.id)["status"] == "running"  # the v1 freezer decides here
    frozen_at = _counter(b.rootfs)
    time.sleep(0.3)
    assert _counter(b.rootfs) == frozen_at
    v2.thaw()
    assert not v2.frozen()
    _wait_for(lambda: (_counter(b.rootfs) or 0) > (frozen_at or 0) + 3, what="counting again")
    v2.freeze()
    assert v2.kill_all(signal.SIGKILL)  # through cgroup.kill, frozen or not
    assert os.waitstatus_to_exitcode(_reap(pid)) == -signal.SIGKILL
    assert not v2.populated()
    corral("delete", b.id)
    assert _dirs_named(b.id) == []


# ---- update changes a live limit -------------------------------------------------------------


@needs_v1
def test_update_changes_live_limits(corral, make_bundle):
    # Once /tmp/go exists a subshell tries six background sleeps (ash gives up at the first
    # fork that fails), then the init notes its status.
    script = ("while [ ! -e /tmp/go ]; do usleep 20000; done; "
              "(for i in 1 2 3 4 5 6; do sleep 30 & done); echo $? > /tmp/forked; "
              "exec sleep 30")
    b = make_bundle(["sh", "-c", script])
    b.config["linux"]["resources"] = {"pids": {"limit": 100}, "memory": {"limit": 256 << 20},
                                      "cpu": {"shares": 1024, "quota": 50000,
                                              "period": 100000}}
    b.write()
    corral("run", "-d", "-b", b.path, b.id)
    cg = _cgroup_of(corral, b.id)
    corral("update", "--pids-limit", "5", "--memory", "64m", "--memory-swap", "96m",
           "--cpu-quota", "20000", "--cpu-period", "50000", "--cpu-shares", "256", b.id)
    assert _read(_dir(cg, "pids") + "/pids.max").strip() == "5"
    mem = _dir(cg, "memory")
    assert _read(mem + "/memory.limit_in_bytes").strip() == str(64 << 20)
    assert _read(mem + "/memory.memsw.limit_in_bytes").strip() == str(96 << 20)
    cpu = _dir(cg, "cpu")
    assert _read(cpu + "/cpu.cfs_quota_us").strip() == "20000"
    assert _read(cpu + "/cpu.cfs_period_us").strip() == "50000"
    assert _read(cpu + "/cpu.shares").strip() == "256"
    # The new pids limit holds for the running container: init, subshell, 3 sleeps.
    open(os.path.join(b.rootfs, "tmp", "go"), "w").close()
    forked = os.path.join(b.rootfs, "tmp", "forked")
    _wait_for(lambda: _read(forked).strip() if os.path.exists(forked) else False,
              what="the forks")
    assert _read(forked).strip() != "0"  # the subshell failed
    init = corral.state(b.id)["pid"]  # by now itself `exec sleep 30`
    sleeps = [p for p in cg.pids()
              if p != init and _read(f"/proc/{p}/cmdline") == "sleep\x0030\x00"]
    assert len(sleeps) == 3, sleeps
    assert int(_read(_dir(cg, "pids") + "/pids.current")) <= 5
    events = dict(line.split() for line in _read(_dir(cg, "pids") + "/pids.events")
                  .splitlines())
    assert int(events["max"]) > 0
    # Lowering memory below memory+swap's old value, and raising it back, both work.
    corral("update", "--memory", "200m", "--memory-swap", "300m", b.id)
    assert _read(mem + "/memory.limit_in_bytes").strip() == str(200 << 20)
    assert _read(mem + "/memory.memsw.limit_in_bytes").strip() == str(300 << 20)
    corral("delete", "--force", b.id)


# ---- ps lists exactly the container's pids ---------------------------------------------------


def test_ps_lists_exactly_the_pid_namespace(corral, make_bundle):
    b = make_bundle(["sh", "-c", "sleep 30 & sleep 31 & (sleep 32 & wait) & exec sleep 33"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    ns = os.readlink(f"/proc/{pid}/ns/pid")

    def in_namespace():
        found = set()
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.readlink(f"/proc/{name}/ns/pid") == ns:
                        found.add(int(name))
                except OSError:
                    pass
        return found

    _wait_for(lambda: len(in_namespace()) == 5, what="five processes")
    listed = json.loads(corral("ps", "-f", "json", b.id).stdout)
    assert listed == sorted(listed) and set(listed) == in_namespace() and pid in listed
    table = corral("ps", b.id, "-o", "pid").stdout.split()[1:]
    assert sorted(map(int, table)) == listed
    corral("delete", "--force", b.id)
    _reap(pid)


# ---- every resource field applied and read back on this host ---------------------------------


def _fields_on_this_host():
    """(resources, [(controller, file, expected text)]) for every field whose file exists
    here, on a new cgroup of each hierarchy."""
    res = {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20,
                      "swappiness": 20, "disableOOMKiller": False},
           "cpu": {"shares": 300, "quota": 30000, "period": 60000, "burst": 10000,
                   "idle": 0, "cpus": "0", "mems": "0"},
           "pids": {"limit": 50},
           "blockIO": {"weight": 400,
                       "throttleReadBpsDevice": [{"major": 7, "minor": 0, "rate": 1 << 20}],
                       "throttleWriteBpsDevice": [{"major": 7, "minor": 0, "rate": 2 << 20}],
                       "throttleReadIOPSDevice": [{"major": 7, "minor": 0, "rate": 300}],
                       "throttleWriteIOPSDevice": [{"major": 7, "minor": 0, "rate": 400}]}}
    expect = [
        ("memory", "memory.limit_in_bytes", str(64 << 20)),
        ("memory", "memory.soft_limit_in_bytes", str(32 << 20)),
        ("memory", "memory.memsw.limit_in_bytes", str(96 << 20)),
        ("memory", "memory.swappiness", "20"),
        ("cpu", "cpu.shares", "300"), ("cpu", "cpu.cfs_quota_us", "30000"),
        ("cpu", "cpu.cfs_period_us", "60000"), ("cpu", "cpu.cfs_burst_us", "10000"),
        ("cpu", "cpu.idle", "0"),
        ("cpuset", "cpuset.cpus", "0"), ("cpuset", "cpuset.mems", "0"),
        ("pids", "pids.max", "50"),
        ("blkio", "blkio.throttle.read_bps_device", f"7:0 {1 << 20}"),
        ("blkio", "blkio.throttle.write_bps_device", f"7:0 {2 << 20}"),
        ("blkio", "blkio.throttle.read_iops_device", "7:0 300"),
        ("blkio", "blkio.throttle.write_iops_device", "7:0 400"),
    ]
    return res, expect


@needs_v1
def test_every_resource_field_read_back_on_this_host(corral, make_bundle):
    res, expect = _fields_on_this_host()
    b = make_bundle(["sleep", "30"])
    b.config["linux"]["resources"] = res
    b.write()
    corral("create", "-b", b.path, b.id)
    cg = _cgroup_of(corral, b.id)
    checked = []
    for controller, name, want in expect:
        if controller != UNIFIED and not REAL.find(controller):
            continue
        d = _dir(cg, controller)
        if not os.path.exists(f"{d}/{name}"):
            continue
        assert _read(f"{d}/{name}").strip() == want, name
        checked.append(name)
    blkio = _dir(cg, "blkio") if REAL.find("blkio") else None
    if blkio:  # blkio.weight, or BFQ's blkio.bfq.weight where CFQ is gone
        name = "blkio.weight" if os.path.exists(blkio + "/blkio.weight") else "blkio.bfq.weight"
        assert _read(f"{blkio}/{name}").split()[-1] == "400"
        checked.append(name)
    oom_control = dict(line.split() for line in
                       _read(_dir(cg, "memory") + "/memory.oom_control").splitlines())
    assert oom_control["oom_kill_disable"] == "0"
    assert len(checked) >= 12, checked
    # The same values through `events --stats`.
    stats = json.loads(corral("events", "--stats", b.id).stdout)["data"]
    assert stats["memory"]["usage"]["limit"] == 64 << 20
    assert stats["memory"]["swap"]["limit"] == 96 << 20
    assert stats["pids"]["limit"] == 50
    assert stats["cpuset"]["cpus"] == [0] and stats["cpuset"]["mems"] == [0]
    # runc's types.CPUSet: its numbers always printed, in Go's field order.
    assert list(stats["cpuset"]) == [
        "cpus", "cpu_exclusive", "mems", "mem_hardwall", "mem_exclusive", "memory_migrate",
        "memory_spread_page", "memory_spread_slab", "memory_pressure", "sched_load_balance",
        "sched_relax_domain_level"]
    assert stats["cpuset"]["sched_load_balance"] == int(
        _read(_dir(cg, "cpuset") + "/cpuset.sched_load_balance"))
    corral("delete", b.id)


@needs_v1
def test_disable_oom_killer_read_back(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    b.config["linux"]["resources"] = {"memory": {"limit": 64 << 20, "disableOOMKiller": True}}
    b.write()
    corral("create", "-b", b.path, b.id)
    cg = _cgroup_of(corral, b.id)
    oom_control = dict(line.split() for line in
                       _read(_dir(cg, "memory") + "/memory.oom_control").splitlines())
    assert oom_control["oom_kill_disable"] == "1"
    corral("delete", b.id)


@pytest.mark.parametrize("res, field", [
    # The parent cgroup has no realtime budget to hand out: the kernel says EINVAL.
    ({"cpu": {"realtimeRuntime": 1000, "realtimePeriod": 1000000}},
     "linux.resources.cpu.realtimeRuntime"),
    # No CFQ here (blkio.leaf_weight is CFQ's): the missing file is named.
    ({"blockIO": {"leafWeight": 100}}, "linux.resources.blockIO.leafWeight"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]},
     "linux.resources.hugepageLimits[0]"),
    ({"network": {"classID": 0x100001}}, "linux.resources.network.classID"),
    ({"network": {"priorities": [{"name": "lo", "priority": 1}]}},
     "linux.resources.network.priorities[0]"),
])
@needs_v1
def test_fields_this_host_cannot_honour_are_named(corral, make_bundle, res, field):
    """Where this host has no file for a field (or refuses the value), create fails naming
    the field, and removes every cgroup it made."""
    if field.startswith("linux.resources.hugepageLimits") and REAL.find("hugetlb"):
        pytest.skip("this host mounts hugetlb")
    if field.startswith("linux.resources.network") and (REAL.find("net_cls")
                                                          or REAL.find("net_prio")):
        pytest.skip("this host mounts net_cls/net_prio")
    b = make_bundle(["true"])
    b.config["linux"]["resources"] = res
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"corral: {field}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert _dirs_named(b.id) == []
    assert not os.path.exists(os.path.join(corral.root, b.id))


# ---- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["linux"].update(resources={"memory": {"limit": -2}}),
     "linux.resources.memory.limit"),
    (lambda c: c["linux"].update(resources={"memory": {"reservation": -5}}),
     "linux.resources.memory.reservation"),
    (lambda c: c["linux"].update(resources={"cpu": {"shares": -1}}),
     "linux.resources.cpu.shares"),
    (lambda c: c["linux"].update(resources={"cpu": {"period": -100000}}),
     "linux.resources.cpu.period"),
    (lambda c: c["linux"].update(resources={"blockIO": {"weight": -10}}),
     "linux.resources.blockIO.weight"),
    (lambda c: c["linux"].update(resources={"devices": [{"allow": True, "type": "x"}]}),
     "linux.resources.devices[0].type"),
    (lambda c: c["linux"].update(resources={"devices": [{"allow": True, "type": "c",
                                                         "access": ""}]}),
     "linux.resources.devices[0].access"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/x", "type": "q", "major": 1,
                                           "minor": 1}]),
     "linux.devices[0].type"),
    (lambda c: c["linux"].update(cgroupsPath=f"/{CGROUP_PARENT}/../escape"),
     "linux.cgroupsPath"),
    (lambda c: c["linux"].update(cgroupsPath="../../escape"), "linux.cgroupsPath"),
])
def test_bad_values_get_one_clear_line_naming_the_field(corral, make_bundle, edit, field):
    b = make_bundle(["true"])
    edit(b.config)
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"corral: {field}: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))
    for point in REAL.hierarchies().values():
        assert not os.path.exists(f"{point}/escape")
    assert _dirs_named(b.id) == []


def test_bad_update_values_are_named(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("create", "-b", b.path, b.id)
    for argv, prefix in [
        (("--memory", "-5m"), "corral: --memory: "),
        (("--cpu-period", "-1"), "corral: --cpu-period: "),
        (("--cpu-shares", "-3"), "corral: --cpu-shares: "),
        (("--blkio-weight", "-3"), "corral: --blkio-weight: "),
    ]:
        proc = corral("update", *argv, b.id, check=False)
        assert proc.returncode == 1 and proc.stderr.startswith(prefix), (argv, proc.stderr)
    proc = corral("update", "-r", "-", b.id, input=b'{"memory": {"limit": -2}}', check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("corral: linux.resources.memory.limit: "), proc.stderr
    corral("delete", b.id)


# ---- the v2 mapping, every field, in a temp dir shaped like a cgroup2 tree --------------------


def _resources(res):
    doc = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"args": ["true"], "cwd": "/"},
           "linux": {"namespaces": [{"type": "mount"}], "resources": res}}
    return parse_config(doc).linux.resources


V2_FILES = ["memory.max", "memory.swap.max", "memory.low", "cpu.weight", "cpu.max",
            "cpu.max.burst", "cpu.idle", "pids.max", "io.weight", "io.max", "cpuset.cpus",
            "cpuset.mems", "hugetlb.2MB.max", "hugetlb.1GB.max", "cgroup.max.depth",
            "memory.high", "cgroup.controllers", "cgroup.subtree_control"]


def _v2_tree(tmp_path, bfq=False):
    top = tmp_path / "cg2"
    leaf = top / "corral" / "c"
    for d in (top, top / "corral", leaf):
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
        (d / "cgroup.subtree_control").write_text("")
    for name in V2_FILES + (["io.bfq.weight"] if bfq else []):
        if not (leaf / name).exists():
            (leaf / name).write_text("")
    return Cgroup("v2", "/corral/c", {UNIFIED: str(leaf)}, {UNIFIED: str(top)})


def _record_writes(monkeypatch, cg):
    """Every write as (directory relative to the mount, file, value, field): files that
    take many lines (io.max) keep only the last in the fake tree."""
    writes = []
    real = res_mod.write

    def spy(directory, name, value, field, **kw):
        writes.append((os.path.relpath(directory, cg.mounts[UNIFIED]), name, value, field))
        return real(directory, name, value, field, **kw)

    monkeypatch.setattr(res_mod, "write", spy)
    return writes


def test_v2_mapping_every_field(tmp_path, monkeypatch):
    cg = _v2_tree(tmp_path)
    writes = _record_writes(monkeypatch, cg)
    cg.set_resources(_resources({
        "memory": {"limit": 64 << 20, "reservation": 16 << 20, "swap": 96 << 20},
        "cpu": {"shares": 2048, "quota": 20000, "period": 50000, "burst": 1000, "idle": 1,
                "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 77},
        "blockIO": {"weight": 505,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 10},
                                     {"major": 8, "minor": 16, "weight": 1000}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 200}],
                    "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 300}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 400}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 21},
                           {"pageSize": "1GB", "limit": 1 << 30}],
        "unified": {"memory.high": str(60 << 20), "cgroup.max.depth": "5"}}))
    leaf = [(name, value, field) for d, name, value, field in writes if d == "corral/c"]
    R = "linux.resources"
    assert leaf == [
        ("memory.swap.max", str(32 << 20), f"{R}.memory.swap"),
        ("memory.max", str(64 << 20), f"{R}.memory.limit"),
        ("memory.low", str(16 << 20), f"{R}.memory.reservation"),
        ("cpu.idle", "1", f"{R}.cpu.idle"),
        ("cpu.weight", "174", f"{R}.cpu.shares"),
        ("cpu.max", "20000 50000", f"{R}.cpu.quota"),
        ("cpu.max.burst", "1000", f"{R}.cpu.burst"),
        ("cpuset.cpus", "0-1", f"{R}.cpu.cpus"),
        ("cpuset.mems", "0", f"{R}.cpu.mems"),
        ("pids.max", "77", f"{R}.pids.limit"),
        ("io.weight", str(convert(505)), f"{R}.blockIO.weight"),
        ("io.weight", "8:0 1", f"{R}.blockIO.weightDevice[0].weight"),
        ("io.weight", "8:16 10000", f"{R}.blockIO.weightDevice[1].weight"),
        ("io.max", "8:0 rbps=100", f"{R}.blockIO.throttleReadBpsDevice[0]"),
        ("io.max", "8:0 wbps=200", f"{R}.blockIO.throttleWriteBpsDevice[0]"),
        ("io.max", "8:0 riops=300", f"{R}.blockIO.throttleReadIOPSDevice[0]"),
        ("io.max", "8:0 wiops=400", f"{R}.blockIO.throttleWriteIOPSDevice[0]"),
        ("hugetlb.2MB.max", str(2 << 21), f"{R}.hugepageLimits[0].limit"),
        ("hugetlb.1GB.max", str(1 << 30), f"{R}.hugepageLimits[1].limit"),
        ("memory.high", str(60 << 20), f'{R}.unified["memory.high"]'),
        ("cgroup.max.depth", "5", f'{R}.unified["cgroup.max.depth"]'),
    ]
    # What the tree holds afterwards (single-value files).
    d = cg.paths[UNIFIED]
    for name, want in [("memory.max", str(64 << 20)), ("memory.swap.max", str(32 << 20)),
                       ("memory.low", str(16 << 20)), ("cpu.weight", "174"),
                       ("cpu.max", "20000 50000"), ("cpu.max.burst", "1000"),
                       ("cpu.idle", "1"), ("pids.max", "77"), ("cpuset.cpus", "0-1"),
                       ("memory.high", str(60 << 20)), ("cgroup.max.depth", "5")]:
        assert _read(f"{d}/{name}") == want, name
    # The controllers were enabled in every ancestor, never in the leaf.
    for ancestor in (".", "corral"):
        enabled = {v for dd, n, v, _ in writes if dd == ancestor and n == "cgroup.subtree_control"}
        assert enabled == {"+memory", "+cpu", "+cpuset", "+pids", "+io", "+hugetlb"}, ancestor


def test_stats_cpuset_shape_without_cpuset_files(tmp_path):
    from corral.cgroups import stats

    cg = _v2_tree(tmp_path)
    assert stats.read(cg)["cpuset"] == {
        "cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0, "memory_migrate": 0,
        "memory_spread_page": 0, "memory_spread_slab": 0, "memory_pressure": 0,
        "sched_load_balance": 0, "sched_relax_domain_level": 0}
    (tmp_path / "cg2" / "corral" / "c" / "cpuset.cpus.effective").write_text("0-2,5\n")
    (tmp_path / "cg2" / "corral" / "c" / "cpuset.mems.effective").write_text("0\n")
    got = stats.read(cg)["cpuset"]
    assert list(got)[:3] == ["cpus", "cpu_exclusive", "mems"]
    assert got["cpus"] == [0, 1, 2, 5] and got["mems"] == [0]


def convert(weight):
    return res_mod.convert_blkio_weight(weight)


def test_v2_mapping_unlimited_and_bfq(tmp_path, monkeypatch):
    cg = _v2_tree(tmp_path, bfq=True)
    writes = _record_writes(monkeypatch, cg)
    cg.set_resources(_resources({
        "memory": {"limit": -1, "swap": -1},
        "cpu": {"quota": -1, "period": 100000},
        "pids": {"limit": -1},
        "blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 200}]}}))
    leaf = [(name, value) for d, name, value, _ in writes if d == "corral/c"]
    assert leaf == [("memory.swap.max", "max"), ("memory.max", "max"),
                    ("cpu.max", "max 100000"), ("pids.max", "max"),
                    ("io.bfq.weight", "300"), ("io.bfq.weight", "8:0 200")]


@pytest.mark.parametrize("res, field", [
    ({"memory": {"swappiness": 10}}, "linux.resources.memory.swappiness"),
    ({"memory": {"disableOOMKiller": True}}, "linux.resources.memory.disableOOMKiller"),
    ({"memory": {"swap": 1 << 20}}, "linux.resources.memory.swap"),
    ({"cpu": {"realtimeRuntime": 100}}, "linux.resources.cpu.realtimeRuntime"),
    ({"cpu": {"realtimePeriod": 1000}}, "linux.resources.cpu.realtimePeriod"),
    ({"blockIO": {"leafWeight": 100}}, "linux.resources.blockIO.leafWeight"),
    ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 100}]}},
     "linux.resources.blockIO.weightDevice[0].leafWeight"),
    ({"network": {"classID": 1}}, "linux.resources.network"),
    ({"unified": {"misc.max": "x"}}, 'linux.resources.unified["misc.max"]'),
    ({"unified": {"nosuch.file": "1"}}, 'linux.resources.unified["nosuch.file"]'),
])
def test_v2_mapping_refusals_name_the_field(tmp_path, res, field):
    cg = _v2_tree(tmp_path)
    with pytest.raises(Exception) as info:
        cg.set_resources(_resources(res))
    assert str(info.value).startswith(field + ": "), str(info.value)


# ---- 500 containers created and deleted ------------------------------------------------------


def test_create_delete_loop_of_500_leaves_no_cgroup(tmp_path, make_bundle, _no_leaks):
    """In-process, through the blocking driver (the CLI's own path without the interpreter
    start): create, start, delete 500 containers; nothing may remain in any hierarchy."""
    from corral.runtime.blocking import create_container
    from corral.runtime.containers import Container
    from corral.runtime.prepare import prepare

    root = str(tmp_path / "state")
    b = make_bundle(["true"])
    started = time.monotonic()
    for i in range(500):
        cid = f"{b.id}-{i}"
        b.config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/loop/{cid}"
        b.write()
        prepared = prepare(root, cid, b.path)
        pid = create_container(prepared)
        container = Container(prepared.state_dir, prepared.record)
        paths = list(prepared.cgroup.paths.values())
        assert len(paths) == len(REAL.hierarchies())
        assert all(os.path.isdir(p) for p in paths) and pid in prepared.cgroup.pids()
        if i % 2:
            container.start()
            _reap(pid)
            container.delete()
        else:  # never started: deleted in the created state
            container.delete()
            _reap(pid)
        assert not any(os.path.exists(p) for p in paths)
        assert time.monotonic() - started < 120, f"only {i} containers in 120 s"
    reap_exited()
    assert cgroup_dirs() == []
    assert os.listdir(root) == []


def test_failed_create_after_the_cgroup_join_removes_everything(corral, make_bundle):
    """The child fails after the init joined its cgroup (no such executable): create exits
    1 with one line and leaves no cgroup in any hierarchy, no process, no state dir."""
    b = make_bundle(["/no/such/program"])
    b.config["linux"]["resources"] = {"pids": {"limit": 10}, "memory": {"limit": 64 << 20}}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "/no/such/program" in proc.stderr
    assert _dirs_named(b.id) == []
    assert not os.path.exists(os.path.join(corral.root, b.id))
