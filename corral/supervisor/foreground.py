"""`run` in the foreground: forward every catchable signal to the container's init, reap
whatever is reparented to us (we are a subreaper unless --no-subreaper), and return the init's
exit status the way a shell reports it (128+N for signal N)."""

from __future__ import annotations

import os
import _signal as signal  # `signal` itself imports enum: ~2 ms

_UNFORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def wait_for_exit(init_pid: int) -> int:
    def forward(signum, _frame):
        try:
            os.kill(init_pid, signum)  # init is our child: its pid cannot be reused until reaped
        except ProcessLookupError:
            pass

    previous = {}
    for signum in range(1, signal.NSIG):
        if signum in _UNFORWARDED:
            continue
        try:
            previous[signum] = signal.signal(signum, forward)
        except (OSError, ValueError):
            continue  # reserved by the C library (SIGRTMIN..SIGRTMIN+2 under glibc)
    try:
        return _reap_until(init_pid)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _reap_until(init_pid: int) -> int:
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
