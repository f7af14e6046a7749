"""corral.cgroups: layout detection, path resolution, create/destroy bookkeeping (on fake
trees), and the real kernel's v1, hybrid and v2 behaviour (as root, under corral-test-<pid>)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from corral.cgroups import (UNIFIED, Cgroup, Layout, detect, device_rule_line, own_cgroups,
                            parse_mountinfo, resolve)
from corral.cgroups import group as group_mod
from corral.errors import CgroupError, ConfigError, NotSupportedError
from corral.oci.config import DeviceRule

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

V1 = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:9 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:11 - cgroup cgroup rw,net_prio,net_cls
31 25 0:28 / /sys/fs/cgroup/devices rw,nosuid shared:12 - cgroup cgroup rw,devices
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid shared:13 - cgroup cgroup rw,cpuset,clone_children
99 40 0:28 / /mnt/devices-again rw - cgroup cgroup rw,devices
"""

V2 = """\
22 26 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 21 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""


# -- detection -----------------------------------------------------------------------------

def test_detect_hybrid():
    layout = parse_mountinfo(HYBRID)
    assert layout.mode == "hybrid"
    assert layout.unified == "/sys/fs/cgroup/unified"
    assert layout.v1 == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                         "cpuset": "/sys/fs/cgroup/cpuset", "pids": "/sys/fs/cgroup/pids",
                         "name=systemd": "/sys/fs/cgroup/systemd"}
    assert set(layout.hierarchies()) == set(layout.v1) | {UNIFIED}


def test_detect_v1_comounts_options_and_duplicates():
    layout = parse_mountinfo(V1)
    assert layout.mode == "v1" and layout.unified is None
    assert layout.v1 == {"name=systemd": "/sys/fs/cgroup/systemd",
                         "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                         "net_cls,net_prio": "/sys/fs/cgroup/net_cls,net_prio",
                         "devices": "/sys/fs/cgroup/devices",
                         "cpuset": "/sys/fs/cgroup/cpuset"}
    assert layout.find("cpuacct") == "cpu,cpuacct"
    assert layout.find("memory") is None


def test_detect_v2_ignores_named_v1_hierarchy():
    layout = parse_mountinfo(V2 + "50 27 0:40 / /sys/fs/cgroup/systemd rw - cgroup cgroup "
                                  "rw,name=systemd\n")
    assert layout.mode == "v2"
    assert layout.unified == "/sys/fs/cgroup"
    assert layout.hierarchies() == {UNIFIED: "/sys/fs/cgroup"}


def test_detect_unescapes_and_reads_file(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text("41 31 0:38 /sub /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n")
    layout = detect(str(path))
    assert layout == Layout("v2", {}, "/mnt/my cgroups", {UNIFIED: "/sub"})


def test_detect_without_cgroups_fails(tmp_path):
    with pytest.raises(CgroupError, match="no cgroup"):
        parse_mountinfo("22 26 0:5 / /proc rw - proc proc rw\n")
    with pytest.raises(CgroupError, match="read .*missing"):
        detect(str(tmp_path / "missing"))


def test_detect_real_host():
    layout = detect()
    assert layout.mode in ("v1", "hybrid", "v2")
    for point in layout.hierarchies().values():
        assert os.path.isdir(point)


def test_detect_avoids_heavy_imports():
    code = ("import sys; import corral.cgroups as c; c.detect(); "
            "bad = {'re', 'pathlib', 'typing', 'dataclasses', 'enum', 'signal', 'trio'}"
            " & set(sys.modules); print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- path resolution -----------------------------------------------------------------------

def test_resolve_absolute_and_default():
    layout = parse_mountinfo(HYBRID)
    paths = resolve(layout, "/a/b", "c1")
    assert paths["cpu"] == "/sys/fs/cgroup/cpu/a/b"
    assert paths[UNIFIED] == "/sys/fs/cgroup/unified/a/b"
    assert resolve(layout, None, "c1")["pids"] == "/sys/fs/cgroup/pids/corral/c1"
    assert resolve(layout, "", "c1", "other")["pids"] == "/sys/fs/cgroup/pids/other/c1"
    assert resolve(parse_mountinfo(V2), "/x/./y//", "c1") == {UNIFIED: "/sys/fs/cgroup/x/y"}


def test_resolve_relative_uses_own_cgroup(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("3:cpuacct,cpu:/user/1\n2:name=systemd:/sess\n1:net_prio,net_cls:/\n"
                    "9:devices:/\n8:cpuset:/\n0::/unused\n")
    assert own_cgroups(str(proc))["cpu,cpuacct"] == "/user/1"
    paths = resolve(parse_mountinfo(V1), "box/c1", "c1", proc_self_cgroup=str(proc))
    assert paths["cpu,cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/user/1/box/c1"
    assert paths["name=systemd"] == "/sys/fs/cgroup/systemd/sess/box/c1"
    assert paths["net_cls,net_prio"] == "/sys/fs/cgroup/net_cls,net_prio/box/c1"


def test_resolve_relative_strips_mount_root(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/ns/inner\n")
    layout = Layout("v2", {}, "/sys/fs/cgroup", {UNIFIED: "/ns"})
    paths = resolve(layout, "c", "c", proc_self_cgroup=str(proc))
    assert paths == {UNIFIED: "/sys/fs/cgroup/inner/c"}
    proc.write_text("0::/elsewhere\n")
    with pytest.raises(ConfigError, match="outside its mount"):
        resolve(layout, "c", "c", proc_self_cgroup=str(proc))


@pytest.mark.parametrize("bad", ["/a/../b", "../x", "a/..", "/a/b/.."])
def test_resolve_rejects_dotdot(bad):
    with pytest.raises(ConfigError) as info:
        resolve(parse_mountinfo(HYBRID), bad, "c1")
    assert info.value.field == "linux.cgroupsPath"


def test_resolve_rejects_root_systemd_form_and_bad_ids(tmp_path):
    layout = parse_mountinfo(HYBRID)
    with pytest.raises(ConfigError, match="root cgroup"):
        resolve(layout, "/", "c1")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    with pytest.raises(ConfigError, match="root cgroup"):
        resolve(parse_mountinfo(V2), ".", "c1", proc_self_cgroup=str(proc))
    # The systemd form needs the systemd driver (--systemd-cgroup): the error says so.
    with pytest.raises(ConfigError, match="needs --systemd-cgroup"):
        resolve(layout, "system.slice:corral:c1", "c1")
    for bad_id in ("", "a/b", ".."):
        with pytest.raises(ConfigError):
            resolve(layout, None, bad_id)
    with pytest.raises(ConfigError):
        Cgroup.for_container(layout, None, "c1", default_parent="../up")


# -- create / destroy on a fake tree -------------------------------------------------------

def fake_layout(tmp_path, v1=("cpu", "pids", "name=systemd"), unified=True) -> Layout:
    """A hybrid (or v1/v2) layout whose mount points are plain tmp directories."""
    lines = []
    for i, key in enumerate(v1):
        point = tmp_path / key.replace("name=", "")
        point.mkdir()
        lines.append(f"{30 + i} 1 0:{30 + i} / {point} rw - cgroup cgroup rw,{key}")
    if unified:
        (tmp_path / "unified").mkdir()
        lines.append(f"60 1 0:60 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw")
    return parse_mountinfo("\n".join(lines) + "\n")


def test_create_destroy_removes_only_what_it_made(tmp_path):
    layout = fake_layout(tmp_path)
    (tmp_path / "cpu" / "a").mkdir()  # someone else's parent, in one hierarchy only
    cg = Cgroup.for_container(layout, "/a/b/c", "c")
    cg.create()
    assert all(os.path.isdir(p) for p in cg.paths.values())
    assert cg.prune["cpu"] == [f"{tmp_path}/cpu/a/b"]
    assert cg.prune["pids"] == [f"{tmp_path}/pids/a", f"{tmp_path}/pids/a/b"]
    cg.create()  # idempotent: nothing new made, nothing forgotten
    assert cg.prune["pids"] == [f"{tmp_path}/pids/a", f"{tmp_path}/pids/a/b"]
    os.mkdir(cg.paths[UNIFIED] + "/nested")  # a child cgroup made inside the container
    os.mkdir(cg.paths[UNIFIED] + "/nested/deeper")
    cg.destroy()
    assert not any(os.path.exists(p) for p in cg.paths.values())
    assert sorted(os.listdir(tmp_path / "cpu")) == ["a"] and not os.listdir(tmp_path / "cpu/a")
    for key in ("pids", "systemd", "unified"):
        assert os.listdir(tmp_path / key) == []
    cg.destroy()  # already gone: fine


def test_destroy_keeps_nonempty_parent_and_never_created(tmp_path):
    layout = fake_layout(tmp_path, v1=("pids",))
    cg = Cgroup.for_container(layout, "/p/c", "c")
    Cgroup.for_container(layout, "/p/c", "c").destroy()  # never created
    cg.create()
    os.mkdir(tmp_path / "pids/p/other")
    cg.destroy()
    assert os.listdir(tmp_path / "pids/p") == ["other"]
    assert not os.path.exists(tmp_path / "unified/p")


def test_default_parent_removed_by_last_container(tmp_path):
    layout = fake_layout(tmp_path)
    one = Cgroup.for_container(layout, None, "one")
    two = Cgroup.for_container(layout, None, "two")
    one.create()
    two.create()
    assert one.paths["pids"] == f"{tmp_path}/pids/corral/one"
    one.destroy()
    assert os.listdir(tmp_path / "pids/corral") == ["two"]
    two.destroy()  # did not make /corral, still removes it once empty
    assert all(os.listdir(tmp_path / k) == [] for k in ("cpu", "pids", "systemd", "unified"))


def test_mkdir_retries_when_parent_vanishes(tmp_path, monkeypatch):
    layout = fake_layout(tmp_path, v1=(), unified=True)
    os.mkdir(tmp_path / "unified/corral")
    real_mkdir, raced = os.mkdir, []

    def racing_mkdir(path, mode=0o777):
        if str(path).endswith("/corral/c") and not raced:
            raced.append(path)
            os.rmdir(tmp_path / "unified/corral")  # a sibling's destroy pruned it
        return real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    cg = Cgroup.for_container(layout, None, "c")
    cg.create()
    assert raced and os.path.isdir(cg.paths[UNIFIED])
    assert cg.prune[UNIFIED] == [f"{tmp_path}/unified/corral"]


def test_concurrent_sibling_creates_fake_tree(tmp_path):
    layout = fake_layout(tmp_path)
    run_concurrent_siblings(layout, "corral")
    assert all(os.listdir(tmp_path / k) == [] for k in ("cpu", "pids", "systemd", "unified"))


def run_concurrent_siblings(layout, parent, threads=8, rounds=25, check=None):
    errors = []

    def worker(n):
        try:
            for r in range(rounds):
                cg = Cgroup.for_container(layout, None, f"s{n}-{r}", default_parent=parent)
                cg.create()
                assert all(os.path.isdir(p) for p in cg.paths.values())
                if check:
                    check(cg)
                cg.destroy()
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []


def test_create_failure_cleans_up(tmp_path):
    layout = fake_layout(tmp_path)
    os.rmdir(tmp_path / "systemd")  # a mount point that vanished
    cg = Cgroup.for_container(layout, None, "c")
    with pytest.raises(CgroupError, match=r"mkdir .*systemd/corral: No such file"):
        cg.create()
    assert all(os.listdir(tmp_path / k) == [] for k in ("cpu", "pids", "unified"))


def test_cpuset_copy_down(tmp_path):
    layout = fake_layout(tmp_path, v1=("cpuset",), unified=False)
    top = tmp_path / "cpuset"
    (top / "cpuset.cpus").write_text("0-3\n")
    (top / "cpuset.mems").write_text("0\n")
    for d, cpus in (("a", ""), ("a/b", "2"), ("a/b/c", "")):  # existing levels (cgroupfs
        (top / d).mkdir()                                     # makes these files itself)
        (top / d / "cpuset.cpus").write_text(cpus)
        (top / d / "cpuset.mems").write_text("")
    Cgroup.for_container(layout, "/a/b/c", "c").create()
    assert (top / "a/cpuset.cpus").read_text() == "0-3"
    assert (top / "a/b/cpuset.cpus").read_text() == "2"  # set: never overwritten
    assert (top / "a/b/c/cpuset.cpus").read_text() == "2"
    assert (top / "a/b/c/cpuset.mems").read_text() == "0"


def test_json_round_trip(tmp_path):
    layout = fake_layout(tmp_path)
    cg = Cgroup.for_container(layout, None, "c")
    cg.create()
    again = Cgroup.from_json(json.loads(json.dumps(cg.to_json())))
    assert again.to_json() == cg.to_json()
    assert (again.mode, again.path, again.paths, again.prune) == (
        "hybrid", "/corral/c", cg.paths, cg.prune)
    again.destroy()
    assert not os.path.exists(tmp_path / "pids/corral")


def test_mount_sources(tmp_path):
    cg = Cgroup.for_container(parse_mountinfo(HYBRID), "/x", "x")
    assert ("cpu", "/sys/fs/cgroup/cpu/x") in cg.mount_sources()
    assert ("systemd", "/sys/fs/cgroup/systemd/x") in cg.mount_sources()
    assert ("unified", "/sys/fs/cgroup/unified/x") in cg.mount_sources()
    assert len(cg.mount_sources()) == 6
    v1 = Cgroup.for_container(parse_mountinfo(V1), "/x", "x")
    assert ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/x") in v1.mount_sources()
    v2 = Cgroup.for_container(parse_mountinfo(V2), "/x", "x")
    assert v2.mount_sources() == [("", "/sys/fs/cgroup/x")]


# -- devices -------------------------------------------------------------------------------

def test_device_rule_lines():
    assert device_rule_line(DeviceRule(allow=False)) == "a *:* rwm"
    assert device_rule_line(DeviceRule(True, "c", 1, 3, "rw")) == "c 1:3 rw"
    assert device_rule_line(DeviceRule(True, "b", 8, None, "m")) == "b 8:* m"
    assert device_rule_line(DeviceRule(True, "c", -1, -1, "r")) == "c *:* r"
    for bad in (DeviceRule(True, "p"), DeviceRule(True, "c", access="rx"),
                DeviceRule(True, "c", access="")):
        with pytest.raises(ConfigError, match="linux.resources.devices"):
            device_rule_line(bad)


def test_set_devices_writes_in_order(tmp_path, monkeypatch):
    writes = []
    monkeypatch.setattr(group_mod, "write_each",
                        lambda path, values: writes.append((path, list(values))))
    cg = Cgroup.for_container(parse_mountinfo(V1), "/x", "x")
    cg.set_devices([DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"),
                    DeviceRule(True, "c", 1, 5, "rw"), DeviceRule(False, "b", 8, 0, "m")])
    cg.set_devices([])
    # in order, consecutive rules of one kind through one descriptor
    assert writes == [("/sys/fs/cgroup/devices/x/devices.deny", ["a *:* rwm"]),
                      ("/sys/fs/cgroup/devices/x/devices.allow", ["c 1:3 rwm", "c 1:5 rw"]),
                      ("/sys/fs/cgroup/devices/x/devices.deny", ["b 8:0 m"])]


def test_set_devices_on_v2_attaches_an_ebpf_program(monkeypatch):
    from corral.cgroups import ebpf

    calls = []
    monkeypatch.setattr(ebpf, "apply_device_rules", lambda d, rules: calls.append((d, rules)))
    cg = Cgroup.for_container(parse_mountinfo(V2), "/x", "x")
    cg.set_devices(())  # nothing asked: no program
    assert calls == []
    cg.set_devices([DeviceRule(False)])
    assert calls == [("/sys/fs/cgroup/x", [DeviceRule(False)])]


# -- the real kernel -----------------------------------------------------------------------

REAL = detect()
TEST_PARENT = f"corral-test-{os.getpid()}-cgroups"  # its own: other tests leave theirs
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for real cgroups")


def _remove_tree(path):
    if not os.path.isdir(path):
        return
    for d in group_mod._subdirs(path) + [path]:
        try:
            os.rmdir(d)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


@pytest.fixture
def procs():
    """Processes a test started; killed and reaped whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture
