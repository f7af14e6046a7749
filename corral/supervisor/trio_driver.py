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

    async def spawn(self, sync_fd: int, stdio: tuple[int, int, int]) -> int:
        """Forks a child that runs ``child_main(sync_fd)`` with the given stdio."""
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
        reply = slot[0]
        if reply["op"] != "spawned":
            raise CorralError(f"zygote could not fork: {reply.get('error')}")
        return reply["pid"]

    async def wait(self, pid: int) -> int:
        """Exit status of a child of the zygote (128+N for signal N)."""
        while pid not in self._exits:
            event = self._exit_events.setdefault(pid, trio.Event())
            await event.wait()
        return self._exits.pop(pid)

    async def _read_replies(self) -> None:
        while True:
            data = await self._control.recv(MAX_PACKET)
            if not data:
                return
            msg = json.loads(data)
            if msg["op"] == "exited":
                if msg["pid"] in self._forgotten:
                    self._forgotten.discard(msg["pid"])
                    continue
                status = msg["status"]
                self._exits[msg["pid"]] = 128 - status if status < 0 else status
                event = self._exit_events.pop(msg["pid"], None)
                if event is not None:
                    event.set()
            elif msg.get("seq") in self._spawns:
                done, slot = self._spawns[msg["seq"]]
                slot.append(msg)
                done.set()

    def forget(self, pid: int) -> None:
        """Drops a status nobody will wait for (e.g. the intermediate process)."""
        if self._exits.pop(pid, None) is None:
            self._forgotten.add(pid)


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
    child = None
    try:
        with trio.move_on_after(deadline if deadline else math.inf) as scope:
            try:
                child = await zygote.spawn(child_end.fileno(), stdio)
            finally:
                child_end.close()
            await _drive(machine, prepared, sock, child)
            zygote.forget(child)
            return machine.init_pid
        machine.fail(CorralError(f"container creation timed out while {machine.state}"))
        raise machine.error
    except BaseException:
        for pid in (machine.init_pid, child):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                zygote.forget(pid)  # the zygote reaps it; nobody waits for the status
        prepared.undo()
        raise
    finally:
        sock.close()


async def _drive(machine: c.CreationMachine, prepared: PreparedContainer,
                 sock: trio.socket.SocketType, child: int) -> None:
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
            else:
                prepared.carry_out(action)
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
