"""The messages between the parent (runtime) and the child (the plan's executor) during
creation: one set of typed messages, one framing, shared with ``corral/nsenter/executor.c``
through ``corral/nsenter/plan_ops.h`` (the message numbers and the argument encoding).

Framing: a 4-byte little-endian length, a 2-byte type, 2 zero bytes, then typed arguments
(``corral.plan.format``).

    parent -> child   Plan, UsermapDone, HooksDone, Run
    child  -> parent  Pid, HooksDue, Ready, Waiting, Error

The launcher sends ``Pid`` once the init exists; with a new user namespace the init waits for
``UsermapDone`` (its id maps written).  ``HooksDue``/``HooksDone`` only when the plan has
create-time hooks: the init, in its namespaces and before pivot_root, asks the parent to run
the prestart and createRuntime hooks, then runs the createContainer hooks itself.
"""

from __future__ import annotations

import os

from corral.errors import ProtocolError
from corral.plan import format as f
from corral.record import Record

MAX_FRAME = 256 << 20


class Plan(Record):
    """The first message: the plan's frame (``corral.plan.compiler.fill``)."""

    type = "plan"
    frame: bytes


class UsermapDone(Record):
    type = "usermap_done"


class HooksDone(Record):
    """The runtime's hooks succeeded: ``state`` is what the createContainer hooks read."""

    type = "hooks_done"
    state: bytes = b""


class Run(Record):
    """The last host-side step is done; the init finishes and waits for `start`.
    ``state``: the startContainer hooks' stdin; ``listener``: the containerProcessState for
    the seccomp agent."""

    type = "run"
    state: bytes = b""
    listener: bytes = b""


class Pid(Record):
    """The host pid of the container's init (the launcher has exited)."""

    type = "pid"
    pid: int


class HooksDue(Record):
    """The init's namespaces and mounts exist, pivot_root has not happened: the parent runs
    the prestart and createRuntime hooks now."""

    type = "hooks_due"


class Ready(Record):
    """Rootfs, mounts and process setup are done; the init waits for Run."""

    type = "ready"


class Waiting(Record):
    """Everything before exec succeeded; the init now blocks on the exec fifo."""

    type = "waiting"


class Error(Record):
    type = "error"
    message: str
    errno: int = 0
    stage: str = ""


Message = (Plan | UsermapDone | HooksDone | Run | Pid | HooksDue | Ready | Waiting | Error)


def encode(msg: Message) -> bytes:
    if isinstance(msg, Plan):
        return msg.frame
    if isinstance(msg, UsermapDone):
        return f.frame(f.MSG_USERMAP_DONE)
    if isinstance(msg, HooksDone):
        return f.frame(f.MSG_HOOKS_DONE, f.enc_bytes(msg.state))
    if isinstance(msg, Run):
        return f.frame(f.MSG_RUN, f.enc_bytes(msg.state) + f.enc_bytes(msg.listener))
    if isinstance(msg, Pid):
        return f.frame(f.MSG_PID, f.enc_int(msg.pid))
    if isinstance(msg, (HooksDue, Ready, Waiting)):
        return f.frame(_EMPTY_TYPES[type(msg)])
    if isinstance(msg, Error):
        return f.frame(f.MSG_ERROR, f.enc_int(msg.errno) + f.enc_str(msg.stage)
                       + f.enc_str(msg.message))
    raise TypeError(f"not a message: {msg!r}")


_EMPTY_TYPES = {HooksDue: f.MSG_HOOKS_DUE, Ready: f.MSG_READY, Waiting: f.MSG_WAITING}
_EMPTY = {f.MSG_HOOKS_DUE: HooksDue, f.MSG_READY: Ready, f.MSG_WAITING: Waiting,
          f.MSG_USERMAP_DONE: UsermapDone}


def decode(msg_type: int, payload: bytes) -> Message:
    try:
        args = f.decode_args(payload)
    except ValueError as exc:
        raise ProtocolError(f"undecodable message {msg_type}: {exc}") from None
    try:
        if msg_type in _EMPTY and not args:
            return _EMPTY[msg_type]()
        if msg_type == f.MSG_PID:
            (pid,) = args
            return Pid(int(pid))
        if msg_type == f.MSG_ERROR:
            errno, stage, message = args
            return Error(str(message), int(errno), str(stage).lower())
        if msg_type == f.MSG_HOOKS_DONE:
            (state,) = args
            return HooksDone(bytes(state))
        if msg_type == f.MSG_RUN:
            state, listener = args
            return Run(bytes(state), bytes(listener))
    except (TypeError, ValueError):
        raise ProtocolError(f"message {msg_type}: unexpected arguments {args!r}") from None
    raise ProtocolError(f"unknown message type {msg_type}")


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole messages back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out = []
        while len(self._buf) >= 8:
            size = int.from_bytes(self._buf[:4], "little")
            if size < 4 or size > MAX_FRAME:
                raise ProtocolError(f"a frame of {size} bytes")
            if len(self._buf) < 4 + size:
                break
            msg_type = int.from_bytes(self._buf[4:6], "little")
            payload = bytes(self._buf[8:4 + size])
            del self._buf[:4 + size]
            out.append(decode(msg_type, payload))
        return out

    @property
    def pending(self) -> bool:
        """True when a partial frame is buffered (EOF now means a torn message)."""
        return bool(self._buf)


def write_message(fd: int, msg: Message) -> None:
    data = memoryview(encode(msg))
    while data:
        data = data[os.write(fd, data):]