def real_parent(procs):
    """The test's own top-level cgroup name; its trees are removed even if a test fails,
    and a test that passed must already have left none."""
    leftovers = []
    yield TEST_PARENT
    for p in procs:  # the tree can only go once its tasks are gone
        if p.poll() is None:
            p.kill()
        p.wait()
    for point in REAL.hierarchies().values():
        path = f"{point}/{TEST_PARENT}"
        if os.path.exists(path):
            leftovers.append(path)
        _remove_tree(path)
    assert leftovers == []


def spawn(procs, *argv):
    p = subprocess.Popen(argv or ["sleep", "30"])
    procs.append(p)
    return p


def assert_all_gone(cg):
    assert [p for p in cg.paths.values() if os.path.exists(p)] == []
    assert [d for ds in cg.prune.values() for d in ds if os.path.exists(d)] == []
    for point in REAL.hierarchies().values():
        assert not os.path.exists(f"{point}/{TEST_PARENT}")


@needs_root
def test_real_lifecycle(real_parent, procs):
    cg = Cgroup.for_container(REAL, f"/{real_parent}/life", "life")
    cg.create()
    p = spawn(procs)
    cg.add(p.pid)
    with open(f"/proc/{p.pid}/cgroup") as f:  # "3:cpu,cpuacct:/path", "0::/path"
        joined = {",".join(sorted(names.split(","))) or UNIFIED: path
                  for _, names, path in (line.split(":", 2) for line in f.read().split())}
    for key in cg.paths:
        assert joined[key] == f"/{real_parent}/life", key
    assert cg.pids() == [p.pid]
    assert cg.populated()
    assert cg.kill_all(signal.SIGKILL)
    assert p.wait(5) == -signal.SIGKILL
    assert cg.pids() == []
    cg.destroy()
    assert_all_gone(cg)


