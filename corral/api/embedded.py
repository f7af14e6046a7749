"""``corral.Supervisor``: the supervisor's engine inside a trio program, no daemon.

Same calls as ``corral.Client`` (``run``, ``map``, ``events`` and the container handles);
the engine runs in the caller's event loop and its keeper ends with the ``async with``.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from corral.jobs.job import Job
from corral.api.session import Backend, Session
from corral.supervisor.api import signal_number
from corral.supervisor.engine import Engine, open_engine


class EngineBackend:
    """The session's calls made directly on an ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run_job(self, cid: str, job: Job) -> dict:
        return await self.engine.run_job(cid, job)

    async def wait(self, cid: str) -> dict:
        return await self.engine.wait_result(cid)

    async def kill(self, cid: str, signal: int | str, all_processes: bool) -> None:
        self.engine.kill(cid, signal_number(signal, zero=True), all_processes)

    async def stop(self, cid: str, grace: float) -> int | None:
        return await self.engine.stop(cid, grace)

    async def delete(self, cid: str, force: bool) -> None:
        await self.engine.delete(cid, force)

    async def state(self, cid: str) -> dict:
        return self.engine.state(cid)

    async def exec(self, cid: str, args: list[str], env: list[str], cwd: str | None,
                   user: str | None, timeout: float | None) -> dict:
        return await self.engine.exec(cid, args, env=env, cwd=cwd, user=user, timeout=timeout)

    async def stats(self, cid: str) -> dict:
        return self.engine.stats(cid)

    async def logs(self, cid: str, stream: str, follow: bool) -> AsyncIterator[tuple[str, str]]:
        async for item in self.engine.text_logs(cid, stream, follow):
            yield item

    async def events(self) -> AsyncIterator[dict]:
        async with self.engine.subscribe() as events:
            async for event in events:
                yield event


class Supervisor(Session):
    """``async with corral.Supervisor() as sup: result = await (await sup.run(job)).result()``

    ``root``: the state directory (the command line's default, so ``corral list`` shows
    the jobs); ``cgroup_parent``: where jobs' cgroups go; the rest are the engine's
    options (``max_concurrent_creates``, ``log_max_bytes``, ``stop_grace``...).
    """

    def __init__(self, root: str | None = None, *, cgroup_parent: str = "corral",
                 **engine_options) -> None:
        super().__init__()
        if root is None:
            from corral.oci.state import default_root

            root = default_root()
        self.root = root
        self._options = dict(engine_options, cgroup_parent=cgroup_parent)
        self.engine: Engine | None = None

    async def _open(self, stack: contextlib.AsyncExitStack) -> Backend:
        self.engine = await stack.enter_async_context(open_engine(self.root, **self._options))
        return EngineBackend(self.engine)
