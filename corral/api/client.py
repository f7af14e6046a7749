"""``corral.Client``: the daemon's API from asyncio or trio programs (anyio).

``Client`` is a ``Session`` (``run``, ``map``, ``events``, container handles) over one
connection to ``corral supervise``; ``Connection`` is the wire underneath (requests with
ids, answers in any order, streams), usable on its own for the raw API in docs/api.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from typing import Any, AsyncIterator

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from corral import errors
from corral.errors import CorralError
from corral.jobs.job import Job
from corral.api.session import Backend, Session, default_socket

MAX_LINE = 64 * 1024 * 1024
HELLO_TIMEOUT = 10.0
CANCEL_WAIT = 10.0


class RemoteError(CorralError):
    """An error the daemon answered with; ``type`` is its name in docs/api.md."""

    def __init__(self, kind: str, message: str) -> None:
        self.type = kind
        super().__init__(message)


_KNOWN = {name: getattr(errors, name) for name in (
    "ConfigError", "ContainerNotFound", "ContainerExists", "ContainerStateError",
    "NotSupportedError", "ChildError", "CgroupError", "ProtocolError", "RequestCancelled",
    "TooSlow")}


def error_from_wire(error: dict) -> CorralError:
    """The daemon's {"type", "message"} as the exception of that name (its text as sent)."""
    kind, message = error.get("type", "Error"), error.get("message", "")
    cls = _KNOWN.get(kind)
    if cls is None:
        return RemoteError(kind, message)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)  # the daemon's text, as it said it
    return exc


class _Pending:
    __slots__ = ("done", "reply", "items")

    def __init__(self, streaming: bool) -> None:
        self.done = anyio.Event()
        self.reply: dict | None = None
        self.items = anyio.create_memory_object_stream(math.inf) if streaming else None


class Connection:
    """One connection to the daemon.  ``run_reader`` must run in a task while it is used."""

    def __init__(self, stream, hello: dict, reader: BufferedByteReceiveStream) -> None:
        self._socket = stream
        self.hello = hello
        self._reader = reader
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._send_lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: str | None = None) -> Connection:
        path = path or default_socket()
        try:
            stream = await anyio.connect_unix(path)
        except OSError as exc:
            raise CorralError(f"cannot reach corral supervise at {path}: "
                              f"{exc.strerror or exc} (is it running?)") from None
        reader = BufferedByteReceiveStream(stream)
        try:
            with anyio.fail_after(HELLO_TIMEOUT):
                hello = json.loads(await reader.receive_until(b"\n", MAX_LINE))
            if not isinstance(hello, dict):
                raise ValueError(f"{hello!r}")
        except BaseException as exc:
            await stream.aclose()
            if isinstance(exc, (TimeoutError, ValueError, anyio.EndOfStream,
                                anyio.IncompleteRead, anyio.DelimiterNotFound)):
                raise CorralError(f"{path} did not greet like corral supervise "
                                  f"({type(exc).__name__})") from None
            raise
        if "error" in hello:
            await stream.aclose()
            raise error_from_wire(hello["error"])
        return cls(stream, hello.get("hello", {}), reader)

    async def aclose(self) -> None:
        self._closed = True
        await self._socket.aclose()

    async def run_reader(self) -> None:
        try:
            while True:
                line = await self._reader.receive_until(b"\n", MAX_LINE)
                msg = json.loads(line)
                pending = self._pending.get(msg.get("id"))
                if pending is None:
                    continue
                if "stream" in msg:
                    if pending.items is not None:
                        try:
                            pending.items[0].send_nowait(msg["stream"])
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                            pass  # its reader left
                else:
                    pending.reply = msg
                    pending.done.set()
                    if pending.items is not None:
                        pending.items[0].close()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError,
                ConnectionError):
            pass
        finally:
            self._closed = True
            for pending in self._pending.values():
                pending.done.set()  # the waiters see no reply: the connection is gone
                if pending.items is not None:
                    pending.items[0].close()

    async def call(self, method: str, **params: Any) -> Any:
        rid, pending = await self._send(method, params, streaming=False)
        try:
            return await self._result(rid, pending)
        finally:
            self._pending.pop(rid, None)

    async def stream(self, method: str, **params: Any) -> AsyncIterator[Any]:
        """The items of a streaming method (logs, events) until its end; leaving early
        cancels the request on the daemon's side."""
        rid, pending = await self._send(method, params, streaming=True)
        receive = pending.items[1]
        try:
            async for item in receive:  # ends when the final answer came (or the connection went)
                yield item
            await self._result(rid, pending)
        finally:
            if not pending.done.is_set() and not self._closed:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT):
                    await self._send("cancel", {"request": rid}, streaming=False)
                    await pending.done.wait()
            self._pending.pop(rid, None)
            receive.close()

    async def _send(self, method: str, params: dict, streaming: bool) -> tuple[int, _Pending]:
        if self._closed:
            raise CorralError("the connection to corral supervise is closed")
        rid = next(self._ids)
        pending = _Pending(streaming)
        self._pending[rid] = pending
        data = (json.dumps({"id": rid, "method": method, "params": params},
                           separators=(",", ":")) + "\n").encode()
        async with self._send_lock:
            await self._socket.send(data)
        return rid, pending

    async def _result(self, rid: int, pending: _Pending) -> Any:
        try:
            await pending.done.wait()
        except BaseException:
            # Cancelled here: ask the daemon to cancel it too, and wait for that, so that
            # nothing it was doing for us (a creation) is left half-way.
            with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT):
                if not self._closed:
                    await self._send("cancel", {"request": rid}, streaming=False)
                    await pending.done.wait()
            raise
        if pending.reply is None:
            raise CorralError("the connection to corral supervise closed before it answered")
        if "error" in pending.reply:
            raise error_from_wire(pending.reply["error"])
        return pending.reply.get("result")


