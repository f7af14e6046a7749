"""Rootless: corral run by an unprivileged user (uid 1000 through setpriv) on the config
`corral spec --rootless` writes; what such a user can't have is refused naming the field.
Also the --systemd-cgroup / systemd cgroupsPath messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.conftest import CGROUP_PARENT, CORRAL, cgroup_dirs, run_capturing

UID = 1000
SETPRIV = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all"]

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


class User:
    """corral as uid 1000, with HOME, XDG_RUNTIME_DIR, --root and the bundles in a temp dir
    of its own (pytest's tmp dirs are 0700 root's)."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.root = os.path.join(home, "state")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
                    "XDG_RUNTIME_DIR": os.path.join(home, "xdg")}

    def __call__(self, *args: str, root: bool = True, cwd: str | None = None,
                 check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [*SETPRIV, *CORRAL, *(["--root", self.root] if root else []), *args]
        proc = run_capturing(argv, timeout=timeout, stdin=subprocess.DEVNULL, env=self.env,
                             cwd=cwd or self.home)
        if check and proc.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")
        return proc

    def bundle(self, name: str, rootfs_template: str, args: list[str],
               change=None) -> str:
        """`corral spec --rootless`, written by the user itself, with a copy of the busybox
        rootfs (root's files, readable by all, as an image unpacked by root would be)."""
        path = os.path.join(self.home, name)
        os.mkdir(path)
        os.chown(path, UID, UID)
        self("spec", "--rootless", "--bundle", path, root=False)
        shutil.copytree(rootfs_template, os.path.join(path, "rootfs"), symlinks=True)
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": UID, "size": 1}]
        config["process"]["terminal"] = False
        config["process"]["args"] = args
        config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{name}"
        if change:
            change(config)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f)
        return path


@pytest.fixture
def user(_no_leaks):
    home = tempfile.mkdtemp(prefix="corral-rootless-")
    os.chmod(home, 0o755)
    os.chown(home, UID, UID)
    u = User(home)
    for d in (u.root, u.env["XDG_RUNTIME_DIR"]):
        os.mkdir(d, 0o700)
        os.chown(d, UID, UID)
    yield u
    for root in (u.root, os.path.join(u.env["XDG_RUNTIME_DIR"], "corral")):
        for cid in os.listdir(root) if os.path.isdir(root) else []:
            subprocess.run([*CORRAL, "--root", root, "delete", "--force", cid],
                           capture_output=True, timeout=60)
    shutil.rmtree(home)


