"""`run` and `exec` in the foreground: forward every catchable signal to the container's
process, reap whatever is reparented to us (`run` is a subreaper unless --no-subreaper), and
return the process's exit status the way a shell reports it (128+N for signal N).  With a
relayed terminal, see ``tty_relay``."""

from __future__ import annotations

import os

import _signal as signal  # `signal` itself imports enum: ~2 ms

_UNFORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


class forwarding_signals:  # noqa: N801 - used as a context manager, like contextlib's
    """Every catchable signal this process gets goes to the init while the block runs.
    (A class, not contextlib: contextlib's import costs ~3 ms of `corral run`.)"""

    def __init__(self, init_pid: int, own: dict | None = None) -> None:
        self.init_pid = init_pid
        self.own = own or {}  # signal -> handler kept for ourselves (a relayed tty's SIGWINCH)
        self.previous: dict = {}

    def _forward(self, signum, _frame) -> None:
        try:
            os.kill(self.init_pid, signum)  # our child: its pid is not reused until reaped
        except ProcessLookupError:
            pass

    def __enter__(self) -> None:
        for signum in range(1, signal.NSIG):
            if signum in _UNFORWARDED:
                continue
            try:
                self.previous[signum] = signal.signal(signum,
                                                      self.own.get(signum, self._forward))
            except (OSError, ValueError):
                continue  # reserved by the C library (SIGRTMIN..SIGRTMIN+2 under glibc)

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def reap_until(init_pid: int) -> int:
    """Reaps children until the init exits; returns its status (128+N for signal N)."""
    status = None
    while status is None:
        try:
            pid, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255  # init is not ours to wait for any more: nothing left to report
        if pid == init_pid:
            status = exit_status(raw)
    # Orphans that were reparented to us and already exited.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return status


def exit_status(raw: int) -> int:
    code = os.waitstatus_to_exitcode(raw)
    return 128 - code if code < 0 else code
