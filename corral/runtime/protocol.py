"""The messages between the parent (runtime) and the child (container init) during creation.

One set of typed messages, one framing, used by both sides and by the C stage (nsenter.c
writes ``usermap_request``, ``pid``, ``waiting`` and ``error`` itself and reads
``usermap_done``, so their encodings must stay exactly what ``encode`` produces).

Framing: a 4-byte big-endian length, then a compact JSON object whose ``type`` names the message.

    parent -> child   Bootstrap, UsermapDone, HooksDone, Run
    child  -> parent  UsermapRequest, Pid, HooksDue, Ready, Waiting, Error

HooksDue/HooksDone happen only when ``Bootstrap.create_hooks``: the init, in its namespaces
and before pivot_root, asks the parent to run the prestart and createRuntime hooks, then runs
the createContainer hooks itself.
"""

from __future__ import annotations

from corral import jsonlite as json
import os
from corral.record import Record, asdict, factory

from corral.errors import ProtocolError

MAX_FRAME = 16 << 20


class Bootstrap(Record):
    """Everything the child needs: which namespaces, and the config its init applies."""

    type = "bootstrap"
    unshare_flags: int  # without CLONE_NEWCGROUP: see cgroupns
    new_user: bool
    join: list[list]  # [[CLONE_NEW* flag, path], ...]
    config: dict  # the raw config.json, validated again by the child (cheap, one code path)
    rootfs: str
    bundle: str
    fifo_path: str
    no_pivot: bool = False
    preserve_fds: int = 0  # fds 3.. passed through: --preserve-fds plus LISTEN_FDS
    extra_env: list[str] = factory(list)
    cgroupns: bool = False  # unshared by init after Run, once the parent put it in its cgroup
    session_keyring: str | None = None  # name of a new session keyring to join (runc's default)
    cgroup_mounts: list[list[str]] = factory(list)
    container_id: str = ""  # for the OCI state that hooks read on stdin
    create_hooks: bool = False  # prestart/createRuntime/createContainer hooks: sync before pivot
    # `corral exec`: a new process in an existing container.  `join` holds every namespace of
    # its init, nothing is unshared, no rootfs, no exec fifo; the parent only joins the
    # process to the cgroup (no pid record, no resources, no hooks).
    exec: bool = False
    console_socket: str | None = None  # process.terminal: the pty master goes there (host path)


class UsermapRequest(Record):
    """The child unshared its user namespace; the parent must write its id maps."""

    type = "usermap_request"
    pid: int


class UsermapDone(Record):
    type = "usermap_done"


class Pid(Record):
    """The host pid of the container's init (the intermediate process has exited)."""

    type = "pid"
    pid: int


class HooksDue(Record):
    """The init's namespaces and mounts exist, pivot_root has not happened: the parent runs
    the prestart and createRuntime hooks now."""

    type = "hooks_due"


class HooksDone(Record):
    """The runtime's hooks succeeded; the init runs the createContainer hooks next.
    ``pid``: the init's host pid, for the state those hooks read."""

    type = "hooks_done"
    pid: int = 0


class Ready(Record):
    """Rootfs, mounts and process setup are done; the child waits for Run."""

    type = "ready"


class Run(Record):
    type = "run"
    pid: int = 0  # the init's host pid (for the state the startContainer hooks read)


class Waiting(Record):
    """Everything before exec succeeded; init now blocks on the exec fifo until `start`."""

    type = "waiting"


class Error(Record):
    type = "error"
    message: str
    errno: int = 0
    stage: str = ""


Message = (Bootstrap | UsermapRequest | UsermapDone | Pid | HooksDue | HooksDone | Ready | Run
           | Waiting | Error)
MESSAGE_TYPES: dict[str, type] = {
    cls.type: cls
    for cls in (Bootstrap, UsermapRequest, UsermapDone, Pid, HooksDue, HooksDone, Ready, Run,
                Waiting, Error)
}


def encode(msg: Message) -> bytes:
    body = {"type": msg.type, **asdict(msg)}
    payload = json.dumps(body, separators=(",", ":")).encode()
    return len(payload).to_bytes(4, "big") + payload


def decode(payload: bytes) -> Message:
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise ProtocolError("frame is not a typed message")
    cls = MESSAGE_TYPES.get(body.pop("type"))
    if cls is None:
        raise ProtocolError("unknown message type")
    names = set(cls._fields)
    if set(body) - names:
        raise ProtocolError(f"{cls.type}: unexpected fields {sorted(set(body) - names)}")
    try:
        return cls(**body)
    except TypeError as exc:
        raise ProtocolError(f"{cls.type}: {exc}") from None


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole messages back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            size = int.from_bytes(self._buf[:4], "big")
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit")
            if len(self._buf) < 4 + size:
                break
            payload = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            out.append(decode(payload))
        return out

    @property
    def pending(self) -> bool:
        """True when a partial frame is buffered (EOF now means a torn message)."""
        return bool(self._buf)


def read_message(fd: int) -> Message | None:
    """Blocking read of one message from fd; None on a clean EOF between messages."""
    header = _read_exact(fd, 4)
    if not header:
        return None
    if len(header) < 4:
        raise ProtocolError("connection closed in the middle of a message")
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds the limit")
    payload = _read_exact(fd, size)
    if len(payload) < size:
        raise ProtocolError("connection closed in the middle of a message")
    return decode(payload)


def write_message(fd: int, msg: Message) -> None:
    data = memoryview(encode(msg))
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, size: int) -> bytes:
    """Up to size bytes: fewer only at EOF."""
    buf = bytearray()
    while len(buf) < size:
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
