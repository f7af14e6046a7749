"""The daemon's Unix socket: JSON lines with request ids, checked peers, bounded everything.

One task per connection and one per request, so a slow, silent, malformed or vanished
client only ever affects itself.  Framing, limits and the wire format are in docs/api.md.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket as _socket
import struct
from typing import Callable

import trio

from corral.errors import CorralError, RequestCancelled, TooSlow
from corral.supervisor.api import API_VERSION, METHODS
from corral.supervisor.engine import Engine

MAX_MESSAGE = 1024 * 1024  # one request line, newline included
PARTIAL_TIMEOUT = 30.0  # a request begun and not finished within this is dropped
SEND_TIMEOUT = 30.0  # a client that reads nothing of an answer for this long is dropped
MAX_IN_FLIGHT = 64  # concurrent requests of one connection
BUSY_WAIT = 1.0  # how long a request past MAX_IN_FLIGHT waits for a slot before "Busy"
SIOCOUTQ = 0x5411  # linux/sockios.h (TIOCOUTQ)

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
                group: int | None = None, request_timeout: float = PARTIAL_TIMEOUT,
                send_timeout: float = SEND_TIMEOUT) -> None:
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
            connection = Connection(engine, conn, log, group, request_timeout, send_timeout)
            nursery.start_soon(connection.run)


class _Stuck(Exception):
    """The client read nothing of an answer for ``send_timeout``: raised in the task that
    found it so (every other task of the connection is cancelled)."""


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
                 request_timeout: float, send_timeout: float = SEND_TIMEOUT) -> None:
        self.engine = engine
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.sock = sock
        self.log = log
        self.group = group
        self.peer: Peer | None = None
        self._send_lock = trio.Lock()
        self._in_flight = 0
        self._slot_freed = trio.Event()  # set (and replaced) when a request ends
        self._scopes: dict = {}  # request id -> its cancel scope (for "cancel")
        self._requests: trio.Nursery | None = None
        # Once the client is found stuck: the rest of the message it stopped reading in
        self._unsent: bytes | None = None
        self._sending: trio.CancelScope | None = None  # the message being sent
        self._abandoned = False  # the connection is ending: a message begun may stay cut
        # Containers run with "delete_on_close": deleted once the client's side closes
        # (a Dask worker that died mid-job leaves nothing running on its node).
        self._owned: set[str] = set()
        self._client_closed = False  # its side: EOF read

    async def run(self) -> None:
        """Never raises: whatever happens to one client ends that connection only."""
        with self.sock:
            try:
                self.peer = peer = Peer(self.sock)
                if not peer.allowed(self.group):
                    await self._send({"id": None, "error": {
                        "type": "PermissionDenied",
                        "message": f"uid {peer.uid} may not use this daemon (root only"
                                   f"{', or members of its --group' if self.group is not None else ''})"}})
                    return
                await self._send({"hello": {"api": API_VERSION, "server": "corral supervise"}})
                async with trio.open_nursery() as requests:
                    self._requests = requests
                    try:
                        await self._read(requests)
                    except BaseException:  # cancelled (the daemon stops, the client went)
                        self._abandon()
                        raise
            except* _GONE:
                pass  # the client went away; its requests were cancelled with it
            except* _Stuck:
                pass  # its requests are cancelled: dropped below
            except* Exception as group:
                self.log("error", f"connection: internal error: {group.exceptions!r}")
            if self._unsent is not None:
                await self._drop_stuck()
            # Ended by either side (not by the daemon's stop, which cancels and skips this):
            # a dropped, timed-out or oversized client's delete_on_close containers go too.
            await self._delete_owned()

    async def _read(self, requests: trio.Nursery) -> None:
        buffer = b""
        while True:
            timeout = self.request_timeout if buffer else math.inf
            with trio.move_on_after(timeout) as scope:
                try:
                    data = await self.sock.recv(65536)
                except ConnectionResetError:
                    # It died with answers unread (Linux resets a Unix socket then): its
                    # requests are cancelled, as any gone client's, its own containers
                    # deleted first.
                    self._client_closed = True
                    await self._delete_owned()
                    raise
            if scope.cancelled_caught:
                await self._error(None, "Timeout", f"an unfinished request waited more than "
                                                   f"{self.request_timeout:g} s; closing")
                requests.cancel_scope.cancel()
                await self._linger()
                return
            if not data:
                self._client_closed = True
                await self._delete_owned()
                return  # half-closed: the answers to what was asked still go out
            searched = len(buffer)  # no newline before: search the new data only
            buffer += data
            start = 0
            while True:
                end = buffer.find(b"\n", max(start, searched))
                if end < 0 or end - start >= MAX_MESSAGE:
                    break
                line, start = buffer[start:end], end + 1
                if line.strip():
                    await self._dispatch(line, requests)
            buffer = buffer[start:]
            if len(buffer) >= MAX_MESSAGE:  # a line too long, ended or not
                await self._error(None, "TooLarge", f"a request longer than {MAX_MESSAGE} "
                                                    f"bytes; closing")
                requests.cancel_scope.cancel()
                await self._linger()
                return

    def _abandon(self) -> None:
        """The connection ends: the message being sent (shielded from its request's
        cancellation) need not be finished, nor hold up the daemon's stop."""
        self._abandoned = True
        if self._sending is not None:
            self._sending.cancel()

    async def _linger(self, timeout: float = 2.0) -> None:
        """Closing a Unix socket with unread input resets it, and the client would never
        read our last error: say we are done writing, then discard its input a while."""
        self.sock.shutdown(_socket.SHUT_WR)
        with trio.move_on_after(timeout):
            while await self.sock.recv(65536):
                pass

    async def _drop_stuck(self) -> None:
        """A client that read nothing for ``send_timeout``: its requests are cancelled (the
        streams it held are gone), the daemon logs why, and the client is told so after the
        message it stopped reading in, if it reads within another ``send_timeout``."""
        peer = self.peer
        who = f"pid {peer.pid}, uid {peer.uid}" if peer is not None else "unknown peer"
        reason = f"the client read nothing for {self.send_timeout:g} s; its requests are " \
                 f"cancelled and the connection closed"
        self.log("warning", f"client ({who}) dropped: {reason}")
        data = memoryview(self._unsent + _encode({"id": None, "error": {
            "type": TooSlow.__name__, "message": reason}}))
        self._unsent = b""
        try:
            with trio.move_on_after(self.send_timeout) as waited:
                while data:
                    data = data[await self.sock.send(data):]
            if not waited.cancelled_caught:
                await self._linger()
        except (*_GONE, OSError):
            pass  # gone meanwhile: nobody to tell

    async def _dispatch(self, line: bytes, requests: trio.Nursery) -> None:
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
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
        if not await self._slot():
            await self._error(rid, "Busy", f"more than {MAX_IN_FLIGHT} requests in flight on "
                                           f"this connection")
            return
        self._in_flight += 1
        requests.start_soon(self._call, rid, method, fn, params)

    async def _slot(self) -> bool:
        """Room for one more request in flight: waits a moment for one to end, so that a
        client pipelining quick requests is slowed (its socket fills), not refused."""
        with trio.move_on_after(BUSY_WAIT):
            while self._in_flight >= MAX_IN_FLIGHT:
                await self._slot_freed.wait()
        return self._in_flight < MAX_IN_FLIGHT

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
            except (*_GONE, _Stuck):
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
                self._own(method, params)
                if self._client_closed and self._owned:
                    await self._delete_owned()  # a run that was still in flight at EOF
                await self._send({"id": rid, "result": result})
        except (*_GONE, _Stuck):
            self._requests.cancel_scope.cancel()  # the client is gone: so is all it asked
        finally:
            self._in_flight -= 1
            self._slot_freed.set()
            self._slot_freed = trio.Event()
            if self._scopes.get(rid) is scope:
                del self._scopes[rid]

    def _own(self, method: str, params: dict) -> None:
        """Remembers a container of this connection's to delete when it closes (or
        forgets one the client deleted itself)."""
        cid = params.get("id")
        if method == "run" and params.get("delete_on_close") is True:
            self._owned.add(cid)
        elif method == "delete":
            self._owned.discard(cid)

    async def _delete_owned(self) -> None:
        """The client is gone: its delete_on_close containers go too, shielded (the
        daemon's own shutdown cancels connections, and then leaves containers alone)."""
        owned, self._owned = self._owned, set()
        with trio.CancelScope(shield=True):
            for cid in sorted(owned):
                try:
                    await self.engine.delete(cid, True)
                except CorralError:
                    pass  # gone already
                except Exception as exc:  # noqa: BLE001 - nothing here may end the daemon
                    self.log("error", f"delete {cid} (its client closed): {exc}")
                else:
                    self.log("info", f"deleted {cid}: the client that ran it closed")

    async def _error(self, rid, kind: str, message: str) -> None:
        await self._send({"id": rid, "error": {"type": kind, "message": message}})

    async def _send(self, obj) -> None:
        """One message, whole: once begun it is finished whatever cancels the sender (a
        line cut short would garble every later one); ``_Stuck`` when the client reads
        nothing of what it was sent for ``send_timeout`` (a slow reader is waited for)."""
        data = memoryview(_encode(obj))
        async with self._send_lock:
            if self._unsent is not None:
                raise _Stuck
            unread = _unread(self.sock)
            begun = False
            while data:
                with trio.CancelScope(shield=begun) as waited:
                    waited.deadline = trio.current_time() + self.send_timeout
                    self._sending = waited
                    try:
                        data = data[await self.sock.send(data):]
                    finally:
                        self._sending = None
                if not waited.cancelled_caught:  # sent some
                    begun = True
                    if data:
                        unread = _unread(self.sock)
                    continue
                if self._abandoned:
                    raise trio.ClosedResourceError("the connection is ending")
                now = _unread(self.sock)
                if now < unread:  # it took some: slow, not stuck
                    unread = now
                    continue
                self._unsent = bytes(data)
                if self._requests is not None:
                    self._requests.cancel_scope.cancel()
                raise _Stuck


def _unread(sock) -> int:
    """What the peer has not read yet of what was sent on ``sock`` (SIOCOUTQ: bytes, with
    the kernel's overhead); 0 if it cannot say."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0


def _encode(obj) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()