@needs_root
@pytest.mark.skipif("devices" not in REAL.v1, reason="no v1 devices controller here")
def test_real_v1_devices(real_parent):
    cg = Cgroup.for_container(REAL, None, "dev", default_parent=real_parent)
    cg.create()
    try:
        cg.set_devices([DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"),
                        DeviceRule(True, "c", 136, None, "rw"), DeviceRule(True, "b", 8, 0, "r")])
        with open(cg.paths["devices"] + "/devices.list") as f:
            assert f.read().split("\n")[:-1] == ["c 1:3 rwm", "c 136:* rw", "b 8:0 r"]
        cg.set_devices([DeviceRule(False, "c", 1, 3, "w")])
        with open(cg.paths["devices"] + "/devices.list") as f:
            assert "c 1:3 rm" in f.read().split("\n")
    finally:
        cg.destroy()
    assert_all_gone(cg)


@needs_root
def test_real_nested_and_forking_kill(real_parent, procs):
    cg = Cgroup.for_container(REAL, f"/{real_parent}/tree", "tree")
    cg.create()
    go = f"/tmp/corral-test-go-{os.getpid()}"  # the shell forks only once it is in the cgroup
    shell = spawn(procs, "sh", "-c",
                  f"while [ ! -e {go} ]; do sleep 0.01; done; sleep 30 & sleep 30 & wait")
    lone = spawn(procs)
    cg.add(shell.pid)
    cg.add(lone.pid)
    open(go, "w").close()
    for path in cg.paths.values():  # the container made a child cgroup of its own
        os.mkdir(path + "/sub")
        if path.startswith(REAL.v1.get("cpuset", "\0")):
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(f"{path}/{name}") as src, open(f"{path}/sub/{name}", "w") as dst:
                    dst.write(src.read())
        with open(path + "/sub/cgroup.procs", "w") as f:
            f.write(str(lone.pid))
    deadline = time.monotonic() + 5
    while len(cg.pids()) < 4 and time.monotonic() < deadline:  # sh forks its sleeps
        time.sleep(0.01)
    assert len(cg.pids()) == 4 and lone.pid in cg.pids() and shell.pid in cg.pids()
    if UNIFIED in cg.paths:  # also the pid-iterating path: a v1-only view of the same dirs
        v1_only = Cgroup(cg.mode, cg.path, {k: v for k, v in cg.paths.items() if k != UNIFIED},
                         cg.mounts)
        assert v1_only.pids() == cg.pids()
        assert v1_only.kill_all(signal.SIGKILL)
    else:
        assert cg.kill_all(signal.SIGKILL)
    assert shell.wait(5) == -signal.SIGKILL and lone.wait(5) == -signal.SIGKILL
    os.unlink(go)
    assert cg.pids() == []
    cg.destroy()
    assert_all_gone(cg)


