"""The trio driver of the creation machine, and the supervisor's handle on its zygote.

Many creations run at once, each under a deadline; cancellation (or any failure) kills the
container's processes and undoes the host side before the exception propagates.
"""

from __future__ import annotations

import array
import json
import math
import os
import signal
import socket as _socket
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from corral.errors import CorralError
from corral.supervisor import creation as c
from corral.supervisor import protocol as p
from corral.supervisor.prepare import PreparedContainer
from corral.supervisor.zygote import MAX_PACKET

DEFAULT_DEADLINE = 60.0


class Zygote:
    """The supervisor's side of the zygote process: spawn children, learn their exits."""

    def __init__(self, control: trio.socket.SocketType, process: trio.Process) -> None:
        self._control = control
        self._process = process
        self._seq = 0
        self._spawns: dict[int, tuple[trio.Event, list]] = {}
        self._exits: dict[int, int] = {}
        self._exit_events: dict[int, trio.Event] = {}
        self._forgotten: set[int] = set()
        self._dead = False

    async def spawn(self, sync_fd: int, stdio: tuple[int, int, int]) -> tuple[int, int]:
        """Forks a child that runs ``child_main(sync_fd)`` with the given stdio.  Returns its
        pid and a pidfd (opened by the zygote before it could reap the child: never a
        reused pid); the caller owns the pidfd."""
        self._check_alive()
        self._seq += 1
        seq = self._seq
        done, slot = trio.Event(), []
        self._spawns[seq] = (done, slot)
        try:
            await self._control.sendmsg(
                [json.dumps({"op": "spawn", "seq": seq}).encode()],
                [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", [sync_fd, *stdio]))])
            await done.wait()
        finally:
            del self._spawns[seq]
        self._check_alive()
        reply, fds = slot[0]
        if reply["op"] != "spawned" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise CorralError(f"zygote could not fork: {reply.get('error')}")
        return reply["pid"], fds[0]

    def exited(self, pid: int) -> bool:
        return pid in self._exits

    async def wait(self, pid: int) -> int:
        """Exit status of a child of the zygote (128+N for signal N)."""
        while pid not in self._exits:
            self._check_alive()
            event = self._exit_events.setdefault(pid, trio.Event())
            await event.wait()
        return self._exits.pop(pid)

    def forget(self, pid: int) -> None:
        """Drops a status nobody will wait for (e.g. the intermediate process)."""
        if self._exits.pop(pid, None) is None:
            self._forgotten.add(pid)

    def _check_alive(self) -> None:
        if self._dead:
            raise CorralError("the zygote process exited; no container can be created")

    async def _read_replies(self) -> None:
        try:
            while True:
                msg, fds = await self._recv()
                if msg is None:
                    return
                if msg["op"] == "exited":
                    self._on_exit(msg["pid"], msg["status"])
                elif msg.get("seq") in self._spawns:
                    done, slot = self._spawns[msg["seq"]]
                    slot.append((msg, fds))
                    done.set()
                else:
                    for fd in fds:
                        os.close(fd)
        finally:
            # Nothing more will come: wake every waiter, which then raises.
            self._dead = True
            for done, _ in self._spawns.values():
                done.set()
            for event in self._exit_events.values():
                event.set()

    async def _recv(self) -> tuple[dict | None, list[int]]:
        fds = array.array("i")
        data, ancdata, _flags, _addr = await self._control.recvmsg(
            MAX_PACKET, _socket.CMSG_SPACE(fds.itemsize), _socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        return (json.loads(data) if data else None), list(fds)

    def _on_exit(self, pid: int, status: int) -> None:
        if pid in self._forgotten:
            self._forgotten.discard(pid)
            return
        self._exits[pid] = 128 - status if status < 0 else status
        event = self._exit_events.pop(pid, None)
        if event is not None:
            event.set()


@asynccontextmanager
async def open_zygote() -> AsyncIterator[Zygote]:
    """Starts the zygote; on exit closes its control socket, which ends it."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "corral.supervisor.zygote", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),))
    finally:
        theirs.close()
    control = trio.socket.from_stdlib_socket(ours)
    zygote = Zygote(control, process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(zygote._read_replies)
            try:
                yield zygote
            finally:
                nursery.cancel_scope.cancel()
    finally:
        control.close()
        with trio.CancelScope(shield=True):
            await process.wait()


async def create_container(prepared: PreparedContainer, zygote: Zygote, *,
                           stdio: tuple[int, int, int] = (0, 1, 2),
                           deadline: float = DEFAULT_DEADLINE) -> int:
    """Runs creation to the exec-fifo wait and returns the init's pid.  On failure,
    timeout or cancellation, kills what was started and undoes the host side, then raises."""
    machine = c.CreationMachine(prepared.bootstrap)
    parent, child_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock = trio.socket.from_stdlib_socket(parent)
    pidfds: list[int] = []  # the intermediate's and the init's: killed on failure
    child = None
    try:
        with trio.move_on_after(deadline if deadline else math.inf):
            try:
                child, child_pidfd = await zygote.spawn(child_end.fileno(), stdio)
                pidfds.append(child_pidfd)
            finally:
                child_end.close()
            await _drive(machine, prepared, sock, child, zygote, pidfds)
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
            await trio.to_thread.run_sync(prepared.undo_after_failure)
        raise
    finally:
        sock.close()
        for pidfd in pidfds:
            os.close(pidfd)
        for pid in (child, machine.init_pid if machine.state is not c.State.DONE else None):
            if pid:
                zygote.forget(pid)  # the zygote reaps it; nobody waits for this status


async def _drive(machine: c.CreationMachine, prepared: PreparedContainer,
                 sock: trio.socket.SocketType, child: int, zygote: Zygote,
                 pidfds: list[int]) -> None:
    decoder = p.FrameDecoder()
    actions = machine.start(child)
    while True:
        for action in actions:
            if isinstance(action, c.Send):
                await _send_all(sock, p.encode(action.message))
            elif isinstance(action, c.Done):
                return
            elif isinstance(action, c.Fail):
                raise action.error
            elif isinstance(action, c.RunCreateRuntimeHooks):
                # Hooks may take long: never on the event loop.  Cancellation (the
                # deadline) abandons the thread; the hook's own timeout ends it.
                await trio.to_thread.run_sync(prepared.carry_out, action, abandon_on_cancel=True)
            else:
                prepared.carry_out(action)
                if isinstance(action, c.RecordPid) and not zygote.exited(action.pid):
                    pidfds.append(os.pidfd_open(action.pid))
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