def _uid_processes() -> list[int]:
    """Pids of every process of host uid 1000 that we might have started."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == UID:
                    found.append(int(name))
            except OSError:
                pass
    return found


def test_rootless_spec_runs_as_uid_1000(user, rootfs_template):
    before = set(_uid_processes())
    bundle = user.bundle("b1", rootfs_template,
                         ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map"])
    proc = user("run", "r1", cwd=bundle)
    lines = [line.split() for line in proc.stdout.strip().splitlines()]
    assert lines == [["0"], ["0"], ["0", str(UID), "1"], ["0", str(UID), "1"]]
    # No cgroup was delegated to uid 1000: skipped with a warning (runc's behaviour).
    assert "warning: rootless: no cgroup for r1" in proc.stderr
    assert os.listdir(user.root) == []
    assert cgroup_dirs() == []
    assert not os.path.exists(f"/sys/fs/cgroup/unified/{CGROUP_PARENT}/b1")
    assert set(_uid_processes()) <= before


def test_rootless_lifecycle_state_kill_delete(user, rootfs_template):
    bundle = user.bundle("b2", rootfs_template, ["sh", "-c", "sleep 100 & exec sleep 1000"])
    user("create", "r2", cwd=bundle)
    state = json.loads(user("state", "r2").stdout)
    assert state["status"] == "created"
    pid = state["pid"]
    assert os.stat(f"/proc/{pid}").st_uid == UID
    with open(os.path.join(user.root, "r2", "state.json")) as f:
        assert json.load(f)["cgroup"] is None
    assert json.loads(user("list", "--format", "json").stdout)[0]["id"] == "r2"
    user("start", "r2")
    assert json.loads(user("state", "r2").stdout)["status"] == "running"

    # What needs a cgroup says it has none.
    for args in (["pause", "r2"], ["ps", "r2"], ["events", "--stats", "r2"],
                 ["update", "--pids-limit", "10", "r2"]):
        out = user(*args, check=False)
        assert out.returncode == 1
        assert "container has no cgroup (rootless without a delegated cgroup)" in out.stderr

    # kill --all without a cgroup: every process of the container's pid namespace.
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    children = [p for p in _uid_processes() if p != pid and _pidns(p) == ns]
    assert children
    user("kill", "--all", "r2", "TERM")  # the init ignores it (a namespace's init), sleep 100 dies
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(p) for p in children)
    assert json.loads(user("state", "r2").stdout)["status"] == "running"
    assert "not stopped" in user("delete", "r2", check=False).stderr
    user("kill", "r2", "KILL")
    deadline = time.monotonic() + 5
    while json.loads(user("state", "r2").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    user("delete", "r2")
    assert os.listdir(user.root) == []
    assert not _alive(pid)
    assert cgroup_dirs() == []


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Running, not a zombie (the inits are reparented to pytest, which reaps them later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2] != "Z"


def test_rootless_default_root_is_xdg_runtime_dir(user, rootfs_template):
    bundle = user.bundle("b3", rootfs_template, ["sleep", "100"])
    user("run", "-d", "r3", cwd=bundle, root=False)
    xdg_root = os.path.join(user.env["XDG_RUNTIME_DIR"], "corral")
    assert os.listdir(xdg_root) == ["r3"]
    assert [s["id"] for s in json.loads(user("list", "--format", "json", root=False).stdout)] \
        == ["r3"]
    user("delete", "--force", "r3", root=False)
    assert os.listdir(xdg_root) == []


@pytest.mark.skipif(shutil.which("newuidmap") is not None, reason="newuidmap is installed")
def test_rootless_multi_range_map_needs_newuidmap(user, rootfs_template):
    def change(config):
        config["linux"]["uidMappings"].append({"containerID": 1, "hostID": 100000,
                                               "size": 65536})

    bundle = user.bundle("b4", rootfs_template, ["true"], change)
    proc = user("run", "r4", cwd=bundle, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("corral: linux.uidMappings: rootless (uid 1000): mapping more "
                                  "than the caller's own uid 1000")
    assert "newuidmap (package uidmap) is not installed" in proc.stderr
    assert os.listdir(user.root) == []


def test_rootless_mounts_it_cannot_make_are_named(user, rootfs_template):
    def sysfs(config):
        from corral.oci.spec import default_spec

        config["mounts"] = default_spec()["mounts"]  # sysfs, devpts gid=5

    bundle = user.bundle("b5", rootfs_template, ["true"], sysfs)
    proc = user("run", "r5", cwd=bundle, check=False)
    assert proc.returncode == 1
    assert "corral: mounts[2]: rootless: option gid=5 on /dev/pts names a gid that " \
        "linux.gidMappings does not map" in proc.stderr

    def sysfs_only(config):
        config["mounts"][5] = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                               "options": ["nosuid", "noexec", "nodev", "ro"]}

    bundle = user.bundle("b6", rootfs_template, ["true"], sysfs_only)
    proc = user("run", "r6", cwd=bundle, check=False)
    assert proc.returncode == 1
    assert "corral: mounts[5]: rootless: a sysfs on /sys needs a new network namespace" \
        in proc.stderr
    assert os.listdir(user.root) == []


def test_rootless_idmapped_mount_is_refused_not_made_plain(user, rootfs_template):
    """An idmapped mount needs the host's CAP_SYS_ADMIN over the source's filesystem: refused
    naming the mount, never made a plain bind in its place."""
    def idmapped(config):
        config["mounts"].append({"destination": "/data", "type": "bind", "source": "/tmp",
                                 "options": ["bind", "idmap"]})

    bundle = user.bundle("b8", rootfs_template, ["true"], idmapped)
    index = len(json.load(open(os.path.join(bundle, "config.json")))["mounts"]) - 1
    proc = user("run", "r8", cwd=bundle, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"corral: mounts[{index}]: an idmapped mount needs root (the host's CAP_SYS_ADMIN "
        "over the source's filesystem)")
    assert os.listdir(user.root) == []


def test_rootless_oom_score(user, rootfs_template):
    """A non-root runtime may raise its container's oom score (its /proc/self file is its
    own only while it is dumpable: the launcher writes it first)."""
    def oom(config):
        config["process"]["oomScoreAdj"] = 500

    bundle = user.bundle("b9", rootfs_template, ["cat", "/proc/self/oom_score_adj"], oom)
    proc = user("run", "r9", cwd=bundle)
    assert proc.stdout == "500\n"


def test_rootless_without_a_user_namespace_is_refused(user, rootfs_template):
    def no_userns(config):
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "user"]
        del config["linux"]["uidMappings"], config["linux"]["gidMappings"]

    bundle = user.bundle("b7", rootfs_template, ["true"], no_userns)
    proc = user("run", "r7", cwd=bundle, check=False)
    assert proc.returncode == 1
    assert "linux.namespaces: rootless (corral run as uid 1000): the container needs a user " \
        "namespace" in proc.stderr
    assert os.listdir(user.root) == []


def test_rootless_resources_without_a_cgroup_are_refused(user, rootfs_template):
    def limits(config):
        config["linux"]["resources"] = {"pids": {"limit": 10}}

    bundle = user.bundle("b8", rootfs_template, ["true"], limits)
    proc = user("run", "r8", cwd=bundle, check=False)
    assert proc.returncode == 1
    assert "linux.resources: rootless (uid 1000): limits need a cgroup" in proc.stderr
    assert os.listdir(user.root) == []


# ---- systemd ----------------------------------------------------------------------------------


def test_systemd_cgroup_without_systemd_says_what_is_missing(corral, make_bundle):
    """On a host where systemd is not PID 1 the driver names what is missing, and a
    command that needs no cgroup still works with the flag (runc's engines pass it on
    every call).  Inside a systemd container it works: tests/test_systemd_cgroup.py."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: tests/test_systemd_cgroup.py covers it")
    assert corral("--systemd-cgroup", "list", check=False).returncode == 0
    b = make_bundle(["true"])
    b.config["linux"]["cgroupsPath"] = "system.slice:corral:" + b.id
    b.write()
    proc = corral("--systemd-cgroup", "run", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--systemd-cgroup: systemd is not running on this host" in proc.stderr
    assert "not supported" not in proc.stderr
    assert corral("state", b.id, check=False).returncode == 1  # nothing left behind
    # a bad org.systemd.property.* annotation is the config's error, found first
    b.config["annotations"] = {"org.systemd.property.TimeoutStopSec": "'soon'"}
    b.write()
    proc = corral("--systemd-cgroup", "run", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and "annotations['org.systemd.property.TimeoutStopSec']: " \
        "TimeoutStopSec takes seconds" in proc.stderr, proc.stderr


def test_systemd_cgroups_path_needs_the_flag(corral, make_bundle):
    b = make_bundle(["true"])
    b.config["linux"]["cgroupsPath"] = "system.slice:corral:x"
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert "linux.cgroupsPath: 'system.slice:corral:x' is a systemd slice:prefix:name " \
           "path: it needs --systemd-cgroup" in proc.stderr


def test_systemd_cgroup_refuses_a_cgroupfs_path(corral, make_bundle):
    b = make_bundle(["true"])
    b.config["linux"]["cgroupsPath"] = "/corral-test/x"
    b.write()
    proc = corral("--systemd-cgroup", "run", "-b", b.path, b.id, check=False)
    assert 'expected cgroupsPath to be of format "slice:prefix:name"' in proc.stderr


def test_supervise_cgroup_manager_is_checked(corral):
    proc = corral("supervise", "--cgroup-manager", "bogus", check=False, timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--cgroup-manager: 'bogus' is not cgroupfs or systemd" in proc.stderr
