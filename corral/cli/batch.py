"""``corral batch FILE``: the jobs of a jobs file, N at a time, with retries, results on
disk, progress on the terminal and a summary at the end.

It runs on a ``Session``: ``corral.Client`` when a ``corral supervise`` listens (``--socket``,
or ``<root>/supervise.sock``), otherwise an embedded ``corral.Supervisor``, or with ``--dask``
a Dask cluster's nodes (``corral.dask.batch``); the same loop drives all three.  Its own
worker loop rather than ``Session.map``: a retry decision needs the kind of each failure,
which ``map`` flattens into text.

Which failures are retried: a non-zero exit status, a timeout, and creation errors the job
is not to blame for (a cgroup, the protocol, the connection to the daemon).  Not retried:
errors a second attempt would meet again -- ``ConfigError``, ``NotSupportedError`` and
``ChildError`` (the container's own setup refused the job: a command or a cwd that does not
exist).

SIGINT and SIGTERM stop the batch: no new job starts, the running ones are cancelled (each
container is deleted on the way out, shielded from the cancellation), the engine closes,
the results of finished jobs and the summary are written, and the exit status is 130 (143).
"""

from __future__ import annotations

import json
import os
import signal
import socket as _socket
import sys
import time
from typing import TYPE_CHECKING, Iterator

from corral.errors import (ChildError, ConfigError, CorralError, NotSupportedError,
                           only_error)
from corral.jobs.job import Job, parse_duration
from corral.jobs.jobsfile import load_jobs

if TYPE_CHECKING:
    from corral.api.session import JobResult, Session

EXIT_JOB_FAILED = 3
NOT_RETRIED = (ConfigError, NotSupportedError, ChildError)
SUMMARY = "summary.json"


class Options:
    """The batch's flags, checked before anything runs."""

    def __init__(self, args) -> None:
        parallel = (os.cpu_count() or 1) if args.parallel is None else args.parallel
        if parallel < 1:
            raise ConfigError("--parallel", f"{parallel} must be at least 1")
        if args.retries < 0:
            raise ConfigError("--retries", f"{args.retries} must be 0 or more")
        self.file: str = args.file
        self.parallel: int = parallel
        self.parallel_given = args.parallel is not None
        self.timeout = None if args.timeout is None else parse_duration(args.timeout,
                                                                        "--timeout")
        self.retries: int = args.retries
        self.results: str | None = None if args.results is None else os.path.abspath(
            args.results)
        self.socket: str | None = args.socket
        self.cgroup_parent: str | None = args.cgroup_parent
        self.quiet: bool = args.quiet
        self.root: str = os.path.abspath(args.root)
        if args.socket is not None and args.cgroup_parent is not None:
            raise ConfigError("--cgroup-parent", "is for the embedded engine: the daemon of "
                                                 "--socket places jobs under its own")
        self.dask: str | None = args.dask
        if args.dask is not None:
            if args.socket is not None:
                raise ConfigError("--dask", "give --dask or --socket, not both")
            if args.cgroup_parent is not None:
                raise ConfigError("--cgroup-parent", "is for the embedded engine: the "
                                                     "nodes' daemons place jobs under their own")
            if not args.dask.strip():
                raise ConfigError("--dask", "an empty address (give tcp://HOST:PORT)")


class Planned:
    """One job of the batch as it will run: its default timeout applied, its tries."""

    __slots__ = ("index", "name", "job", "tries")

    def __init__(self, index: int, name: str, job: Job, tries: int) -> None:
        self.index, self.name, self.job, self.tries = index, name, job, tries


def plan(jobs: list[tuple[str, Job]], options: Options) -> list[Planned]:
    """A job's own ``timeout``/``limits.time`` wins over ``--timeout``; its own
    ``retries`` (0 or more) over ``--retries``."""
    planned = []
    for index, (name, job) in enumerate(jobs):
        if options.timeout is not None and job.limits.time is None:
            job = job.replace(limits={**job.limits.to_dict(), "time": options.timeout})
        retries = options.retries if job.retries is None else job.retries
        planned.append(Planned(index, name, job, 1 + retries))
    return planned


# ---- one job ------------------------------------------------------------------------------


