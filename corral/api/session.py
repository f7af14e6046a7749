"""What ``corral.Client`` and ``corral.Supervisor`` share: a scope of containers started by
one caller, handles on them, ``map`` over many jobs, and the results.

Written on anyio so that it runs under asyncio and trio alike.  A ``Session`` owns every
container it started: leaving its ``async with`` (normally, by an exception, by Ctrl-C or a
cancel scope) stops and deletes each one that is still there, shielded from the
cancellation that is ending it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import uuid
from typing import Any, AsyncIterator, Iterable, Protocol

import anyio

from corral.errors import ConfigError, CorralError
from corral.jobs.job import Job

CLEANUP_TIMEOUT = 30.0


class Backend(Protocol):
    """The engine calls a session needs: the embedded engine or the daemon's API."""

    async def run_job(self, cid: str, job: Job) -> dict: ...
    async def wait(self, cid: str) -> dict: ...
    async def kill(self, cid: str, signal: int | str, all_processes: bool) -> None: ...
    async def stop(self, cid: str, grace: float) -> int | None: ...
    async def delete(self, cid: str, force: bool) -> None: ...
    async def state(self, cid: str) -> dict: ...
    async def exec(self, cid: str, args: list[str], env: list[str], cwd: str | None,
                   user: str | None, timeout: float | None) -> dict: ...
    async def stats(self, cid: str) -> dict: ...
    def logs(self, cid: str, stream: str, follow: bool) -> AsyncIterator[tuple[str, str]]: ...
    def events(self) -> AsyncIterator[dict]: ...


class ExecResult:
    __slots__ = ("exit_status", "stdout", "stderr")

    def __init__(self, exit_status: int, stdout: str, stderr: str) -> None:
        self.exit_status, self.stdout, self.stderr = exit_status, stdout, stderr

    def __repr__(self) -> str:
        return f"ExecResult(exit_status={self.exit_status}, stdout={self.stdout!r:.60})"


class JobResult:
    """One finished job.  ``error`` is set (and ``exit_status`` None) when it could not even
    be created (a command that does not exist, a limit the kernel refuses).  ``node``: where
    it ran when that was not here (the Dask worker's address, under ``corral.dask``)."""

    __slots__ = ("name", "id", "job", "exit_status", "timed_out", "stdout", "stderr",
                 "started_at", "exited_at", "duration", "peak_memory", "error", "attempts",
                 "node")

    def __init__(self, name: str, cid: str, job: Job, **fields: Any) -> None:
        self.name, self.id, self.job = name, cid, job
        self.exit_status: int | None = fields.get("exit_status")
        self.timed_out: bool = fields.get("timed_out", False)
        self.stdout: str = fields.get("stdout", "")
        self.stderr: str = fields.get("stderr", "")
        self.started_at: str | None = fields.get("started_at")
        self.exited_at: str | None = fields.get("exited_at")
        self.duration: float = fields.get("duration", 0.0)
        self.peak_memory: int | None = fields.get("peak_memory")
        self.error: str | None = fields.get("error")
        self.attempts: int = fields.get("attempts", 1)
        self.node: str | None = fields.get("node")

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.exit_status == 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__ if k != "job"}

    def __repr__(self) -> str:
        what = self.error or ("timed out" if self.timed_out else f"exit {self.exit_status}")
        return f"JobResult({self.name!r}, {what}, {self.duration:.3f} s)"


