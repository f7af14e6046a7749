"""The blocking driver of the creation machine, for the one-shot command line.

The command line spawns the plan's executor itself (``corral-exec launch``; the supervisor's
keeper has a spawner for it).  No trio here: ``import trio`` alone costs more than runc's
whole ``create``.
"""

from __future__ import annotations

import os
import select
import _signal as signal  # `signal` itself imports enum: ~3 ms
import _socket
import time

from corral.errors import CorralError
from corral.plan.format import EXECUTOR
from corral.runtime import creation as c
from corral.runtime import protocol as p
from corral.runtime.prepare import PreparedContainer

TYPE_CHECKING = False  # typing and collections.abc cost ms on the CLI's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_DEADLINE = 60.0


def create_container(prepared: PreparedContainer, deadline: float = DEFAULT_DEADLINE,
                     before_release: Callable[[int], None] | None = None) -> int:
    """Runs creation to the exec-fifo wait and returns the init's pid.  On any failure
    (including KeyboardInterrupt) kills what was started, undoes the host side and raises.

    ``before_release(pid)``: a last host-side step once the child reported ``Waiting``, before
    we hang up the socket.  An exec'd process runs only after that hang-up (the init waits
    for `start` instead), so `exec --ignore-paused` joins the frozen cgroup here."""
    machine = c.CreationMachine(prepared.plan_message(), prepared.info,
                                prepared.container_state())
    parent_fd, child_fd = _socketpair()
    try:
        os.set_inheritable(child_fd, True)
        child = os.posix_spawn(EXECUTOR, [EXECUTOR, "launch", str(child_fd)], os.environ)
    except OSError:
        os.close(parent_fd)
        os.close(child_fd)
        prepared.undo_after_failure()
        raise
    os.close(child_fd)
    try:
        _drive(machine, prepared, parent_fd, child, time.monotonic() + deadline)
        if before_release is not None:
            before_release(machine.init_pid)
        released = True
        return machine.init_pid
    except BaseException:
        released = False
        for pid in (machine.init_pid, child):
            _kill(pid)
        prepared.undo_after_failure()
        raise
    finally:
        os.close(parent_fd)
        _reap(child)
        if not released and machine.init_pid:
            _reap(machine.init_pid)


def _drive(machine: c.CreationMachine, prepared: PreparedContainer, fd: int, child: int,
           deadline: float) -> None:
    decoder = p.FrameDecoder()
    actions = machine.start(child)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        for action in actions:
            _carry_out(action, prepared, fd)
            if isinstance(action, c.Done):
                return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            actions = machine.fail(CorralError(
                f"container creation timed out while {machine.state}"))
            continue
        if not poller.poll(remaining * 1000):
            continue
        try:
            data = os.read(fd, 65536)
        except ConnectionResetError:  # the child exited with bytes unread: it is gone all the same
            data = b""
        if not data:
            actions = machine.child_gone()
            continue
        actions = []
        for msg in decoder.feed(data):
            actions += machine.receive(msg)


def _carry_out(action: c.Action, prepared: PreparedContainer, fd: int) -> None:
    if isinstance(action, c.Send):
        p.write_message(fd, action.message)
    elif isinstance(action, c.Fail):
        raise action.error
    elif not isinstance(action, c.Done):
        prepared.carry_out(action)


def _socketpair() -> tuple[int, int]:
    """A close-on-exec AF_UNIX stream pair, without importing ``socket`` (5 ms)."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
