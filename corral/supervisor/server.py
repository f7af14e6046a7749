"""The daemon's Unix socket: JSON lines with request ids, checked peers, bounded everything.

One task per connection and one per request, so a slow, silent, malformed or vanished
client only ever affects itself.  Framing, limits and the wire format are in docs/api.md.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket as _socket
import struct
from typing import Callable

import trio

from corral.errors import CorralError, RequestCancelled
from corral.supervisor.api import API_VERSION, METHODS
from corral.supervisor.engine import Engine

MAX_MESSAGE = 1024 * 1024  # one request line, newline included
PARTIAL_TIMEOUT = 30.0  # a request begun and not finished within this is dropped
MAX_IN_FLIGHT = 64  # concurrent requests of one connection

Logger = Callable[[str, str], None]  # (level, message)
# A client that went away, seen on its socket.
_GONE = (BrokenPipeError, ConnectionResetError, trio.BrokenResourceError, trio.ClosedResourceError)


class Peer:
    """Who is on the other end (SO_PEERCRED: the kernel's word, not the client's)."""

    def __init__(self, sock) -> None:
        raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        self.pid, self.uid, self.gid = struct.unpack("3i", raw)

    def groups(self) -> set[int]:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        return {int(g) for g in line.split()[1:]}
        except OSError:
            pass
        return set()

    def allowed(self, group: int | None) -> bool:
        if self.uid == 0:
            return True
        return group is not None and (self.gid == group or group in self.groups())


def daemon_listening(path: str) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    with _socket.socket(_socket.AF_UNIX) as probe:
        return probe.connect_ex(path) == 0


def bind_socket(path: str, group: int | None) -> _socket.socket:
    """0600 (0660 with the group's ownership when ``group``), created that way: no moment
    where others could connect."""
    if daemon_listening(path):
        raise CorralError(f"{path}: a daemon is already listening there")
    try:
        os.unlink(path)  # stale: its daemon is gone
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, group)
        os.chmod(path, 0o660)
    sock.listen(512)
    return sock


async def serve(engine: Engine, listener: _socket.socket, log: Logger,
                group: int | None = None, request_timeout: float = PARTIAL_TIMEOUT) -> None:
    sock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                conn, _ = await sock.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log("warning", f"accept: {exc.strerror}; retrying in 100 ms")
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(Connection(engine, conn, log, group, request_timeout).run)


def describe_os_error(exc: OSError) -> str:
    """One line naming the cause: the path, and for a resource the daemon ran out of,
    which one (the errno's text alone does not say whose limit it was)."""
    where = f"{exc.filename}: " if exc.filename else ""
    text = f"{where}{exc.strerror or exc}"
    if exc.errno == errno.EMFILE:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"the daemon is out of file descriptors (RLIMIT_NOFILE {soft}): {text}"
    if exc.errno == errno.ENFILE:
        return f"the system is out of file descriptors (fs.file-max): {text}"
    return text


class Connection:
    def __init__(self, engine: Engine, sock, log: Logger, group: int | None,
                 request_timeout: float) -> None:
        self.engine = engine
        self.request_timeout = request_timeout
        self.sock = sock
        self.log = log
        self.group = group
        self._send_lock = trio.Lock()
        self._in_flight = 0
        self._scopes: dict = {}  # request id -> its cancel scope (for "cancel")

    async def run(self) -> None:
        """Never raises: whatever happens to one client ends that connection only."""
        with self.sock:
            try:
                peer = Peer(self.sock)
                if not peer.allowed(self.group):
                    await self._send({"id": None, "error": {
                        "type": "PermissionDenied",
                        "message": f"uid {peer.uid} may not use this daemon (root only"
                                   f"{', or members of its --group' if self.group is not None else ''})"}})
                    return
                await self._send({"hello": {"api": API_VERSION, "server": "corral supervise"}})
                async with trio.open_nursery() as requests:
                    self._requests = requests
                    await self._read(requests)
            except* _GONE:
                pass  # the client went away; its requests were cancelled with it
            except* Exception as group:
                self.log("error", f"connection: internal error: {group.exceptions!r}")

    async def _read(self, requests: trio.Nursery) -> None:
        buffer = b""
        while True:
            timeout = self.request_timeout if buffer else math.inf
            with trio.move_on_after(timeout) as scope:
                data = await self.sock.recv(65536)
            if scope.cancelled_caught:
                await self._error(None, "Timeout", f"an unfinished request waited more than "
                                                   f"{self.request_timeout:g} s; closing")
                requests.cancel_scope.cancel()
                await self._linger()
                return
            if not data:
                return  # half-closed: the answers to what was asked still go out
            buffer += data
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    break
                line, buffer = buffer[:end], buffer[end + 1:]
                if line.strip():
                    await self._dispatch(line, requests)
            if len(buffer) >= MAX_MESSAGE:
                await self._error(None, "TooLarge", f"a request longer than {MAX_MESSAGE} "
                                                    f"bytes; closing")
                requests.cancel_scope.cancel()
                await self._linger()
                return

    async def _linger(self) -> None:
        """Closing a Unix socket with unread input resets it, and the client would never
        read our last error: say we are done writing, then discard its input a while."""
        self.sock.shutdown(_socket.SHUT_WR)
        with trio.move_on_after(2):
            while await self.sock.recv(65536):
                pass

    async def _dispatch(self, line: bytes, requests: trio.Nursery) -> None:
        try:
            msg = json.loads(line)
        except ValueError as exc:
            await self._error(None, "ParseError", f"not JSON: {exc}")
            return
        if not isinstance(msg, dict):
            await self._error(None, "BadRequest", "a request is a JSON object")
            return
        rid = msg.get("id")
        if isinstance(rid, (dict, list)):
            await self._error(None, "BadRequest", "id: must be a string, number or null")
            return
        method = msg.get("method")
        params = msg.get("params", {})
        if not isinstance(method, str):
            await self._error(rid, "BadRequest", "method: must be a string")
            return
        if method == "cancel":
            target = params.get("request") if isinstance(params, dict) else None
            scope = self._scopes.get(target) if isinstance(target, (str, int)) else None
            if scope is not None:
                scope.cancel()
            await self._send({"id": rid, "result": {"cancelled": scope is not None}})
            return
        fn = METHODS.get(method)
        if fn is None:
            await self._error(rid, "UnknownMethod", f"unknown method {method!r} (known: "
                                                    f"{', '.join(sorted(METHODS))})")
            return
        if not isinstance(params, dict):
            await self._error(rid, "BadRequest", "params: must be an object")
            return
        if self._in_flight >= MAX_IN_FLIGHT:
            await self._error(rid, "Busy", f"more than {MAX_IN_FLIGHT} requests in flight on "
                                           f"this connection")
            return
        self._in_flight += 1
        requests.start_soon(self._call, rid, method, fn, params)

    async def _call(self, rid, method: str, fn, params: dict) -> None:
        async def emit(item) -> None:
            await self._send({"id": rid, "stream": item})

        scope = trio.CancelScope()
        if isinstance(rid, (str, int)) and rid not in self._scopes:
            self._scopes[rid] = scope
        try:
            try:
                with scope:
                    result = await fn(self.engine, params, emit)
                if scope.cancelled_caught:
                    raise RequestCancelled(f"{method}: cancelled by the client")
            except _GONE:
                raise
            except CorralError as exc:
                await self._error(rid, type(exc).__name__, str(exc))
            except OSError as exc:
                await self._error(rid, "OSError", describe_os_error(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not take the daemon down
                if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
                    await self._error(rid, "OSError", f"the daemon could not start a thread "
                                                      f"(a pids limit is reached): {exc}")
                else:
                    self.log("error", f"{method}: internal error: {exc!r}")
                    await self._error(rid, "InternalError", f"{method}: {exc!r}")
            else:
                await self._send({"id": rid, "result": result})
        except _GONE:
            self._requests.cancel_scope.cancel()  # the client is gone: so is all it asked
        finally:
            self._in_flight -= 1
            if self._scopes.get(rid) is scope:
                del self._scopes[rid]

    async def _error(self, rid, kind: str, message: str) -> None:
        await self._send({"id": rid, "error": {"type": kind, "message": message}})

    async def _send(self, obj) -> None:
        data = memoryview((json.dumps(obj, separators=(",", ":")) + "\n").encode())
        async with self._send_lock:
            while data:
                data = data[await self.sock.send(data):]
