"""process.terminal with --console-socket: the pty master goes to the engine's socket, the slave
(of the container's own devpts) is the process's stdio and controlling terminal."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest


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
    proc = corral("run", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and "not supported yet" in proc.stderr
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
    assert proc.returncode == 1 and "cannot allocate tty" in proc.stderr
    corral("delete", "--force", plain.id)
