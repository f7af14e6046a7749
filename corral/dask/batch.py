"""``corral batch --dask ADDRESS``: the batch's session on a Dask cluster.

``corral batch`` drives a ``Session``'s ``run_to_end``; this is one whose jobs run on the
cluster's nodes, so that the batch keeps its flags, retries, timeouts (the nodes' engines
enforce them), progress, summary and ``--results`` layout, and only the place where a job
runs changes.  Each attempt is a Dask task (``node.run_attempt``) asking for one of a
node's ``corral-slots``.

The batch runs on trio; Dask's synchronous ``Client`` keeps its own event loop on a
thread of its own (owned by the client, ended by ``close``).  Completions come back
through ``TrioToken.run_sync_soon``; the blocking calls (connect, gather a result, cancel,
close) go through ``trio.to_thread``.

A lost worker: Dask reruns a task whose worker died on another worker by itself, which
would hide the loss and spend no try.  Each attempt therefore says on the submitter's
events topic when it starts on a node, and the submitter follows the scheduler's events
about each such worker: its removal, naming the tasks it was processing, or else a second
start of the same attempt, means the job was lost mid-way: the rerun is cancelled and the
attempt fails with ``WorkerLost`` (retried, as engine errors are, within the job's tries).
When Dask gives up first (``KilledWorker``, past its ``allowed-failures``), that is a
``WorkerLost`` too.

Cancelled (Ctrl-C): the futures are cancelled; each node's task sees that and deletes its
container; leaving the session waits (bounded) for every started attempt to say it ended.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Callable

import trio

from corral.api.client import error_from_wire
from corral.api.session import JobResult
from corral.dask.node import SLOTS, TOPIC_PREFIX, result_from_wire, run_attempt
from corral.errors import CorralError
from corral.jobs.job import Job

CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler
CLEANUP_TIMEOUT = 30.0  # seconds for the nodes to confirm stopping cancelled jobs


class WorkerLost(CorralError):
    """The Dask worker running an attempt died (or its node did)."""


class _Attempt:
    __slots__ = ("done", "lost")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.lost: str | None = None  # the worker it was lost with (removed, or a rerun began)


class DaskCluster:
    """What ``corral batch`` needs of a session (``run_to_end``), on a Dask cluster.
    ``slots``: the cluster's job slots when it was opened."""

    def __init__(self, address: str, warn: Callable[[str], None] | None = None) -> None:
        self.address = address
        self.slots = 0
        self._warn = warn or (lambda text: print(f"corral batch: {text}", file=sys.stderr))
        self._client = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._attempts: dict[str, _Attempt] = {}
        self._starts: dict[str, list[str]] = {}  # key -> the nodes it started on
        self._running: dict[str, str] = {}  # key -> node: started, not yet ended
        self._watched: set[str] = set()  # the workers whose events we follow
        self._changed = trio.Event()  # _running changed

    async def __aenter__(self) -> DaskCluster:
        self._token = trio.lowlevel.current_trio_token()
        # distributed logs each connection attempt and each lost worker: the batch says
        # what matters itself, in one line.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        self._client = await trio.to_thread.run_sync(self._connect)
        try:
            self.slots = await trio.to_thread.run_sync(self._count_slots)
            if not self.slots:
                raise CorralError(
                    f"no worker of the Dask cluster at {self.address} has corral job slots "
                    "(start workers with `dask worker ADDRESS --preload corral.dask.node`)")
            self._topic = TOPIC_PREFIX + self._client.id
            self._client.subscribe_topic(self._topic, self._event_from_dask)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._client.close)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_TIMEOUT):
                while self._running:
                    self._changed = trio.Event()
                    await self._changed.wait()
            for key, node in sorted(self._running.items()):
                self._warn(f"{node} did not confirm stopping {key} within "
                           f"{CLEANUP_TIMEOUT:g} s")
            await trio.to_thread.run_sync(self._client.close)

    def _connect(self):
        import distributed

        try:
            return distributed.Client(self.address, timeout=CONNECT_TIMEOUT,
                                      set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is one line
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorralError(f"cannot reach the Dask scheduler at {self.address}: "
                              f"{text}") from None

    def _count_slots(self) -> int:
        workers = self._client.scheduler_info(n_workers=-1)["workers"]
        return int(sum(w.get("resources", {}).get(SLOTS, 0) for w in workers.values()))

    # ---- one attempt --------------------------------------------------------------------

    async def run_to_end(self, job: Job, *, name: str | None = None) -> JobResult:
        """One attempt of ``job`` on a node: its result, or the error that stopped it
        (the node's, typed as the engine's; ``WorkerLost``)."""
        name = name or "job"
        key = f"corral-{name}-{uuid.uuid4().hex}"
        attempt = self._attempts[key] = _Attempt()
        future = self._client.submit(run_attempt, job, name, key, self._topic, key=key,
                                     pure=False, resources={SLOTS: 1}, retries=0)
        cancelled = False
        try:
            future.add_done_callback(lambda _: self._soon(attempt.done.set))
            try:
                await attempt.done.wait()
            finally:
                if attempt.lost is not None or not future.done():
                    cancelled = True  # its node says "ended" once the container is gone
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(future.cancel)
            if attempt.lost is not None:
                raise WorkerLost(f"its Dask worker {attempt.lost} was lost mid-job")
            return await self._outcome(future, job)
        finally:
            del self._attempts[key]
            self._starts.pop(key, None)
            if not cancelled:  # ended on its own (or with its worker): nothing to confirm
                self._running.pop(key, None)
            future.release()

    async def _outcome(self, future, job: Job) -> JobResult:
        if future.status == "cancelled":
            raise CorralError("the Dask scheduler dropped the task (did it restart?)")
        if future.status == "error":
            exc = await trio.to_thread.run_sync(future.exception)
            from distributed import KilledWorker

            if isinstance(exc, KilledWorker):
                raise WorkerLost(f"the Dask workers running it died ({exc})")
            raise CorralError(f"the Dask task failed: {type(exc).__name__}: {exc}")
        wire = await trio.to_thread.run_sync(future.result)
        if "error" in wire:
            raise error_from_wire(wire["error"])
        if wire["result"] is None:
            raise CorralError(f"{wire['node']} stopped the job: the scheduler no longer "
                              "wanted it")
        return result_from_wire(wire, job)

    # ---- events from the nodes ----------------------------------------------------------

    def _soon(self, fn, *args) -> None:
        """From Dask's threads into trio."""
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass  # the batch is over

    def _event_from_dask(self, event) -> None:
        self._soon(self._on_event, event[1])

    def _on_event(self, msg: dict) -> None:
        key, node = msg.get("key"), msg.get("node")
        if msg.get("event") == "started":
            if node not in self._watched:
                # The scheduler's events about that worker: its removal names the tasks
                # it was processing.
                self._watched.add(node)
                self._client.subscribe_topic(
                    node, lambda event, node=node: self._soon(self._on_worker_event, node,
                                                              event[1]))
            self._running[key] = node
            if key in self._attempts:  # (not a late start of an attempt already ended)
                starts = self._starts.setdefault(key, [])
                starts.append(node)
                if len(starts) > 1:
                    self._lost(key, starts[-2])
        elif msg.get("event") == "ended":
            self._running.pop(key, None)
        self._changed.set()

    def _on_worker_event(self, node: str, msg: dict) -> None:
        if msg.get("action") != "remove-worker":
            return
        for key in msg.get("processing-tasks", ()):
            if self._running.get(key) == node:  # started there: lost mid-job
                self._lost(key, node)
                del self._running[key]  # nobody is left there to say it ended
        self._changed.set()

    def _lost(self, key: str, node: str) -> None:
        attempt = self._attempts.get(key)
        if attempt is not None and attempt.lost is None:
            attempt.lost = node
            attempt.done.set()
