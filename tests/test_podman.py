"""podman 4.3 (through conmon) with corral as its OCI runtime: private storage and
containers.conf in a temp dir, an image imported from the busybox rootfs, no network, and the
containers' cgroups under the tests' parent.  Skipped only where podman is not installed
(`scripts/setup.sh --test` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from corral.images import build_rootfs
from corral.oci.state import DEFAULT_ROOT
from tests.conftest import (CGROUP_PARENT, CORRAL, remove_cgroups, run_capturing, unmount_under,
                            wait_for_our_processes)

IMAGE = "localhost/corral-bbx:latest"
VAR_LIB_CONTAINERS = "/var/lib/containers"  # podman 4.3 keeps its blob-info cache here

pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None or shutil.which("conmon") is None,
    reason="podman or conmon is not installed (scripts/setup.sh --test installs them)")

CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
tmp_dir = "{w}/tmp"
runtime_supports_json = ["crun", "runc", "{runtime}"]
[network]
network_config_dir = "{w}/networks"
"""


class Podman:
    def __init__(self, workdir: str) -> None:
        self.w = workdir
        self.cgroup_parent = f"/{CGROUP_PARENT}/podman"
        conf = os.path.join(workdir, "containers.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(w=workdir, runtime=os.path.basename(CORRAL[0])))
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "HOME": os.environ.get("HOME", "/root"), "CONTAINERS_CONF": conf}

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_capturing(["podman", "--root", f"{self.w}/root", "--runroot",
                              f"{self.w}/runroot", "--runtime", CORRAL[0], *args],
                             timeout=timeout, env=self.env, stdin=subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 60) -> str:
        proc = self(*args, timeout=timeout)
        assert proc.returncode == 0, (f"podman {' '.join(args)} exited {proc.returncode}: "
                                      f"{proc.stderr.strip()}")
        return proc.stdout

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return self("run", "--network", "none", "--cgroup-parent", self.cgroup_parent, *args)


@pytest.fixture
def podman(tmp_path, _no_leaks):
    had_var_lib = os.path.exists(VAR_LIB_CONTAINERS)
    had_state_root = os.path.exists(DEFAULT_ROOT)  # podman calls corral without --root
    workdir = tempfile.mkdtemp(prefix="corral-podman-")  # podman: runroot < 50 characters
    p = Podman(workdir)
    rootfs = build_rootfs(os.path.join(workdir, "rootfs"))
    with tarfile.open(os.path.join(workdir, "rootfs.tar"), "w") as tar:
        tar.add(rootfs, arcname=".")
    try:
        p.ok("import", "--change", 'CMD ["/bin/sh"]', "--change",
             "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", os.path.join(workdir, "rootfs.tar"),
             IMAGE)
        yield p
    finally:
        p("rm", "--all", "--force", "--time", "0")
        wait_for_our_processes(20)
        unmount_under(workdir)
        remove_cgroups(p.cgroup_parent)
        shutil.rmtree(workdir, ignore_errors=True)
        if not had_var_lib:
            shutil.rmtree(VAR_LIB_CONTAINERS, ignore_errors=True)
        if not had_state_root and os.path.isdir(DEFAULT_ROOT):
            os.rmdir(DEFAULT_ROOT)  # empty: every container was removed above


