"""The systemd cgroup driver for real: systemd boots as PID 1 of a container that corral
runs (tests/systemd_box.py); inside it ``corral --systemd-cgroup`` runs containers whose
cgroups are systemd's transient scopes: limits enforced, pause/resume, update, stats, delete
removing the unit."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import CORRAL, base_config
from tests.systemd_box import REPO, SKIP_UNLESS_BOOTABLE, booted_box

pytestmark = SKIP_UNLESS_BOOTABLE


@pytest.fixture
def box(corral, tmp_path, rootfs_template):
    with booted_box(corral, tmp_path) as b:
        yield b


def _bundle(inner, rootfs_template, cid: str, args: list[str], resources: dict,
            cgroups_path: str | None, annotations: dict | None = None) -> str:
    bundle = inner / cid
    bundle.mkdir()
    shutil.copytree(rootfs_template, bundle / "rootfs", symlinks=True)
    config = base_config(args, cid)
    config["linux"]["resources"] = resources
    config["annotations"] = annotations or {}
    if cgroups_path is None:
        del config["linux"]["cgroupsPath"]
    else:
        config["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(config))
    return f"/inner/{cid}"


def test_scopes_made_by_systemd_hold_the_containers(box, tmp_path, rootfs_template):
    inner = tmp_path / "inner"
    limits = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50},
              "cpu": {"shares": 512, "quota": 50000, "period": 100000}}
    path = _bundle(inner, rootfs_template, "web1", ["sleep", "600"], limits,
                   "machine-corral.slice:corral:web1",
                   {"org.systemd.property.TimeoutStopSec": "7",
                    "org.systemd.property.CollectMode": "'inactive-or-failed'"})
    box.inner("run", "-d", "-b", path, "web1")
    unit = "corral-web1.scope"
    props = box.show(unit, "ActiveState", "ControlGroup", "MemoryLimit", "TasksMax",
                     "CPUShares", "CPUQuotaPerSecUSec", "Delegate", "Slice", "DevicePolicy",
                     "TimeoutStopUSec", "CollectMode")
    assert props["ActiveState"] == "active", props
    # a-b.slice nests as systemd does
    assert props["ControlGroup"] == "/machine.slice/machine-corral.slice/corral-web1.scope"
    assert props["Slice"] == "machine-corral.slice" and props["Delegate"] == "yes"
    assert props["MemoryLimit"] == str(64 << 20) and props["TasksMax"] == "50"
    assert props["CPUShares"] == "512" and props["CPUQuotaPerSecUSec"] == "500ms"
    assert props["DevicePolicy"] == "strict"
    # org.systemd.property.* annotations, runc's way (...Sec in microseconds)
    assert props["TimeoutStopUSec"] == "7s" and props["CollectMode"] == "inactive-or-failed"
    group = props["ControlGroup"]
    pid = json.loads(box.inner("state", "web1").stdout)["pid"]
    for hierarchy in ("memory", "pids", "cpu", "systemd", "freezer", "cpuset"):
        assert box.sh(f"cat /sys/fs/cgroup/{hierarchy}{group}/cgroup.procs").stdout.split() \
            == [str(pid)], hierarchy
    assert box.sh(f"cat /sys/fs/cgroup/memory{group}/memory.limit_in_bytes").stdout.strip() \
        == str(64 << 20)
    assert box.sh(f"cat /sys/fs/cgroup/pids{group}/pids.max").stdout.strip() == "50"
    assert box.sh(f"cat /sys/fs/cgroup/cpu{group}/cpu.cfs_quota_us").stdout.strip() == "50000"

    # pause / resume: the freezer of the scope's cgroup
    box.inner("pause", "web1")
    assert json.loads(box.inner("state", "web1").stdout)["status"] == "paused"
    assert box.sh(f"cat /sys/fs/cgroup/freezer{group}/freezer.state").stdout.strip() \
        == "FROZEN"
    box.inner("resume", "web1")
    assert json.loads(box.inner("state", "web1").stdout)["status"] == "running"

    # update: systemd's property and the cgroup file both change
    box.inner("update", "--memory", "96M", "--pids-limit", "70", "web1")
    props = box.show(unit, "MemoryLimit", "TasksMax")
    assert props == {"MemoryLimit": str(96 << 20), "TasksMax": "70"}
    assert box.sh(f"cat /sys/fs/cgroup/memory{group}/memory.limit_in_bytes").stdout.strip() \
        == str(96 << 20)
    assert box.sh(f"cat /sys/fs/cgroup/pids{group}/pids.max").stdout.strip() == "70"

    # stats, from the scope's cgroup
    stats = json.loads(box.inner("events", "--stats", "web1").stdout)["data"]
    assert stats["memory"]["usage"]["limit"] == 96 << 20
    assert stats["pids"]["current"] >= 1 and stats["pids"]["limit"] == 70

    # delete stops the unit; systemd and corral remove every directory
    box.inner("kill", "web1", "KILL")
    box.inner("delete", "--force", "web1")
    assert box.show(unit, "LoadState")["LoadState"] == "not-found"
    left = box.sh("ls -d /sys/fs/cgroup/*/machine.slice/machine-corral.slice/corral-web1.scope"
                  " 2>/dev/null", check=False).stdout.split()
    assert left == []


def test_limits_are_enforced_in_a_scope(box, tmp_path, rootfs_template):
    inner = tmp_path / "inner"
    # memory: the kernel OOM-kills a process that goes past the scope's MemoryLimit
    hog = "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived"
    path = _bundle(inner, rootfs_template, "hog", ["sh", "-c", hog],
                   {"memory": {"limit": 16 << 20, "swap": 16 << 20}},
                   None)  # the default: system.slice:corral:hog
    proc = box.inner("run", "-b", path, "hog", check=False)
    assert proc.returncode == 137 and "survived" not in proc.stdout, proc
    assert box.show("corral-hog.scope", "LoadState")["LoadState"] == "not-found"
    # pids: forks past TasksMax fail
    forks = "i=0; while [ $i -lt 30 ]; do sleep 30 & i=$((i+1)); done; echo all forked"
    path = _bundle(inner, rootfs_template, "forks", ["sh", "-c", forks],
                   {"pids": {"limit": 10}}, None)
    proc = box.inner("run", "-b", path, "forks", check=False)
    assert "all forked" not in proc.stdout and "can't fork" in proc.stderr, proc
    # the device policy: /dev/null works, a device not allowed is refused
    path = _bundle(inner, rootfs_template, "devs", ["sh", "-c",
                   "echo ok > /dev/null && mknod /tmp/sda b 8 0 && "
                   "head -c1 /tmp/sda; echo rc=$?"], {}, None)
    proc = box.inner("run", "-b", path, "devs", check=False)
    assert "rc=1" in proc.stdout and "not permitted" in proc.stdout + proc.stderr, proc


_SUPERVISOR = '''
import subprocess, sys, trio, corral

def show(unit):
    out = subprocess.run(["systemctl", "show", unit, "-p", "ActiveState,LoadState,MemoryLimit,"
                          "ControlGroup"], capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())

async def main():
    async with corral.Supervisor("/run/corral-sup", cgroup_manager="systemd") as sup:
        c = await sup.run(corral.Job(["sleep", "60"], limits={"memory": "48M"}))
        print("running", show(f"corral-{c.id}.scope"))
        await c.kill("KILL")
        await c.wait()
        await c.delete()
        print("deleted", show(f"corral-{c.id}.scope"))
        r = await (await sup.run(corral.Job(["sh", "-c", "echo hi"]))).result()
        print("result", r.exit_status, r.stdout.strip())

trio.run(main)
'''


def test_the_supervisor_makes_scopes_on_its_event_loop(box, tmp_path):
    """The engine with cgroup_manager="systemd": the trio front end starts each job's
    scope in corral.slice and stops it at delete."""
    (tmp_path / "inner" / "sup.py").write_text(_SUPERVISOR)
    python = os.path.join(os.path.dirname(CORRAL[0]), "python")
    out = box.sh(f"{python} /inner/sup.py", timeout=120).stdout
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}
    running = eval(lines["running"])  # noqa: S307 (our own script's dict)
    assert running["ActiveState"] == "active", out
    assert running["ControlGroup"].startswith("/corral.slice/corral-"), out
    assert running["MemoryLimit"] == str(48 << 20), out
    assert eval(lines["deleted"])["LoadState"] == "not-found", out  # noqa: S307
    assert lines["result"] == "0 hi", out


_PROBE = '''
import subprocess, sys
from corral.cgroups import systemd_blocking, systemd_bus as bus, systemd_units as units
from corral.oci.config import (BlockIOResources, CpuResources, DeviceRule, MemoryResources,
                               Resources)

unified = sys.argv[1] == "v2"
r = Resources(memory=MemoryResources(limit=64 << 20, reservation=1 << 20, swap=128 << 20),
              cpu=CpuResources(shares=512, quota=20000, period=100000, cpus="0", mems="0"),
              block_io=BlockIOResources(weight=300), pids_limit=20,
              unified={"memory.high": "max", "pids.max": "20"} if unified else {})
rules = [DeviceRule(False), DeviceRule(True, "c", 1, 3), DeviceRule(True, "c", 136, None, "rw"),
         DeviceRule(True, "b", None, None, "m")]
child = subprocess.Popen(["sleep", "60"])
path = units.parse_path("probe.slice:corral:" + sys.argv[1], "x")
props = (units.unit_properties(path, child.pid, "probe") + units.accounting_properties(unified)
         + units.device_properties(rules) + units.resource_properties(r, unified, 252))
systemd_blocking.run(bus.start_scope(path.unit, path.cgroup(), lambda version: props))
names = [name for name, _ in props]
print(subprocess.run(["systemctl", "show", path.unit, "-p", ",".join(names)],
                     capture_output=True, text=True).stdout, end="")
systemd_blocking.run(bus.stop_scope(path.unit))
child.wait()
print("Stopped=" + subprocess.run(["systemctl", "show", path.unit, "-p", "LoadState"],
                                  capture_output=True, text=True).stdout.strip())
'''


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_systemd_takes_every_property_of_the_mapping(box, tmp_path, kind):
    """Each property the mapping makes, for cgroup v1 and v2, with its D-Bus type: systemd
    refuses a wrong name or type (InvalidArgs), and shows back what it took."""
    (tmp_path / "inner" / "probe.py").write_text(_PROBE)
    python = os.path.join(os.path.dirname(CORRAL[0]), "python")
    out = box.sh(f"cd {REPO} && {python} /inner/probe.py {kind}", timeout=120).stdout
    shown = dict(line.split("=", 1) for line in out.splitlines())
    assert shown["Delegate"] == "yes" and shown["TasksMax"] == "20", out
    assert shown["DevicePolicy"] == "strict", out
    assert sorted(line for line in out.splitlines() if line.startswith("DeviceAllow=")) == [
        "DeviceAllow=/dev/char/1:3 rwm", "DeviceAllow=block-* m", "DeviceAllow=char-136 rw"]
    assert shown["CPUQuotaPerSecUSec"] == "200ms" and shown["CPUQuotaPeriodUSec"] == "100ms"
    assert shown["AllowedCPUs"] == "0" and shown["AllowedMemoryNodes"] == "0", out
    if kind == "v1":
        assert shown["MemoryLimit"] == str(64 << 20) and shown["CPUShares"] == "512"
        assert shown["BlockIOWeight"] == "300" and shown["BlockIOAccounting"] == "yes"
    else:
        assert shown["MemoryMax"] == str(64 << 20) and shown["MemoryLow"] == str(1 << 20)
        assert shown["MemorySwapMax"] == str(64 << 20) and shown["MemoryHigh"] == "infinity"
        assert shown["CPUWeight"] == "20" and shown["IOAccounting"] == "yes"
    assert shown["Stopped"] == "LoadState=not-found", out


_REFUSED = '''
import trio
from corral.cgroups import systemd_blocking, systemd_bus as bus, systemd_trio
from corral.errors import CgroupError

def conversation():
    return bus.start_scope("corral-nopid.scope", "/system.slice/corral-nopid.scope",
                           lambda version: [("PIDs", ("au", [2**22 + 1]))])

for name, front in (("trio", lambda: trio.run(systemd_trio.run, conversation())),
                    ("blocking", lambda: systemd_blocking.run(conversation()))):
    try:
        front()
    except CgroupError as exc:
        print(name, "CgroupError", exc)
'''


def test_systemd_refusals_are_one_clear_error(box, tmp_path):
    """A call systemd refuses (a pid that does not exist) is one CgroupError naming the
    call and systemd's reason, from either front end (trio's not wrapped in a group)."""
    (tmp_path / "inner" / "refused.py").write_text(_REFUSED)
    python = os.path.join(os.path.dirname(CORRAL[0]), "python")
    out = box.sh(f"cd {REPO} && {python} /inner/refused.py", timeout=120).stdout
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [["trio", "CgroupError"],
                                                   ["blocking", "CgroupError"]], out
    for line in lines:
        assert "systemd: StartTransientUnit corral-nopid.scope: " in line, out
