"""The terminal of a foreground `run` or `exec` (``process.terminal``, no --console-socket):
corral takes the pty master itself and relays it, as runc does.

    ConsoleReceiver   a console socket of our own (in a private 0700 directory): the child
                      connects and sends the master with the --console-socket code, before
                      create returns; ``receive()`` takes it
    RawTerminal       our stdin in raw mode while relaying (when it is a tty), restored on
                      every way out
    relay()           one poll loop: stdin -> master, master -> stdout, SIGWINCH -> our size
                      on the master, until the process exits (its pidfd)

No trio (the command line's start-up cost), and nothing here is imported without a terminal.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket

from corral.errors import CorralError

TYPE_CHECKING = False  # typing and collections.abc cost ms on the CLI's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable

TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
_CHUNK = 65536


class ConsoleReceiver:
    """A listening socket only we (root, or our own uid) can reach; the child connects to it
    like to an engine's --console-socket.  ``close()`` removes it."""

    def __init__(self) -> None:
        base = os.environ.get("TMPDIR") or "/tmp"
        self.dir = os.path.join(base, f"corral-tty-{os.getpid()}-{os.urandom(6).hex()}")
        self.path = os.path.join(self.dir, "console.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.mkdir(self.dir, 0o700)
            self.sock.bind(self.path)
            self.sock.listen(1)
        except OSError as exc:
            self.close()
            raise CorralError(f"terminal: console socket {self.path}: "
                              f"{(exc.strerror or str(exc)).lower()}") from None

    def receive(self, timeout: float = 5.0) -> int:
        """The pty master (close-on-exec).  The child sent it before Ready, so it is queued
        by the time creation is done; the timeout only guards against a broken child."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            raise CorralError(f"terminal: no pty master on the console socket: "
                              f"{(exc.strerror or str(exc)).lower()}") from None
        with conn:
            conn.settimeout(timeout)
            _, fds, _, _ = socket.recv_fds(conn, 64, 1)
        if not fds:
            raise CorralError("terminal: the console socket carried no pty master")
        os.set_inheritable(fds[0], False)  # poststart hooks must not inherit it
        return fds[0]

    def close(self) -> None:
        self.sock.close()
        for remove, path in ((os.unlink, self.path), (os.rmdir, self.dir)):
            try:
                remove(path)
            except OSError:
                pass


def our_tty() -> int | None:
    """The first of stdin, stdout, stderr that is a terminal (runc's console.Current())."""
    for fd in (0, 1, 2):
        if os.isatty(fd):
            return fd
    return None


def copy_window_size(master: int) -> None:
    """Our terminal's size onto the master (the kernel tells the container's foreground
    process group with SIGWINCH); nothing without a terminal of our own."""
    fd = our_tty()
    if fd is None:
        return
    try:
        size = fcntl.ioctl(fd, TIOCGWINSZ, bytes(8))
        fcntl.ioctl(master, TIOCSWINSZ, size)
    except OSError:
        pass  # a terminal that went away: the process keeps its size


class RawTerminal:
    """Our stdin in raw mode (when it is a tty): every key, ^C included, goes to the
    container's terminal, whose own line discipline interprets it.  Restored on exit."""

    def __init__(self) -> None:
        self.saved = None

    def __enter__(self) -> RawTerminal:
        if os.isatty(0):
            import termios
            import tty

            self.saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)


def relay(master: int, pid: int) -> None:
    """Copies stdin to the master and the master to stdout until process ``pid`` (our
    child, not reaped yet) exits, then what the pty still holds.  Input is buffered (the
    master is non-blocking) so a process that does not read cannot block its output."""
    pidfd = os.pidfd_open(pid)
    os.set_blocking(master, False)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(master, select.POLLIN)
    reading_stdin = _readable(0)
    if reading_stdin:
        poller.register(0, select.POLLIN)
    pending = b""  # read from stdin, not yet taken by the master
    master_open = True
    try:
        while True:
            events = dict(poller.poll())
            if pidfd in events:
                break
            got = events.get(master, 0)
            if got & (select.POLLIN | select.POLLHUP | select.POLLERR) and not (
                    got & select.POLLIN and _copy_output(master)):
                poller.unregister(master)  # every slave closed: wait for the exit
                master_open = False
            if master_open and got & select.POLLOUT and pending:
                pending = pending[_write_some(master, pending):]
            if reading_stdin and events.get(0):
                chunk = _read(0)
                if chunk == b"":
                    poller.unregister(0)  # EOF: the process's terminal stays open
                    reading_stdin = False
                elif chunk:
                    pending += chunk
            if not master_open:
                pending = b""  # no terminal left to take it
            # Back-pressure: no more stdin while the master has not taken the last input.
            if reading_stdin:
                poller.modify(0, 0 if pending else select.POLLIN)
            if master_open:
                poller.modify(master, select.POLLIN | (select.POLLOUT if pending else 0))
        _drain(master)
    finally:
        os.close(pidfd)


def _drain(master: int, quiet_ms: int = 100) -> None:
    """What the process wrote before it exited: the pty may still be moving it to the
    master.  Until every slave is closed (EIO), or, when an orphan still holds one, until
    the terminal stays quiet for ``quiet_ms``."""
    poller = select.poll()
    poller.register(master, select.POLLIN)
    while poller.poll(quiet_ms) and _copy_output(master):
        pass


def _readable(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _read(fd: int) -> bytes | None:
    """None: nothing now (a non-blocking stdin); b"": end of input."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _copy_output(master: int) -> bool:
    """One read from the master to stdout; False once nothing more can come (EIO: no slave
    is open; EAGAIN: nothing buffered)."""
    try:
        data = os.read(master, _CHUNK)
    except (BlockingIOError, OSError):
        return False
    if not data:
        return False
    _write_all(1, data)
    return True


def _write_some(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return len(data)  # the terminal is gone: drop the input


def _write_all(fd: int, data: bytes) -> None:
    """To our stdout, which may be non-blocking (a shared tty): wait for room."""
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:
            return  # stdout closed: the output is lost, the relay goes on


def relay_foreground(master: int, pid: int, wait: Callable[[], int],
                     start: Callable[[], None] | None = None) -> int:
    """A foreground process's terminal: our size on the master, our stdin raw, every signal
    forwarded to ``pid`` (SIGWINCH resizes the master instead), ``start()`` (run's start),
    the relay until the process exits, then ``wait()`` for its status.  The terminal is
    restored and the master closed on every way out."""
    import _signal

    from corral.runtime.foreground import forwarding_signals

    def resize(_signum, _frame) -> None:
        copy_window_size(master)

    try:
        copy_window_size(master)  # before `start`: the process begins with our size
        with RawTerminal():
            with forwarding_signals(pid, own={_signal.SIGWINCH: resize}):
                if start is not None:
                    start()
                relay(master, pid)
                return wait()
    finally:
        os.close(master)
