"""The systemd cgroup driver for real: systemd (Debian's, the host's /usr read-only) boots
as PID 1 of a container that corral runs, with its own cgroup subtree in every hierarchy
(this host's hybrid v1 + v2 layout, which systemd 252 accepts), a cgroup namespace, a
private /etc and tmpfs /run, /tmp and /var.  Inside it ``corral --systemd-cgroup`` runs
containers whose cgroups are systemd's transient scopes: limits enforced, pause/resume,
update, stats, delete removing the unit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.conftest import CORRAL, base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMD = "/usr/lib/systemd/systemd"
BOOT_TIMEOUT = 120.0

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SYSTEMD) and shutil.which("dbus-daemon")),
    reason="needs Debian's systemd and dbus packages (scripts/setup.sh --test installs them)")

_TARGET = """[Unit]
Description=corral's test boot: the system bus, nothing else
Requires=dbus.socket dbus.service
After=dbus.socket dbus.service
"""
_MASKED = ("systemd-logind.service", "getty.target", "console-getty.service",
           "systemd-firstboot.service", "systemd-sysusers.service", "systemd-repart.service",
           "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
           "systemd-modules-load.service", "systemd-journald-audit.socket",
           "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service",
           "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
           "sys-fs-fuse-connections.mount", "systemd-update-utmp.service",
           "systemd-random-seed.service", "kmod-static-nodes.service")


def _etc(path: str) -> None:
    """A private /etc: the host's users and groups (messagebus for dbus-daemon), a boot
    target of our own, the units a container cannot or need not run masked."""
    os.makedirs(f"{path}/systemd/system")
    for name in ("passwd", "group", "nsswitch.conf"):
        shutil.copy(f"/etc/{name}", f"{path}/{name}")
    with open(f"{path}/systemd/system/corral-test.target", "w") as f:
        f.write(_TARGET)
    for unit in _MASKED:
        os.symlink("/dev/null", f"{path}/systemd/system/{unit}")
    open(f"{path}/machine-id", "w").close()  # empty: systemd makes a transient one
    os.symlink("../usr/lib/os-release", f"{path}/os-release")


def _rootfs(path: str) -> None:
    os.makedirs(path)
    for name in ("usr", "proc", "sys", "dev", "run", "tmp", "var", "work", "inner"):
        os.makedirs(f"{path}/{name}")
    for name in ("bin", "sbin", "lib", "lib64"):
        if os.path.exists(f"/usr/{name}"):
            os.symlink(f"usr/{name}", f"{path}/{name}")
    os.makedirs(path + REPO, exist_ok=True)
    _etc(f"{path}/etc")


def _bind(source: str, dest: str, *extra: str) -> dict:
    return {"destination": dest, "type": "bind", "source": source,
            "options": ["rbind", "nosuid", *extra]}


def _tmpfs(dest: str, mode: str = "755") -> dict:
    return {"destination": dest, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", f"mode={mode}"]}


def systemd_config(cid: str, inner: str) -> dict:
    from corral.oci.capabilities import CAPABILITIES

    config = base_config([SYSTEMD, "--unit=corral-test.target", "--log-target=console",
                          "--show-status=no"], cid)
    with open("/proc/self/status") as f:  # what this host gives (no CAP_SYS_RESOURCE here)
        bounding = int(next(l for l in f if l.startswith("CapBnd:")).split()[1], 16)
    caps = sorted(name for name, bit in CAPABILITIES.items() if bounding >> bit & 1)
    config["process"]["capabilities"] = {k: caps for k in
                                         ("bounding", "effective", "permitted")}
    config["process"]["env"] = ["container=corral", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    config["process"]["noNewPrivileges"] = False
    config["process"].pop("rlimits", None)
    config["linux"]["namespaces"] = [{"type": t} for t in
                                     ("pid", "mount", "ipc", "uts", "network", "cgroup")]
    config["linux"]["maskedPaths"] = []
    config["linux"]["readonlyPaths"] = []
    config["linux"]["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
    mounts = [m for m in config["mounts"] if m["destination"] not in ("/sys/fs/cgroup",)]
    for m in mounts:
        if m["destination"] == "/sys":
            m["options"] = ["nosuid", "noexec", "nodev", "ro"]
    mounts += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "rw"]},
        _bind("/usr", "/usr", "ro"),
        _bind(REPO, REPO, "ro"),
        _bind(inner, "/inner"),
        _tmpfs("/run"), _tmpfs("/tmp", "1777"), _tmpfs("/var"),
    ]
    config["mounts"] = mounts
    return config


class Box:
    """The systemd container: corral inside it runs through ``corral exec``."""

    def __init__(self, corral, cid: str) -> None:
        self.corral = corral
        self.id = cid

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = self.corral("exec", self.id, "/bin/sh", "-c", script, check=False,
                           timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"in the systemd container: {script!r} exited "
                                 f"{proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc

    def inner(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = " ".join(_quote(a) for a in [*CORRAL, "--root", "/run/corral",
                                           "--systemd-cgroup", *args])
        return self.sh(argv, check=check)

    def wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            proc = self.sh("systemctl is-system-running", check=False)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                failed = self.sh("systemctl --failed --no-legend; systemctl list-jobs",
                                 check=False)
                raise AssertionError(f"systemd did not boot: {state!r} {proc.stderr}"
                                     f"{failed.stdout}")
            time.sleep(0.5)

    def show(self, unit: str, *props: str) -> dict:
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def box(corral, tmp_path, rootfs_template):
    cid = f"sd{uuid.uuid4().hex[:8]}"
    bundle = tmp_path / "systemd"
    inner = tmp_path / "inner"
    inner.mkdir()
    _rootfs(str(bundle / "rootfs"))
    (bundle / "config.json").write_text(json.dumps(systemd_config(cid, str(inner))))
    log = tmp_path / "systemd.log"
    with open(log, "w") as out:  # systemd's console: the log, kept by the container
        proc = subprocess.run([*CORRAL, "--root", corral.root, "run", "-d", "-b",
                               str(bundle), cid], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=out, timeout=60)
    assert proc.returncode == 0, log.read_text()
    b = Box(corral, cid)
    try:
        b.wait_booted()
        yield b
    except BaseException:
        print(log.read_text()[-6000:])
        raise
    finally:
        b.sh("for c in $(ls /run/corral 2>/dev/null); do "
             + " ".join(CORRAL) + " --root /run/corral delete -f $c; done", check=False)
        corral("kill", cid, "KILL", check=False)
        deadline = time.monotonic() + 30
        while corral("state", cid, check=False).returncode == 0 and \
                json.loads(corral("state", cid).stdout)["status"] != "stopped":
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        corral("delete", "--force", cid, check=False)


def test_systemd_boots_and_scopes_are_made(box, tmp_path, rootfs_template):
    inner = tmp_path / "inner"
    cid = "web1"
    bundle = inner / cid
    bundle.mkdir()
    shutil.copytree(rootfs_template, bundle / "rootfs", symlinks=True)
    config = base_config(["sleep", "600"], cid)
    config["linux"]["cgroupsPath"] = "machine-corral.slice:corral:" + cid
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50},
                                    "cpu": {"shares": 512, "quota": 50000, "period": 100000}}
    (bundle / "config.json").write_text(json.dumps(config))
    box.inner("run", "-d", "-b", f"/inner/{cid}", cid)
    unit = "corral-web1.scope"
    props = box.show(unit, "ActiveState", "ControlGroup", "MemoryLimit", "TasksMax",
                     "CPUShares", "CPUQuotaPerSecUSec", "Delegate", "Slice")
    assert props["ActiveState"] == "active", props
    assert props["ControlGroup"] == "/machine.slice/machine-corral.slice/corral-web1.scope"
    assert props["Slice"] == "machine-corral.slice"
    assert props["Delegate"] == "yes"
    assert props["MemoryLimit"] == str(64 << 20) and props["TasksMax"] == "50"
    assert props["CPUShares"] == "512" and props["CPUQuotaPerSecUSec"] == "500ms"
    cg = "/sys/fs/cgroup/memory" + props["ControlGroup"]
    assert box.sh(f"cat {cg}/memory.limit_in_bytes").stdout.strip() == str(64 << 20)
    pid = json.loads(box.inner("state", cid).stdout)["pid"]
    assert box.sh(f"cat {cg}/cgroup.procs").stdout.split() == [str(pid)]