@needs_root
def test_real_sigterm_and_destroy_waits_for_exit(real_parent, procs):
    cg = Cgroup.for_container(REAL, f"/{real_parent}/term", "term")
    cg.create()
    p = spawn(procs)
    cg.add(p.pid)
    assert cg.kill_all(signal.SIGTERM)
    assert p.wait(5) == -signal.SIGTERM
    q = spawn(procs)
    cg.add(q.pid)
    threading.Timer(0.1, q.kill).start()
    cg.destroy()  # EBUSY until the task is gone, then succeeds
    assert q.wait(5) == -signal.SIGKILL
    assert_all_gone(cg)


@needs_root
def test_real_add_errors_name_file(real_parent):
    cg = Cgroup.for_container(REAL, None, "bad", default_parent=real_parent)
    cg.create()
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            never = int(f.read())  # pids are always below pid_max: nobody's process
        with pytest.raises(CgroupError) as info:
            cg.add(never)
        msg = str(info.value)
        assert msg.startswith("write /sys/fs/cgroup/") and "/cgroup.procs: " in msg
        assert "\n" not in msg
    finally:
        cg.destroy()
    assert_all_gone(cg)


@needs_root
@pytest.mark.skipif(REAL.unified is None, reason="no cgroup2 hierarchy")
def test_real_unified_only_as_pure_v2(real_parent, procs):
    """The unified hierarchy driven as a pure-v2 host would be: one dir, cgroup.kill."""
    layout = Layout("v2", {}, REAL.unified, {UNIFIED: REAL.roots.get(UNIFIED, "/")})
    cg = Cgroup.for_container(layout, None, "v2", default_parent=real_parent)
    assert list(cg.paths) == [UNIFIED]
    assert cg.mount_sources() == [("", f"{REAL.unified}/{real_parent}/v2")]
    cg.create()
    p = spawn(procs)
    cg.add(p.pid)
    assert cg.pids() == [p.pid]
    cg.set_devices([DeviceRule(False), DeviceRule(True, "c", 1, 3)])  # eBPF, as on pure v2
    assert cg.kill_all(signal.SIGKILL)
    assert p.wait(5) == -signal.SIGKILL
    assert not cg.populated()
    cg.destroy()
    assert not os.path.exists(f"{REAL.unified}/{real_parent}")


