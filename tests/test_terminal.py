"""process.terminal with --console-socket: the pty master goes to the engine's socket, the slave
(of the container's own devpts) is the process's stdio and controlling terminal.  Without a
socket, a foreground `run`/`exec` relays the terminal itself: driven here through a pty of the
test's own, as a user's terminal."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time

import pytest

from tests.conftest import CORRAL


class ConsoleListener:
    """What conmon and the containerd shim do: accept once, receive the master over SCM_RIGHTS."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.payload = None
        self.master = None
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            self.payload, fds, _, _ = socket.recv_fds(conn, 64, 1)
            self.master = fds[0]

    def wait(self) -> int:
        self.thread.join(10)
        assert self.master is not None, "no master received"
        return self.master

    def close(self) -> None:
        self.server.close()
        if self.master is not None:
            os.close(self.master)


def talk(master: int, command: bytes, until: bytes, timeout: float = 10) -> bytes:
    os.write(master, command)
    out = b""
    deadline = time.monotonic() + timeout
    while until not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"no {until!r} in {out!r}"
        if select.select([master], [], [], left)[0]:
            out += os.read(master, 4096)
    return out


@pytest.fixture
def listener(tmp_path):
    lst = ConsoleListener(str(tmp_path / "console.sock"))
    yield lst
    lst.close()


def test_create_sends_the_master_and_sh_talks_through_it(corral, make_bundle, listener):
    b = make_bundle(["sh"])
    b.config["process"]["terminal"] = True
    b.config["process"]["consoleSize"] = {"height": 33, "width": 101}
    b.write()
    corral("create", "--console-socket", listener.path, "-b", b.path, b.id)
    master = listener.wait()  # before create returned
    assert listener.payload == b"/dev/ptmx"
    corral("start", b.id)
    assert b"hi" in talk(master, b"echo h''i\n", b"hi")
    out = talk(master, b"tty; stty size; echo do''ne\n", b"done")
    assert b"/dev/pts/" in out and b"33 101" in out
    talk(master, b"exit\n", b"exit")
    corral("delete", "--force", b.id)


def test_exec_tty_with_console_socket(corral, make_bundle, listener, tmp_path):
    b = make_bundle(["sleep", "300"])
    corral("run", "-d", "-b", b.path, b.id)
    pid_file = tmp_path / "exec.pid"
    corral("exec", "-d", "-t", "--console-socket", listener.path, "--pid-file", str(pid_file),
           b.id, "sh")
    master = listener.wait()
    out = talk(master, b"tty; echo do''ne\n", b"done")
    assert b"/dev/pts/" in out
    os.write(master, b"exit 3\n")
    # Reparented to us (the subreaper) once `corral exec -d` exited, as to conmon.
    _, status = os.waitpid(int(pid_file.read_text()), 0)
    assert os.waitstatus_to_exitcode(status) == 3
    corral("delete", "--force", b.id)


def test_terminal_rules(corral, make_bundle, tmp_path):
    b = make_bundle(["sh"])
    b.config["process"]["terminal"] = True
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert "cannot allocate tty if runc will detach without setting console socket" in proc.stderr
    plain = make_bundle(["sleep", "300"])
    proc = corral("create", "--console-socket", str(tmp_path / "x.sock"), "-b", plain.path,
                  plain.id, check=False)
    assert proc.returncode == 1 and "cannot use console socket" in proc.stderr
    proc = corral("create", "--console-socket", str(tmp_path / "none.sock"), "-b", b.path,
                  b.id, check=False)
    assert proc.returncode == 1 and "--console-socket" in proc.stderr
    assert not os.listdir(corral.root)
    corral("run", "-d", "-b", plain.path, plain.id)
    proc = corral("exec", "-d", "-t", plain.id, "sh", check=False)
    assert proc.returncode == 255 and "cannot allocate tty" in proc.stderr
    corral("delete", "--force", plain.id)


class OuterTerminal:
    """A user's terminal: a pty of the test's own; `corral` runs on its slave (stdio and
    controlling terminal, in a new session, so it gets SIGWINCH), the test types and reads
    on its master."""

    def __init__(self, rows: int, cols: int) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.cooked = termios.tcgetattr(self.slave)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def spawn(self, root: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*CORRAL, "--root", root, *args], stdin=self.slave,
                                stdout=self.slave, stderr=self.slave, start_new_session=True,
                                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))

    def is_raw(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & (termios.ECHO | termios.ICANON)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def outer():
    term = OuterTerminal(40, 120)
    yield term
    term.close()


def finish(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_foreground_run_relays_the_terminal(corral, make_bundle, outer):
    b = make_bundle(["sh"])
    b.config["process"]["terminal"] = True
    b.write()
    proc = outer.spawn(corral.root, "run", "-b", b.path, b.id)
    try:
        out = talk(outer.master, b"tty; stty size; echo do''ne\n", b"done")
        assert b"/dev/pts/" in out and b"40 120" in out  # our size, from the start
        assert outer.is_raw()  # every key goes to the container's terminal
        talk(outer.master, b"echo rea''dy; read x; echo got $x\n", b"ready")
        talk(outer.master, b"hello\n", b"got hello")  # input reaches the container
        outer.resize(50, 90)  # SIGWINCH to corral: the container's terminal follows
        deadline = time.monotonic() + 10
        while b"50 90" not in talk(outer.master, b"stty size; echo do''ne\n", b"done"):
            assert time.monotonic() < deadline, "the new size never reached the container"
        os.write(outer.master, b"exit 5\n")
    finally:
        status = finish(proc)
    assert status == 5
    assert termios.tcgetattr(outer.slave) == outer.cooked
    assert not os.listdir(corral.root)  # deleted after it exited, as without a terminal


def test_foreground_exec_tty_relays_and_restores(corral, make_bundle, outer):
    b = make_bundle(["sleep", "300"])
    corral("run", "-d", "-b", b.path, b.id)
    outer.resize(33, 77)
    proc = outer.spawn(corral.root, "exec", "-t", b.id, "sh", "-c",
                       "stty size; tty; echo rea''dy; read x; echo got $x; exit 3")
    try:
        out = talk(outer.master, b"", b"ready")
        assert b"33 77" in out and b"/dev/pts/" in out  # the size is set before it runs
        talk(outer.master, b"hello\n", b"got hello")
    finally:
        status = finish(proc)
    assert status == 3
    assert termios.tcgetattr(outer.slave) == outer.cooked
    # A signal to corral goes to the process; the status says so; the terminal is restored.
    proc = outer.spawn(corral.root, "exec", "--tty", b.id, "sh", "-c",
                       "echo rea''dy; exec sleep 100")
    try:
        talk(outer.master, b"", b"ready")
        assert outer.is_raw()
        proc.send_signal(signal.SIGTERM)
    finally:
        status = finish(proc)
    assert status == 128 + signal.SIGTERM
    assert termios.tcgetattr(outer.slave) == outer.cooked
    corral("delete", "--force", b.id)


def test_foreground_terminal_without_a_tty_of_our_own(corral, make_bundle):
    """No tty on our side (a pipe, /dev/null): the output is still relayed, nothing is
    made raw, the status comes back."""
    b = make_bundle(["sh", "-c", "tty; echo out; exit 4"])
    b.config["process"]["terminal"] = True
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.startswith("/dev/pts/") and "out\r\n" in proc.stdout
    assert not os.listdir(corral.root)