class RemoteBackend:
    """The session's calls as API requests."""

    def __init__(self, conn: Connection, delete_on_close: bool = False) -> None:
        self.conn = conn
        self.delete_on_close = delete_on_close

    async def run_job(self, cid: str, job: Job) -> dict:
        owned = {"delete_on_close": True} if self.delete_on_close else {}
        return await self.conn.call("run", id=cid, job=job.to_dict(), **owned)

    async def wait(self, cid: str) -> dict:
        return await self.conn.call("wait", id=cid)

    async def kill(self, cid: str, signal: int | str, all_processes: bool) -> None:
        await self.conn.call("kill", id=cid, signal=signal, all=all_processes)

    async def stop(self, cid: str, grace: float) -> int | None:
        return (await self.conn.call("stop", id=cid, grace=grace))["exitStatus"]

    async def delete(self, cid: str, force: bool) -> None:
        await self.conn.call("delete", id=cid, force=force)

    async def state(self, cid: str) -> dict:
        return await self.conn.call("state", id=cid)

    async def exec(self, cid: str, args: list[str], env: list[str], cwd: str | None,
                   user: str | None, timeout: float | None) -> dict:
        return await self.conn.call("exec", id=cid, args=args, env=env, cwd=cwd, user=user,
                                    timeout=timeout)

    async def stats(self, cid: str) -> dict:
        return await self.conn.call("stats", id=cid)

    async def logs(self, cid: str, stream: str, follow: bool) -> AsyncIterator[tuple[str, str]]:
        async for item in self.conn.stream("logs", id=cid, stream=stream, follow=follow):
            yield item["stream"], item["data"]

    async def events(self) -> AsyncIterator[dict]:
        async for event in self.conn.stream("events"):
            yield event


class Client(Session):
    """``async with corral.Client() as client: c = await client.run(job)`` — under asyncio
    or trio.  ``socket``: the daemon's (default ``/run/corral/supervise.sock``).
    ``delete_on_close``: the daemon deletes this client's jobs' containers if its connection
    closes first -- for a client that may die mid-job (a Dask worker), whose containers
    must not outlive it; leaving the session deletes them anyway."""

    def __init__(self, socket: str | None = None, *, delete_on_close: bool = False) -> None:
        super().__init__()
        self.socket = socket
        self.delete_on_close = delete_on_close
        self.connection: Connection | None = None

    async def _open(self, stack: contextlib.AsyncExitStack) -> Backend:
        conn = await Connection.open(self.socket)
        stack.push_async_callback(conn.aclose)
        group = await stack.enter_async_context(anyio.create_task_group())
        # Shielded: the session's clean-up (after whatever cancelled the caller) needs the
        # daemon's answers; the stack cancels the reader last.
        reader = anyio.CancelScope(shield=True)

        async def read() -> None:
            with reader:
                await conn.run_reader()

        group.start_soon(read)
        stack.callback(reader.cancel)
        self.connection = conn
        return RemoteBackend(conn, self.delete_on_close)
