"""containerd 1.6 (through containerd-shim-runc-v2, `ctr run --runc-binary`) with corral as
the runtime: a private daemon (config, sockets, root and state in a temp dir, CRI off), the
runtime's state and the fifos in that dir too, the busybox rootfs as `--rootfs` and cgroups
under the tests' parent.  The daemon is stopped by its pid.  Skipped only where containerd is
not installed (`scripts/setup.sh --test` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from corral.images import build_rootfs
from tests.cri_fixture import private_containerd_config
from tests.conftest import (CGROUP_PARENT, CORRAL, remove_cgroups, remove_empty_dirs,
                            run_capturing, stop_daemon, unmount_under)

pytestmark = pytest.mark.skipif(
    shutil.which("containerd") is None or shutil.which("ctr") is None
    or shutil.which("containerd-shim-runc-v2") is None,
    reason="containerd is not installed (scripts/setup.sh --test installs it)")

RUN_CONTAINERD = "/run/containerd"  # the shims' sockets (/run/containerd/s) are always here



class Ctr:
    def __init__(self, workdir: str) -> None:
        self.w = workdir
        self.rootfs = build_rootfs(os.path.join(workdir, "rootfs"))
        self.cgroup_parent = f"/{CGROUP_PARENT}/containerd"

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_capturing(["ctr", "--address", f"{self.w}/containerd.sock", "--namespace",
                              "corraltest", *args], timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 60) -> str:
        proc = self(*args, timeout=timeout)
        assert proc.returncode == 0, (f"ctr {' '.join(args)} exited {proc.returncode}: "
                                      f"{proc.stderr.strip()}")
        return proc.stdout

    def runtime_flags(self) -> list[str]:
        return ["--runc-binary", CORRAL[0], "--runc-root", f"{self.w}/runc",
                "--fifo-dir", f"{self.w}/fifo"]

    def run(self, cid: str, *args: str) -> subprocess.CompletedProcess:
        # --rootfs is a switch: the image argument is then the rootfs directory.
        return self("run", *self.runtime_flags(), "--cgroup", f"{self.cgroup_parent}/{cid}",
                    *args[:-1], "--rootfs", self.rootfs, cid, *args[-1])

    def cleanup(self) -> None:
        for cid in self("container", "list", "--quiet").stdout.split():
            self("task", "kill", "--all", "--signal", "KILL", cid)
            self("task", "delete", "--force", cid)
            self("container", "delete", cid)


@pytest.fixture
def ctr(_no_leaks):
    had_run_dir = os.path.exists(RUN_CONTAINERD)
    workdir = tempfile.mkdtemp(prefix="corral-ctrd-")  # socket paths stay short
    with open(os.path.join(workdir, "config.toml"), "w") as f:
        f.write(private_containerd_config(
            workdir, top='disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'))
    log = open(os.path.join(workdir, "containerd.log"), "w")
    daemon = subprocess.Popen(["containerd", "--config", os.path.join(workdir, "config.toml")],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    c = Ctr(workdir)
    try:
        deadline = time.monotonic() + 20
        while c("version").returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, \
                open(log.name).read()
            time.sleep(0.05)
        yield c
    finally:
        try:
            c.cleanup()
        finally:
            stop_daemon(daemon)  # and the shims
            log.close()
            unmount_under(workdir)
            remove_cgroups(c.cgroup_parent)
            shutil.rmtree(workdir, ignore_errors=True)
            if not had_run_dir:
                remove_empty_dirs([os.path.join(RUN_CONTAINERD, "s"), RUN_CONTAINERD])


def test_containerd_run_rm_output_and_exit_code(ctr):
    proc = ctr.run("c1", "--rm", ["sh", "-c", "echo hi; echo err >&2; exit 3"])
    assert (proc.returncode, proc.stdout) == (3, "hi\n"), proc.stderr
    assert "err" in proc.stderr
    assert ctr.ok("container", "list", "--quiet") == ""


def test_containerd_detached_exec_ps_pause_kill(ctr):
    script = "trap 'exit 7' TERM; echo started; while :; do sleep 0.1; done"
    proc = ctr.run("c2", "--detach", ["sh", "-c", script])
    assert proc.returncode == 0, proc.stderr
    pid = int(ctr.ok("task", "ls").split("\n")[1].split()[1])
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"{ctr.cgroup_parent}/c2" in f.read()
    proc = ctr("task", "exec", "--fifo-dir", f"{ctr.w}/fifo", "--exec-id", "e1", "c2",
               "sh", "-c", "echo in-exec $(cat /proc/1/cmdline | tr '\\0' ' '); exit 5")
    assert (proc.returncode, proc.stdout) == (5, f"in-exec sh -c {script}\n"), proc.stderr
    assert str(pid) in ctr.ok("task", "ps", "c2").split()
    ctr.ok("task", "pause", "c2")
    assert "PAUSED" in ctr.ok("task", "ls")
    ctr.ok("task", "resume", "c2")
    ctr.ok("task", "kill", "c2")  # SIGTERM: the trap exits 7
    deadline = time.monotonic() + 20
    while "STOPPED" not in ctr.ok("task", "ls"):
        assert time.monotonic() < deadline, "the task did not stop"
        time.sleep(0.05)
    proc = ctr("task", "delete", "c2")
    assert proc.returncode == 0 and "exit code 7" in proc.stderr, proc.stderr
    ctr.ok("container", "delete", "c2")


@pytest.mark.parametrize("argv, message", [
    (["/bin/no-such-program"], "no such file or directory"),
    (["no-such-program"], "executable file not found"),
])
def test_containerd_reports_runtime_errors(ctr, argv, message):
    proc = ctr.run("c3", "--rm", argv)
    assert proc.returncode != 0 and "OCI runtime create failed" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_containerd_tty_user_exec_ps_paused_and_sigkill(ctr):
    """`ctr task exec -t` (the shim's console socket), --user, a detached exec in `task ps`
    killed by its exec id, exec refused while paused, SIGKILL of the task."""
    import fcntl
    import select
    import termios

    proc = ctr.run("c4", "--detach", ["sleep", "300"])
    assert proc.returncode == 0, proc.stderr
    fifo = ["--fifo-dir", f"{ctr.w}/fifo"]
    master, slave = os.openpty()  # ctr -t wants a terminal of its own
    try:
        child = subprocess.Popen(
            ["ctr", "--address", f"{ctr.w}/containerd.sock", "--namespace", "corraltest",
             "task", "exec", *fifo, "-t", "--exec-id", "e2", "c4", "sh", "-c",
             "tty; echo do''ne; exit 4"],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        out = b""
        deadline = time.monotonic() + 30
        while b"done" not in out:
            assert time.monotonic() < deadline, out
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 4096)
        assert child.wait(30) == 4
        assert b"/dev/pts/" in out
    finally:
        os.close(master)
        os.close(slave)
    proc = ctr("task", "exec", *fifo, "--user", "1000", "--exec-id", "e3", "c4", "id", "-u")
    assert (proc.returncode, proc.stdout) == (0, "1000\n"), proc.stderr
    assert len(ctr.ok("task", "ps", "c4").split("\n")[1:-1]) == 1  # the init alone
    ctr.ok("task", "exec", *fifo, "--detach", "--exec-id", "e4", "c4", "sleep", "300")
    assert len(ctr.ok("task", "ps", "c4").split("\n")[1:-1]) == 2
    ctr.ok("task", "kill", "--exec-id", "e4", "--signal", "KILL", "c4")
    deadline = time.monotonic() + 20
    while len(ctr.ok("task", "ps", "c4").split("\n")[1:-1]) != 1:
        assert time.monotonic() < deadline, "the exec'd process was not killed"
        time.sleep(0.05)
    ctr.ok("task", "pause", "c4")
    proc = ctr("task", "exec", *fifo, "--exec-id", "e5", "c4", "true")
    assert proc.returncode != 0 and "paused" in proc.stderr, proc.stderr
    ctr.ok("task", "resume", "c4")
    ctr.ok("task", "kill", "--signal", "KILL", "c4")
    deadline = time.monotonic() + 20
    while "STOPPED" not in ctr.ok("task", "ls"):
        assert time.monotonic() < deadline, "the task did not stop"
        time.sleep(0.05)
    proc = ctr("task", "delete", "c4")
    assert proc.returncode == 0 and "exit code 137" in proc.stderr, proc.stderr
    ctr.ok("container", "delete", "c4")