class Finished:
    """A job's last attempt and a line for each earlier one."""

    __slots__ = ("planned", "result", "earlier")

    def __init__(self, planned: Planned, result: JobResult, earlier: list[dict]) -> None:
        self.planned, self.result, self.earlier = planned, result, earlier

    @property
    def reason(self) -> str | None:
        """None when it succeeded; else "error", "timed_out" or "exit_status"."""
        r = self.result
        if r.error is not None:
            return "error"
        if r.timed_out:
            return "timed_out"
        return None if r.exit_status == 0 else "exit_status"

    def record(self) -> dict:
        r = self.result
        return {"name": r.name, "status": "failed" if self.reason else "succeeded",
                "reason": self.reason, "exit_status": r.exit_status, "timed_out": r.timed_out,
                "error": r.error, "attempts": r.attempts, "duration": round(r.duration, 6),
                "peak_memory": r.peak_memory, "node": r.node}


async def run_one(session: Session, planned: Planned, view) -> Finished:
    """The job's attempts until one succeeds, one fails in a way not worth retrying, or
    its tries are spent."""
    earlier: list[dict] = []
    for attempt in range(1, planned.tries + 1):
        result, retryable = await _attempt(session, planned)
        result.attempts = attempt
        if result.ok or not retryable or attempt == planned.tries:
            return Finished(planned, result, earlier)
        earlier.append({"exit_status": result.exit_status, "timed_out": result.timed_out,
                        "error": result.error, "duration": round(result.duration, 6),
                        "node": result.node})
        view.retrying(result, planned)
    raise AssertionError("unreachable: the last attempt returns")


async def _attempt(session: Session, planned: Planned) -> tuple[JobResult, bool]:
    """(JobResult, whether a failure is worth another attempt)."""
    from corral.api.session import JobResult

    started = time.monotonic()
    try:
        return await session.run_to_end(planned.job, name=planned.name), True
    except (CorralError, OSError) as exc:
        error = (str(exc) or type(exc).__name__) if isinstance(exc, CorralError) \
            else f"{type(exc).__name__}: {exc}"
        return (JobResult(planned.name, "", planned.job, error=error,
                          duration=time.monotonic() - started),
                not isinstance(exc, NOT_RETRIED))


# ---- the batch ----------------------------------------------------------------------------


class Tally:
    """What the progress view and the summary count."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()
        self.running: dict[int, Planned] = {}
        self.finished: dict[int, Finished] = {}
        self.failed = 0
        self.stopped: list[Planned] = []  # cancelled while running
        self.interrupted: str | None = None  # the signal's name

    @property
    def done(self) -> int:
        return len(self.finished)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first job ends)."""
        if not self.done:
            return None
        return self.elapsed() / self.done * (self.total - self.done)


async def run_batch(options: Options, planned: list[Planned], engine: tuple[str, str | None],
                    view, results: ResultsDir | None) -> Tally:
    import trio

    tally = Tally(len(planned))
    queue: Iterator[Planned] = iter(planned)

    async def worker() -> None:
        for item in queue:
            tally.running[item.index] = item
            try:
                finished = await run_one(session, item, view)
            except trio.Cancelled:
                tally.stopped.append(item)
                raise
            finally:
                del tally.running[item.index]
            tally.finished[item.index] = finished
            tally.failed += finished.reason is not None
            if results is not None:
                results.write_job(finished)
            view.finished(finished, tally)

    async def on_signal(signals, workers: trio.CancelScope) -> None:
        # The first signal stops the workers; later ones (an impatient second Ctrl-C)
        # must not cut the clean-up short, so this keeps consuming them until the end.
        async for signum in signals:
            if tally.interrupted is None:
                tally.interrupted = signal.Signals(signum).name
                view.interrupted(tally)
                workers.cancel()

    workers_scope = trio.CancelScope()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as helpers:
            helpers.start_soon(on_signal, signals, workers_scope)
            async with _open_session(options, engine) as session:
                if engine[0] == "dask" and not options.parallel_given:
                    options.parallel = session.slots  # as many at once as it has slots
                view.start(tally)
                async with trio.open_nursery() as ticking:
                    ticking.start_soon(view.ticker, tally)
                    with workers_scope:
                        async with trio.open_nursery() as workers:
                            for _ in range(min(options.parallel, len(planned))):
                                workers.start_soon(worker)
                    ticking.cancel_scope.cancel()
                view.close(tally)
            helpers.cancel_scope.cancel()
    return tally


def _open_session(options: Options, engine: tuple[str, str | None]):
    kind, socket = engine
    if kind == "dask":
        from corral.dask.batch import DaskCluster

        return DaskCluster(socket)
    if kind == "daemon":
        from corral.api.client import Client

        return Client(socket)
    from corral.api.embedded import Supervisor

    return Supervisor(options.root, cgroup_parent=options.cgroup_parent or "corral")