def test_podman_run_rm_output_and_exit_code(podman):
    proc = podman.run("--rm", IMAGE, "sh", "-c", "echo hi; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout) == (3, "hi\n"), proc.stderr
    assert "err" in proc.stderr
    proc = podman.run("--rm", "--user", "65534", "--hostname", "pod-host", "--env", "X=y",
                      IMAGE, "sh", "-c", "echo $(id -u) $(hostname) $X")
    assert (proc.returncode, proc.stdout) == (0, "65534 pod-host y\n"), proc.stderr
    assert podman.ok("ps", "--all", "--quiet") == ""


def test_podman_detached_exec_stop_rm(podman):
    script = "trap 'exit 7' TERM; echo started; while :; do sleep 0.1; done"
    cid = podman.run("-d", "--name", "c1", IMAGE, "sh", "-c", script)
    assert cid.returncode == 0, cid.stderr
    assert podman.ok("inspect", "--format", "{{.State.Status}}", "c1").strip() == "running"
    pid = podman.ok("inspect", "--format", "{{.State.Pid}}", "c1").strip()
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"/{CGROUP_PARENT}/podman/" in f.read()  # so the leak check covers it
    proc = podman("exec", "c1", "sh", "-c", "echo in-exec $(cat /proc/1/cmdline | tr '\\0' ' ');"
                                            " exit 5")
    assert (proc.returncode, proc.stdout) == (5, f"in-exec sh -c {script}\n"), proc.stderr
    top = podman.ok("top", "c1", "pid", "args")
    assert "sh -c" in top
    podman.ok("stop", "--time", "10", "c1")
    assert podman.ok("inspect", "--format", "{{.State.ExitCode}}", "c1").strip() == "7"
    assert podman.ok("logs", "c1") == "started\n"
    podman.ok("start", "c1")
    podman.ok("kill", "--signal", "KILL", "c1")
    podman.ok("wait", "c1")
    assert podman.ok("inspect", "--format", "{{.State.ExitCode}}", "c1").strip() == "137"
    podman.ok("rm", "c1")
    assert podman.ok("ps", "--all", "--quiet") == ""


@pytest.mark.parametrize("argv, status, message", [
    (["/bin/no-such-program"], 127, "no such file or directory"),
    (["no-such-program"], 127, "executable file not found"),
    (["/etc/passwd"], 126, "permission denied"),
])
def test_podman_reports_runtime_errors(podman, argv, status, message):
    proc = podman.run("--rm", IMAGE, *argv)
    assert proc.returncode == status and message in proc.stderr, proc.stderr
    assert podman.ok("ps", "--all", "--quiet") == ""


def test_podman_tty_through_conmon(podman):
    """-t: conmon passes --console-socket, receives the master and copies the terminal."""
    proc = podman.run("--rm", "-t", IMAGE, "sh", "-c", "tty; echo $TERM; exit 3")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/") and lines[1] == "xterm", proc.stdout
    proc = podman.run("-d", "--name", "t1", IMAGE, "sleep", "100")
    assert proc.returncode == 0, proc.stderr
    proc = podman("exec", "-t", "t1", "sh", "-c", "tty; exit 4")
    assert proc.returncode == 4 and proc.stdout.startswith("/dev/pts/"), proc.stderr
    podman.ok("rm", "--force", "--time", "0", "t1")


def _cgroup_file(pid: str, controller: str, name: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                with open(f"/sys/fs/cgroup/{controller}{path}/{name}") as g:
                    return g.read().strip()
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_podman_limits_user_workdir_pause_and_stop(podman):
    """--memory, --pids-limit, --read-only, -w, --user, --hostname, -e in one container;
    then pause/unpause, and stop of a process that ignores SIGTERM (killed after --time).
    --read-only as podman does it by default: tmpfs on /tmp, /var/tmp, /run with the
    `tmpcopyup` extension (the rest of the root read-only)."""
    script = "trap '' TERM; echo up; while :; do sleep 0.1; done"
    proc = podman.run("-d", "--name", "c2", "--memory", "64m", "--pids-limit", "50",
                      "--read-only", "-w", "/tmp", "--user",
                      "1000:1000", "--hostname", "limited", "-e", "FOO=bar", IMAGE,
                      "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    pid = podman.ok("inspect", "--format", "{{.State.Pid}}", "c2").strip()
    assert _cgroup_file(pid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert _cgroup_file(pid, "pids", "pids.max") == "50"
    proc = podman("exec", "c2", "sh", "-c",
                  "pwd; id -u; id -g; hostname; echo $FOO; touch /x || echo read-only")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["/tmp", "1000", "1000", "limited", "bar", "read-only"]
    assert "Read-only file system" in proc.stderr
    podman.ok("pause", "c2")
    assert podman.ok("inspect", "--format", "{{.State.Status}}", "c2").strip() == "paused"
    assert _cgroup_file(pid, "freezer", "freezer.state") == "FROZEN"
    podman.ok("unpause", "c2")
    assert podman.ok("inspect", "--format", "{{.State.Status}}", "c2").strip() == "running"
    podman.ok("stop", "--time", "1", "c2")  # TERM is ignored: KILL after a second
    assert podman.ok("inspect", "--format", "{{.State.ExitCode}}", "c2").strip() == "137"
    podman.ok("rm", "c2")
    assert podman.ok("ps", "--all", "--quiet") == ""
