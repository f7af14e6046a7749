"""Fixtures for tests against the real kernel: a busybox rootfs, bundles, the corral command,
and a leak check that fails any test leaving a process, cgroup, mount or state directory."""

from __future__ import annotations

import copy
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from corral.images import build_rootfs

PR_SET_CHILD_SUBREAPER = 36
CGROUP_PARENT = f"corral-test-{os.getpid()}"
CORRAL = [os.path.join(os.path.dirname(sys.executable), "corral")]


def _become_subreaper() -> None:
    """Container inits are reparented to us when `corral create` exits, as they are to
    conmon or the containerd shim: we reap them like those do."""
    from corral import nsenter

    nsenter.prctl(PR_SET_CHILD_SUBREAPER, 1)


_become_subreaper()


def cgroup_dirs(parent: str = CGROUP_PARENT) -> list[str]:
    """Every directory under our test parent, in every mounted hierarchy."""
    found = []
    for hierarchy in sorted(os.listdir("/sys/fs/cgroup")):
        base = os.path.join("/sys/fs/cgroup", hierarchy, parent)
        for dirpath, _dirs, _files in os.walk(base):
            if dirpath != base:
                found.append(dirpath)
    return found


def host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f)


def our_children() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is this test process."""
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[1] == me:
            out.append((int(name), fields[0]))
    return out


def reap_exited() -> None:
    for pid, state in our_children():
        if state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def wait_for_our_processes(timeout: float) -> None:
    """Engines' daemonized helpers (conmon and podman's exit command, containerd's shims) are
    reparented to this process (a subreaper): wait for them to exit; kill what remains."""
    deadline = time.monotonic() + timeout
    while True:
        reap_exited()
        alive = [pid for pid, state in our_children() if state != "Z"]
        if not alive:
            return
        if time.monotonic() > deadline:
            for pid in alive:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            return
        time.sleep(0.05)


def stop_daemon(daemon: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM to an engine's daemon that we started (by its pid), SIGKILL if it lingers;
    then wait for the helpers it daemonized (reparented to us)."""
    daemon.terminate()
    try:
        daemon.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    wait_for_our_processes(20)


def remove_empty_dirs(paths: list[str]) -> None:
    """rmdir each path (give the deepest first) when it is empty: what an engine made in
    /run, where another daemon's files may be by now."""
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            pass


def unmount_under(path: str) -> None:
    """Lazily unmount every mount at or below ``path`` (an engine's private storage)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in reversed(points):
        if point == path or point.startswith(path + "/"):
            subprocess.run(["umount", "-l", point], check=False)


def remove_cgroups(relative: str) -> None:
    """Remove the (empty) cgroup ``relative`` and everything below it, in every hierarchy."""
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        base = os.path.join("/sys/fs/cgroup", hierarchy, relative.lstrip("/"))
        if not os.path.isdir(base):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda e: -len(e[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory) -> str:
    return build_rootfs(str(tmp_path_factory.mktemp("template") / "rootfs"))


@pytest.fixture(scope="session", autouse=True)
def _cgroup_parent():
    yield
    left = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", hierarchy, CGROUP_PARENT)
        if os.path.isdir(path):
            try:
                os.rmdir(path)
            except OSError as e:  # go on: every other hierarchy's parent is still removed
                left.append(f"{path}: {e.strerror}")
    assert not left, f"the suite left cgroups behind: {left}"


class Corral:
    """Runs the `corral` command line with a private --root."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 **kwargs) -> subprocess.CompletedProcess:
        proc = run_capturing([*CORRAL, "--root", self.root, *args], timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")
        return proc

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def cleanup(self) -> None:
        for cid in os.listdir(self.root) if os.path.isdir(self.root) else []:
            self("delete", "--force", cid, check=False)


def run_capturing(argv: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with text output through files, not pipes: a created container
    inherits the command's stdio and keeps it open long after the command exits."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, timeout=timeout, stdout=out, stderr=err, **kwargs)
        out.seek(0)
        err.seek(0)
        proc.stdout, proc.stderr = out.read().decode(), err.read().decode()
    return proc


def read_line(stream, deadline: float) -> bytes:
    """One line from a process's pipe, failing the test at the deadline (time.monotonic)."""
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line in time (have {line!r})"
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                return line
            line += chunk
    return line


@pytest.fixture
def mapped_root_can_reach(tmp_path):
    """A user-namespaced container's root (a mapped host uid) must reach its rootfs, as with
    runc: open up pytest's 0700 temp directories."""
    path = str(tmp_path)
    while path.startswith("/tmp/pytest-of-"):
        os.chmod(path, 0o755)
        path = os.path.dirname(path)


@pytest.fixture
def corral(tmp_path, _no_leaks) -> Corral:
    c = Corral(str(tmp_path / "state"))
    yield c
    c.cleanup()


@pytest.fixture
def _no_leaks(tmp_path):
    """Fails a test that leaves anything behind (checked after the test's own cleanup)."""
    mounts_before = host_mounts()
    yield
    reap_exited()
    leftovers = []
    alive = [pid for pid, state in our_children() if state != "Z"]
    if alive:
        leftovers.append(f"processes {alive}")
        for pid in alive:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    dirs = cgroup_dirs()
    if dirs:
        leftovers.append(f"cgroups {dirs}")
    if host_mounts() != mounts_before:
        leftovers.append(f"mounts {sorted(set(host_mounts()) ^ set(mounts_before))}")
    state_root = tmp_path / "state"
    if state_root.is_dir() and os.listdir(state_root):
        leftovers.append(f"state dirs {os.listdir(state_root)}")
    assert not leftovers, "test left behind: " + "; ".join(leftovers)


def base_config(args: list[str], cid: str) -> dict:
    from corral.oci.spec import default_spec

    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["root"] = {"path": "rootfs", "readonly": False}
    config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{cid}"
    return config


class Bundle:
    def __init__(self, path: str, cid: str, config: dict) -> None:
        self.path = path
        self.id = cid
        self.config = config
        self.rootfs = os.path.join(path, "rootfs")

    def write(self) -> Bundle:
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.config, f)
        return self


@pytest.fixture
def make_bundle(tmp_path, rootfs_template):
    """make_bundle(args, **process_overrides) -> Bundle with a fresh rootfs and a unique id."""
    count = [0]

    def make(args: list[str] = ("true",), config: dict | None = None) -> Bundle:
        count[0] += 1
        cid = f"t{uuid.uuid4().hex[:10]}"
        path = tmp_path / f"bundle{count[0]}"
        path.mkdir()
        shutil.copytree(rootfs_template, path / "rootfs", symlinks=True)
        cfg = copy.deepcopy(config) if config is not None else base_config(list(args), cid)
        return Bundle(str(path), cid, cfg).write()

    return make


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Tests marked ``anyio`` run on both of anyio's backends (its own plugin), not under
    pytest-trio's trio_mode, which marks every async test ``trio``."""
    for item in items:
        if item.get_closest_marker("anyio") is not None:
            item.own_markers[:] = [m for m in item.own_markers if m.name != "trio"]