@needs_root
def test_real_concurrent_siblings_share_default_parent(real_parent):
    def cpuset_ready(cg):
        if "cpuset" in cg.paths:
            with open(cg.paths["cpuset"] + "/cpuset.cpus") as f:
                assert f.read().strip()

    run_concurrent_siblings(REAL, real_parent, threads=8, rounds=20, check=cpuset_ready)
    for point in REAL.hierarchies().values():
        assert not os.path.exists(f"{point}/{real_parent}")


# -- freezer -----------------------------------------------------------------------------


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    return raw[raw.rindex(")") + 2]


def _freeze_thaw(cg, p, v1):
    assert not cg.frozen()
    cg.freeze()
    assert cg.frozen()
    if v1:  # the v1 freezer shows D; a v2-frozen task still reads S (it sleeps in a trap)
        assert _proc_state(p.pid) == "D"
    cg.freeze()  # idempotent
    cg.thaw()
    assert not cg.frozen()
    assert _proc_state(p.pid) in "SR"


@needs_root
@pytest.mark.skipif(REAL.find("freezer") is None, reason="no v1 freezer here")
def test_real_v1_freeze_thaw_and_kill_frozen(real_parent, procs):
    cg = Cgroup.for_container(REAL, f"/{real_parent}/frz", "frz")
    cg.create()
    p = spawn(procs)
    cg.add(p.pid)
    _freeze_thaw(cg, p, v1=True)
    cg.freeze()
    assert cg.kill_all(signal.SIGKILL)  # thaws so the frozen task can die
    assert p.wait(5) == -signal.SIGKILL
    cg.destroy()


@needs_root
@pytest.mark.skipif(REAL.unified is None, reason="no cgroup2 hierarchy")
def test_real_v2_freeze_thaw(real_parent, procs):
    layout = Layout("v2", {}, REAL.unified, {UNIFIED: REAL.roots.get(UNIFIED, "/")})
    cg = Cgroup.for_container(layout, f"/{real_parent}/frz2", "frz2")
    cg.create()
    p = spawn(procs)
    cg.add(p.pid)
    _freeze_thaw(cg, p, v1=False)
    cg.freeze()
    assert cg.kill_all(signal.SIGKILL)
    assert p.wait(5) == -signal.SIGKILL
    cg.destroy()


def test_frozen_of_missing_cgroup_is_false(tmp_path):
    cg = Cgroup("v1", "/x", {"freezer": str(tmp_path / "gone")}, {"freezer": str(tmp_path)})
    assert not cg.frozen()
    cg = Cgroup("v2", "/x", {UNIFIED: str(tmp_path / "gone")}, {UNIFIED: str(tmp_path)})
    assert not cg.frozen()