class Container:
    """A handle on one container the session started."""

    def __init__(self, session: Session, cid: str, name: str, job: Job) -> None:
        self.session = session
        self.id = cid
        self.name = name
        self.job = job
        self._started = time.monotonic()

    def __repr__(self) -> str:
        return f"Container({self.id!r})"

    async def wait(self) -> int | None:
        """The exit status (128+N for signal N)."""
        return (await self.session.backend.wait(self.id))["exitStatus"]

    async def result(self) -> JobResult:
        """Waits for the end and collects the output (the logs) and the accounting."""
        info = await self.session.backend.wait(self.id)
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        async for stream, text in self.session.backend.logs(self.id, "both", False):
            out[stream].append(text)
        return JobResult(self.name, self.id, self.job, exit_status=info["exitStatus"],
                         timed_out=info.get("timedOut", False), stdout="".join(out["stdout"]),
                         stderr="".join(out["stderr"]), started_at=info.get("startedAt"),
                         exited_at=info.get("exitedAt"), peak_memory=info.get("peakMemory"),
                         duration=time.monotonic() - self._started)

    async def kill(self, signal: int | str = "TERM", all: bool = False) -> None:  # noqa: A002
        await self.session.backend.kill(self.id, signal, all)

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, and SIGKILL after ``grace`` seconds; the exit status."""
        return await self.session.backend.stop(self.id, grace)

    async def exec(self, args: list[str], *, env: Iterable[str] = (), cwd: str | None = None,
                   user: str | None = None, timeout: float | None = None) -> ExecResult:
        got = await self.session.backend.exec(self.id, list(args), list(env), cwd, user, timeout)
        return ExecResult(got["exitStatus"], got["stdout"], got["stderr"])

    async def stats(self) -> dict:
        return await self.session.backend.stats(self.id)

    async def state(self) -> dict:
        return await self.session.backend.state(self.id)

    async def logs(self, stream: str = "both", follow: bool = False) -> AsyncIterator[tuple[str, str]]:
        """(stream, text) chunks; with ``follow`` until the container has exited."""
        async for item in self.session.backend.logs(self.id, stream, follow):
            yield item

    async def delete(self) -> None:
        """Stops it if it still runs (SIGKILL) and removes it."""
        await self.session.backend.delete(self.id, True)
        self.session._started.pop(self.id, None)


class Session:
    """Base of ``Client`` and ``Supervisor``: a subclass opens its backend in ``_open``.
    Leaving the ``async with`` stops ``map`` work, deletes every container still there,
    then closes the backend, in that order."""

    backend: Backend

    def __init__(self) -> None:
        self._started: dict[str, Container] = {}
        self._prefix = f"job-{uuid.uuid4().hex[:8]}"
        self._counter = itertools.count(1)
        self._stack: contextlib.AsyncExitStack | None = None
        self._group = None

    async def _open(self, stack: contextlib.AsyncExitStack) -> Backend:
        raise NotImplementedError

    async def __aenter__(self):
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            self.backend = await self._open(stack)
            stack.push_async_callback(self._close)
            self._group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._group.cancel_scope.cancel)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc) -> bool | None:
        stack, self._stack = self._stack, None
        return await stack.__aexit__(*exc)

    def _new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    async def run(self, job: Job, *, name: str | None = None) -> Container:
        """Creates and starts a container for ``job``; the handle is this session's until
        deleted (leaving the session deletes it)."""
        if not isinstance(job, Job):
            raise ConfigError("job", f"{job!r} is not a corral.Job")
        cid = self._new_id()
        container = Container(self, cid, name or cid, job)
        self._started[cid] = container  # before the call: a cancelled create is cleaned up
        try:
            await self.backend.run_job(cid, job)
        except Exception:
            self._started.pop(cid, None)  # failed, and undone by the engine
            raise
        # (cancelled: the id stays, so that leaving the session deletes whatever was made)
        return container

    async def map(self, jobs: Iterable[Job | tuple[str, Job]], *, limit: int = 4,
                  keep_going: bool = True) -> AsyncIterator[JobResult]:
        """Runs ``jobs`` (or ``(name, job)`` pairs), at most ``limit`` at a time, and yields
        each one's ``JobResult`` as it finishes; each container is deleted once its result
        is collected.  A job that cannot be created gives a result with ``error`` set;
        ``keep_going=False`` raises instead.  Stopping the iteration early stops the rest."""
        if not isinstance(limit, int) or limit < 1:
            raise ConfigError("limit", f"{limit!r}: must be an integer of at least 1")
        if self._group is None:
            raise CorralError("map: use the session in an `async with` first")
        send, receive = anyio.create_memory_object_stream(math.inf)
        pending = iter(named_jobs(jobs))
        scope = anyio.CancelScope()

        async def worker() -> None:
            for name, job in pending:
                await send.send(await self._run_to_end(name, job, keep_going))

        async def drive() -> None:
            # In the session's task group, not in this generator: a generator must not
            # yield from inside a task group.
            async with send:
                with scope:
                    async with anyio.create_task_group() as group:
                        for _ in range(limit):
                            group.start_soon(worker)

        self._group.start_soon(drive)
        try:
            async with receive:
                async for result in receive:
                    if isinstance(result, BaseException):
                        raise result
                    yield result
        finally:
            scope.cancel()

    async def run_to_end(self, job: Job, *, name: str | None = None) -> JobResult:
        """run + result + delete: the job's result once its container is gone (deleted
        even when the caller is cancelled).  A job that cannot be created raises."""
        started = time.monotonic()
        container = await self.run(job, name=name)
        try:
            result = await container.result()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                try:
                    await container.delete()
                except CorralError:
                    pass  # gone already; leaving the session retries anything left
        result.duration = time.monotonic() - started
        return result

    async def _run_to_end(self, name: str, job: Job, keep_going: bool):
        started = time.monotonic()
        try:
            return await self.run_to_end(job, name=name)
        except (CorralError, OSError) as exc:
            if not keep_going:
                return exc
            message = str(exc) if isinstance(exc, CorralError) else f"{type(exc).__name__}: {exc}"
            return JobResult(name, "", job, error=message, duration=time.monotonic() - started)

    async def events(self) -> AsyncIterator[dict]:
        """Every container's events (created, started, exited, oom, timeout, deleted) from
        now on, as dicts with ``type``, ``id`` and ``time``."""
        async for event in self.backend.events():
            yield event

    async def _close(self) -> None:
        """Deletes every container this session started that is still there."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
            async with anyio.create_task_group() as group:
                for cid in list(self._started):
                    group.start_soon(self._forget, cid)

    async def _forget(self, cid: str) -> None:
        try:
            await self.backend.delete(cid, True)
        except CorralError:
            pass  # already gone
        self._started.pop(cid, None)


def named_jobs(jobs: Iterable[Job | tuple[str, Job]]):
    """(name, job) pairs: a bare job is named job-N (N from 1)."""
    for index, item in enumerate(jobs, 1):
        if isinstance(item, Job):
            yield f"job-{index}", item
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], Job)):
            yield item
        else:
            raise ConfigError(f"jobs[{index - 1}]", f"{item!r} is not a Job or (name, Job)")


def default_socket() -> str:
    from corral.oci.state import default_root

    return os.path.join(default_root(), "supervise.sock")