def choose_engine(options: Options) -> tuple[str, str | None]:
    """("dask", address) with ``--dask``; ("daemon", socket) when ``--socket`` is given or
    a daemon listens on the root's socket; ("embedded", None) otherwise."""
    if options.dask is not None:
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            raise CorralError("--dask needs Dask's distributed: pip install 'corral[dask]'")
        return "dask", options.dask
    if options.socket is not None:
        return "daemon", os.path.abspath(options.socket)
    path = os.path.join(options.root, "supervise.sock")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return "embedded", None  # no daemon, or a stale socket of a dead one
    except OSError as exc:
        raise CorralError(f"cannot reach corral supervise at {path}: {exc.strerror}") from None
    finally:
        probe.close()
    return "daemon", path


# ---- results on disk ----------------------------------------------------------------------


class ResultsDir:
    """DIR/<name>/stdout, stderr and result.json per finished job; DIR/summary.json."""

    def __init__(self, path: str, planned: list[Planned]) -> None:
        if any(p.name == SUMMARY for p in planned):
            raise ConfigError("--results", f"a job named {SUMMARY} would clash with "
                                           f"{os.path.join(path, SUMMARY)}")
        if os.path.lexists(path):
            if not os.path.isdir(path):
                raise ConfigError("--results", f"{path} is not a directory")
            if os.listdir(path):
                raise ConfigError("--results", f"{path} is not empty (results of an "
                                               "earlier batch?)")
        os.makedirs(path, exist_ok=True)
        self.path = path

    def write_job(self, finished: Finished) -> None:
        r = finished.result
        directory = os.path.join(self.path, r.name)
        os.mkdir(directory)
        for stream in ("stdout", "stderr"):
            with open(os.path.join(directory, stream), "w", encoding="utf-8") as f:
                f.write(getattr(r, stream))
        record = {**finished.record(), "id": r.id, "started_at": r.started_at,
                  "exited_at": r.exited_at, "earlier_attempts": finished.earlier,
                  "job": finished.planned.job.to_dict()}
        _write_json(os.path.join(directory, "result.json"), record)

    def write_summary(self, summary: dict) -> None:
        _write_json(os.path.join(self.path, SUMMARY), summary)


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def summarize(options: Options, planned: list[Planned], tally: Tally,
              engine: tuple[str, str | None]) -> dict:
    """summary.json: the counts, then every job in file order."""
    stopped = {p.index for p in tally.stopped}
    jobs = []
    for p in planned:
        if p.index in tally.finished:
            jobs.append(tally.finished[p.index].record())
        else:
            jobs.append({"name": p.name, "status": "stopped" if p.index in stopped
                         else "not_run"})
    reasons = [f.reason for f in tally.finished.values()]
    where = {"scheduler": engine[1]} if engine[0] == "dask" else {"socket": engine[1]}
    return {
        "file": os.path.abspath(options.file),
        "engine": engine[0], **where, "parallel": options.parallel,
        "duration": round(tally.elapsed(), 3), "interrupted": tally.interrupted,
        "counts": {
            "total": tally.total, "succeeded": reasons.count(None),
            "failed": tally.failed, "exit_status": reasons.count("exit_status"),
            "timed_out": reasons.count("timed_out"), "error": reasons.count("error"),
            "retried": sum(f.result.attempts > 1 for f in tally.finished.values()),
            "stopped": len(stopped), "not_run": tally.total - tally.done - len(stopped)},
        "jobs": jobs,
    }


# ---- entry point --------------------------------------------------------------------------


def main(args, log) -> int:
    """``corral batch``: 0 when every job succeeded, 3 when one failed (after its
    retries), 130/143 when interrupted; bad input raises (exit 1)."""
    import trio

    from corral.cli.batch_view import make_view, summary_text

    options = Options(args)
    planned = plan(load_jobs(options.file), options)
    results = ResultsDir(options.results, planned) if options.results else None
    engine = choose_engine(options)
    if engine[0] == "daemon" and options.cgroup_parent is not None:
        log.warn(f"--cgroup-parent applies to the embedded engine only: the daemon at "
                 f"{engine[1]} places jobs under its own --cgroup-parent")
    from corral.procfs import raise_fd_limit

    raise_fd_limit()
    view = make_view(sys.stderr, options.quiet)
    try:
        tally = trio.run(run_batch, options, planned, engine, view, results)
    except BaseExceptionGroup as group:
        raise only_error(group) from None
    summary = summarize(options, planned, tally, engine)
    if results is not None:
        results.write_summary(summary)
    if not options.quiet:
        sys.stdout.write(summary_text(summary, options.results))
        sys.stdout.flush()
    if tally.interrupted:
        return 128 + signal.Signals[tally.interrupted].value
    return EXIT_JOB_FAILED if tally.failed else 0

