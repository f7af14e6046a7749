"""The trio driver of the creation machine.

Many creations run at once, each under a deadline; cancellation (or any failure) kills the
container's processes and undoes the host side before the exception propagates.
"""

from __future__ import annotations

import math
import os
import signal
import socket as _socket

import trio

from corral.errors import CorralError
from corral.runtime import creation as c
from corral.runtime import protocol as p
from corral.runtime.prepare import PreparedContainer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class KeeperHandle(Protocol):
        """What this driver needs of the process that spawns and reaps containers (the
        supervisor's keeper, ``supervisor.keeper_handle``; this part may not import it)."""

        async def spawn(self, sync_fd: int, stdio: tuple[int, int, int] | None = None,
                        logs: dict | None = None) -> tuple[int, int]: ...
        async def track(self, pid: int, state_dir: str) -> None: ...
        def expect(self, pid: int) -> None: ...
        def exited(self, pid: int) -> bool: ...
        def forget(self, pid: int) -> None: ...
        def spawned_by_this_keeper(self, pid: int) -> bool: ...

DEFAULT_DEADLINE = 60.0


async def create_container(prepared: PreparedContainer, keeper: KeeperHandle, *,
                           stdio: tuple[int, int, int] | None = (0, 1, 2),
                           logs: dict | None = None, track: bool = False,
                           deadline: float = DEFAULT_DEADLINE) -> int:
    """Runs creation to the exec-fifo wait and returns the init's pid.  On failure,
    timeout or cancellation, kills what was started and undoes the host side, then raises.
    ``logs``: the keeper logs stdout/stderr into the state dir instead of ``stdio``;
    ``track``: it records the init's exit status there."""
    machine = c.CreationMachine(prepared.plan_message(), prepared.info,
                                prepared.container_state())
    parent, child_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock = trio.socket.from_stdlib_socket(parent)
    pidfds: list[int] = []  # the intermediate's and the init's: killed on failure
    child = None
    done = False
    try:
        with trio.move_on_after(deadline if deadline else math.inf):
            try:
                child, child_pidfd = await keeper.spawn(child_end.fileno(), stdio, logs)
                pidfds.append(child_pidfd)
            finally:
                child_end.close()
            await _drive(machine, prepared, sock, child, keeper, pidfds, track)
            if not keeper.spawned_by_this_keeper(child):
                # its processes were a dead keeper's: nobody logs or records them as promised
                raise CorralError("the keeper process exited during the creation (a new "
                                  "one is started: retry)")
            done = True
            if len(pidfds) > 1:  # the init's, for its watcher: it names the init, never a reuse
                prepared.init_pidfd = pidfds.pop()
            return machine.init_pid
        machine.fail(CorralError(f"container creation timed out while {machine.state}"))
        raise machine.error
    except BaseException:
        for pidfd in pidfds:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with trio.CancelScope(shield=True):
            # Waiting for the cgroup to empty and rmdir retries block: not on the event loop.
            try:
                await trio.to_thread.run_sync(prepared.undo_after_failure)
            except RuntimeError:  # no thread to be had (a pids limit): on the loop, then
                prepared.undo_after_failure()
        raise
    finally:
        sock.close()
        for pidfd in pidfds:
            os.close(pidfd)
        for pid in (child, machine.init_pid if not done else None):
            if pid:
                keeper.forget(pid)  # the keeper reaps it; nobody waits for this status


async def _drive(machine: c.CreationMachine, prepared: PreparedContainer,
                 sock: trio.socket.SocketType, child: int, keeper: KeeperHandle,
                 pidfds: list[int], track: bool) -> None:
    decoder = p.FrameDecoder()
    actions = machine.start(child)
    watched = None  # the init, once the machine knows its pid
    while True:
        if machine.init_pid and watched is None:
            watched = machine.init_pid
            keeper.expect(watched)  # its status will be waited for
            # Its pidfd first: a failure of a later host-side step (network devices, the
            # engine's attach) must kill the init too.
            if not keeper.exited(watched):
                try:
                    pidfds.append(os.pidfd_open(watched))
                except ProcessLookupError:
                    pass  # exited (and reaped) before the keeper's report came
        for action in actions:
            if isinstance(action, c.Send):
                await _send_all(sock, p.encode(action.message))
            elif isinstance(action, c.Done):
                return
            elif isinstance(action, c.Fail):
                raise action.error
            elif isinstance(action, c.ApplyResources) and (
                    getattr(prepared, "steps_running", False)
                    or (prepared.cgroup is not None and prepared.cgroup.unit is not None)):
                scope = prepared.scope_start(action.pid)
                if scope is not None:  # the systemd scope, on the event loop
                    from corral.cgroups import systemd_trio

                    await systemd_trio.run(scope)
                    prepared.scope_started = True
                await trio.to_thread.run_sync(prepared.carry_out, action)
            elif isinstance(action, c.RunCreateRuntimeHooks):
                # Hooks may take long: never on the event loop.  Cancellation (the
                # deadline) abandons the thread; the hook's own timeout ends it.
                await trio.to_thread.run_sync(prepared.carry_out, action, abandon_on_cancel=True)
            else:
                prepared.carry_out(action)
                if isinstance(action, c.RecordPid) and track:
                    await keeper.track(action.pid, prepared.state_dir.path)
        try:
            data = await sock.recv(65536)
        except ConnectionResetError:  # the child exited with bytes unread: it is gone all the same
            data = b""
        if not data:
            actions = machine.child_gone()
        else:
            actions = [a for msg in decoder.feed(data) for a in machine.receive(msg)]


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view):]
