"""systemd booted as PID 1 of a corral container, for the tests of the systemd cgroup
driver: Debian's systemd (the host's /usr read-only) with its own cgroup subtree in every
hierarchy (this host's hybrid v1 + v2 layout, which systemd 252 accepts), a cgroup namespace,
a private /etc and tmpfs /run, /tmp and /var; commands run in it through ``corral exec``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from typing import Iterator

import pytest

from tests.conftest import CORRAL, base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMD = "/usr/lib/systemd/systemd"
BOOT_TIMEOUT = 120.0


def host_layout() -> str:
    from corral.cgroups import detect

    return detect().mode


SKIP_UNLESS_BOOTABLE = [
    pytest.mark.skipif(not (os.path.exists(SYSTEMD) and shutil.which("dbus-daemon")),
                       reason="needs Debian's systemd and dbus packages (scripts/setup.sh "
                              "--test installs them)"),
    pytest.mark.skipif(not os.path.exists("/proc/self/ns/cgroup"),
                       reason="the kernel has no cgroup namespaces (CONFIG_CGROUPS ns)"),
    pytest.mark.skipif(host_layout() == "v2",
                       reason="its checks read v1 files (memory/, freezer/...): written for "
                              "the hybrid and v1 layouts of CI's hosts, not pure cgroup v2"),
]

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
    """A private /etc: the host's users, groups (messagebus for dbus-daemon) and hosts, a boot
    target of our own, the units a container cannot or need not run masked."""
    os.makedirs(f"{path}/systemd/system")
    for name in ("passwd", "group", "nsswitch.conf", "hosts"):
        shutil.copy(f"/etc/{name}", f"{path}/{name}")
    open(f"{path}/resolv.conf", "w").close()  # a node's: what host-network pods copy
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


def systemd_config(cid: str, inner: str, binds: tuple[tuple[str, str], ...] = ()) -> dict:
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
        *(_bind(source, dest, "ro") for source, dest in binds),
    ]
    config["mounts"] = mounts
    return config


class Box:
    """The systemd container: corral inside it runs through ``corral exec``."""

    def __init__(self, corral, cid: str) -> None:
        self.corral = corral
        self.id = cid

    def sh(self, script: str, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess:
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


@contextlib.contextmanager
def booted_box(corral, tmp_path, binds: tuple[tuple[str, str], ...] = ()) -> Iterator[Box]:
    """systemd booted in a corral container (host /usr, ``binds`` read-only, tmp_path/inner
    at /inner), deleted on exit with every corral container run inside it."""
    cid = f"sd{uuid.uuid4().hex[:8]}"
    bundle = tmp_path / "systemd"
    inner = tmp_path / "inner"
    inner.mkdir()
    _rootfs(str(bundle / "rootfs"))
    (bundle / "config.json").write_text(json.dumps(systemd_config(cid, str(inner), binds)))
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


