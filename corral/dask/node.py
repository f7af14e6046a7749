"""The node side: a Dask worker that runs corral jobs through its node's ``corral supervise``.

Started as a preload of any Dask worker, so that every deployment Dask has (the command
line, dask-jobqueue on Slurm/PBS, Kubernetes) can run corral jobs::

    CORRAL_SOCKET=/run/corral/supervise.sock \\
    dask worker tcp://SCHEDULER:8786 --nthreads 8 --resources corral-slots=8 \\
        --preload corral.dask.node

(``CORRAL_SOCKET`` defaults to /run/corral/supervise.sock; a ``Worker`` made in Python can
pass ``preload_argv=["--corral-socket=PATH"]`` instead: the ``dask worker`` command line,
with click 8.5, does not pass a preload the options given after it.)

At start-up it greets the daemon (a worker whose daemon does not answer declares no slots,
logs why, and so is never given a job) and declares ``corral-slots`` as a Dask worker
resource; every job task asks for one, so the scheduler never runs more jobs on a node
than it has slots.  A job is an ``async`` task, on the worker's event loop: it opens a
``corral.Client`` of its own (``delete_on_close``: if the worker dies mid-job, the daemon
sees the connection close and deletes the container), runs the job to its end, and
returns its result.  Dask does not stop a running task it no longer wants (a cancelled
future, a submitter that went away), so the task watches its own state on the worker and
stops the job itself: the session deletes the container on the way out.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

import anyio
import click

from corral.api.client import Client, Connection
from corral.api.session import JobResult
from corral.errors import CorralError, only_error
from corral.jobs.job import Job

SLOTS = "corral-slots"  # the Dask worker resource: one per job running on a node
TOPIC_PREFIX = "corral-"  # a submitter's events topic: corral-<its Dask client id>
WATCH_EVERY = 0.2  # seconds between looks at whether the task is still wanted
OUTPUT_CAP = 1 << 20  # bytes of each stream a result carries back (the last ones)
WANTED = ("executing", "long-running", "resumed")

# The daemon's socket of each worker of this process with a node (a LocalCluster may run
# several workers in one process).
_nodes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_socket() -> str:
    from corral.api.session import default_socket as default

    return os.environ.get("CORRAL_SOCKET") or default()


@click.command()
@click.option("--corral-socket", default=None,
              help="the node's corral supervise socket (default $CORRAL_SOCKET or "
                   "/run/corral/supervise.sock)")
async def dask_setup(worker, corral_socket: str | None) -> None:
    """Runs before the worker registers with the scheduler, so the slots it declares
    then are the ones the scheduler places jobs by: ``--resources corral-slots=N`` as
    given, else the worker's ``--nthreads``.  A node that cannot serve jobs declares no
    slots at all, and Dask logs why."""
    resources = worker.state.total_resources
    try:
        socket = os.path.abspath(corral_socket or default_socket())
        slots = resources.get(SLOTS, worker.state.nthreads)
        if slots > worker.state.nthreads:
            # A worker runs at most --nthreads tasks at once, async ones too.
            raise ValueError(f"{SLOTS}={slots:g} is more than the worker's --nthreads "
                             f"{worker.state.nthreads}: give --nthreads {slots:g} or more")
        conn = await Connection.open(socket)  # raises, naming the socket, if nobody answers
        await conn.aclose()
    except BaseException:
        resources.pop(SLOTS, None)
        worker.state.available_resources.pop(SLOTS, None)
        raise
    resources[SLOTS] = slots
    worker.state.available_resources[SLOTS] = slots
    _nodes[worker] = socket


# ---- the job tasks ----------------------------------------------------------------------


async def run_job(job: Job, name: str, key: str) -> JobResult:
    """The task behind ``corral.dask.submit``: the job's ``JobResult`` (``error`` set when it
    could not start)."""
    wire = await run_attempt(job, name, key, None)
    if wire.get("result", ...) is None:
        wire = {**wire, "error": {"message": "cancelled: the task was no longer wanted"}}
    if "error" in wire:
        return JobResult(name, "", job, error=wire["error"]["message"],
                         duration=wire["duration"], node=wire["node"])
    return result_from_wire(wire, job)


async def run_attempt(job: Job, name: str, key: str, topic: str | None) -> dict[str, Any]:
    """The task behind each attempt of ``corral batch --dask``: the result as plain data
    (``{"result": ...}``, or ``{"error": {"type", "message"}}`` keeping the error's kind for
    the batch's retry decision).  ``topic``: where to say it started and ended, so that the
    submitter knows which node runs it (to tell a lost worker from a slow job) and when a
    cancelled one is gone."""
    import distributed

    worker = distributed.get_worker()
    node = worker.address
    socket = _nodes.get(worker)
    started = time.monotonic()
    if socket is None:  # only a worker without the preload declares slots by hand
        return {"error": {"type": "NotSupportedError", "message": (
            f"the Dask worker {node} has no corral node: start it with --preload "
            "corral.dask.node")}, "duration": 0.0, "node": node}
    if topic is not None:
        worker.log_event(topic, {"event": "started", "key": key, "node": node})
    try:
        try:
            result = await _run_while_wanted(worker, socket, job, name, key)
        except (CorralError, OSError) as exc:
            message = (str(exc) or type(exc).__name__) if isinstance(exc, CorralError) \
                else f"{type(exc).__name__}: {exc}"
            kind = getattr(exc, "type", type(exc).__name__) if isinstance(exc, CorralError) \
                else "OSError"
            wire: dict[str, Any] = {"error": {"type": kind, "message": message}}
        else:
            wire = {"result": None if result is None else _capped(result.to_dict())}
        wire.update(duration=time.monotonic() - started, node=node)
        return wire
    finally:  # however it ends (cancelled too): the submitter waits for this at Ctrl-C
        if topic is not None:
            worker.log_event(topic, {"event": "ended", "key": key, "node": node})


async def _run_while_wanted(worker, socket: str, job: Job, name: str,
                            key: str) -> JobResult | None:
    """The job to its end, or None once the task is no longer wanted (its container
    deleted before this returns)."""
    outcome: list[JobResult] = []
    try:
        async with Client(socket, delete_on_close=True) as client:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while _wanted(worker, key):
                        await anyio.sleep(WATCH_EVERY)
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                outcome.append(await client.run_to_end(job, name=name))
                group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise only_error(group) from None
    return outcome[0] if outcome else None


def _wanted(worker, key: str) -> bool:
    task = worker.state.tasks.get(key)
    return task is not None and task.state in WANTED


def _capped(fields: dict) -> dict:
    for stream in ("stdout", "stderr"):
        text = fields[stream]
        if len(text) > OUTPUT_CAP:
            fields[stream] = (f"[corral: the first {len(text) - OUTPUT_CAP} characters cut]\n"
                              + text[-OUTPUT_CAP:])
    return fields


def result_from_wire(wire: dict, job: Job) -> JobResult:
    fields = dict(wire["result"])
    fields.pop("attempts", None)
    name, cid = fields.pop("name"), fields.pop("id")
    fields["node"] = wire["node"]
    return JobResult(name, cid, job, **fields)
