"""The measurements of `corral supervise` (issue 6): throughput through its API, its memory with
live containers, and a soak of jobs through `corral batch`.

One daemon per workspace (``corral supervise --root <ws>/supervisor``), started on first use
and stopped by ``stop(ws)`` from the suite's clean-up, after every container it holds has
been deleted through its API; its keeper (a child of the daemon, which outlives it by design)
is then ended by pid, since nothing is left for it to keep.

The client side is one trio program in the suite's process, one API connection per worker
(``concurrency`` workers, as a shell pool has ``concurrency`` slots): per container ``run``
(create + start, bundle ``ws.bundle(f"j{i}")``, no logs: the shell pools log nothing
either), ``wait``, ``delete``.

Memory is RSS, daemon plus keeper, from /proc/<pid>/status: the issue states its target in
RSS, and the sum of the two is an upper bound (pages the keeper shares with the daemon, e.g.
the interpreter's text, count twice).  PSS (smaps_rollup) is reported beside it: it splits
those shared pages, so it is what the two cost the machine together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.errors import BenchError
from bench.runtimes import CORRAL
from bench.throughput import Batch
from bench.workspace import Workspace

START_TIMEOUT = 30.0
SLEEPER_ARGS = ["/bin/sleep", "100000"]


@dataclass
class SoakResult:
    jobs: int
    seconds: float
    rss_kb: tuple[int, int]  # (start, end)
    fds: tuple[int, int]
    tasks: tuple[int, int]


@dataclass
class Memory:
    """The supervisor's memory with ``live`` containers alive, KiB."""

    live: int
    rss_kb: int  # daemon + keeper
    pss_kb: int  # daemon + keeper
    daemon_rss_kb: int
    keeper_rss_kb: int


class Daemon:
    """A `corral supervise` of the workspace: its process, its keeper's pid, its socket."""

    def __init__(self, ws: Workspace, name: str = "supervisor", extra: tuple = ()) -> None:
        self.root = os.path.join(ws.state, name)
        self.socket = os.path.join(self.root, "supervise.sock")
        self.log = os.path.join(ws.dir, f"{name}.log")
        with open(self.log, "w") as log:
            # Its own session: Ctrl-C reaches only the suite, which stops it in order.
            self.proc = subprocess.Popen(
                [CORRAL, "--root", self.root, "supervise", "--socket", self.socket,
                 "--max-concurrent-creates", "64", *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True)
        try:
            self._await_ready()
            self.keeper = self._find_keeper()
        except BaseException:
            self.stop()
            raise

    def _await_ready(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = self.proc.stdout.readline()
                if not line:
                    break
                if "ready" in line.lower():
                    return
        raise BenchError(f"corral supervise did not get ready: {self._log_tail()}")

    def _find_keeper(self) -> int:
        """The keeper is the daemon's child (posix_spawn'ed, its own session)."""
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                for pid in map(int, f.read().split()):
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if b"corral.supervisor.keeper" in c.read():
                            return pid
        raise BenchError("corral supervise: no keeper process found among its children")

    def _log_tail(self) -> str:
        try:
            with open(self.log) as f:
                return " ".join(f.read().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def call(self, fn, *args):
        """``fn(connection, *args)`` in a trio run with one connection.  SIGINT and SIGTERM
        cancel it cleanly (trio's signal receiver stands in for the session's handler while
        it runs) and then raise the session's ``Interrupted``."""
        import trio

        from bench.session import Interrupted
        from corral.api.client import Connection

        caught: list[str] = []

        async def watch_signals(scope: trio.CancelScope) -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    caught.append(signal.Signals(signum).name)
                    scope.cancel()
                    return

        async def main():
            result = []  # set outside the nurseries: leaving a cancelled one drops a return
            async with trio.open_nursery() as outer:
                outer.start_soon(watch_signals, outer.cancel_scope)
                conn = await Connection.open(self.socket)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(conn.run_reader)
                        result.append(await fn(conn, *args))
                        nursery.cancel_scope.cancel()
                finally:
                    outer.cancel_scope.cancel()
                    await conn.aclose()
            return result[0] if result else None

        try:
            result = trio.run(main)
        except BaseException as e:  # noqa: BLE001 - unwrapped into what the suite handles
            if caught:
                raise Interrupted(caught[0]) from None
            raise _unwrapped(e) from None
        if caught:
            raise Interrupted(caught[0])
        return result

    def stop(self) -> list[str]:
        """Deletes every container left in its root (named in the result), stops the
        daemon (SIGTERM) and then its keeper."""
        left: list[str] = []
        if self.proc.poll() is None:
            try:
                left = self.call(_delete_all)
            except Exception as e:  # noqa: BLE001 - clean-up goes on; the leftovers say it
                left = [f"(could not list: {e})"]
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        keeper = getattr(self, "keeper", None)
        if keeper:
            try:
                os.kill(keeper, signal.SIGTERM)
                os.waitpid(keeper, 0)  # reparented to the suite, a subreaper
            except (ProcessLookupError, ChildProcessError):
                pass
        return left


def _unwrapped(exc: BaseException) -> BaseException:
    """What the suite handles, out of trio's exception groups (a task's failure) or its
    internal error (Ctrl-C's ``Interrupted`` raised between two of its steps): the
    ``Interrupted``, else the ``BenchError``, else corral's error as a ``BenchError``."""
    from bench.session import Interrupted
    from corral.errors import CorralError

    found: list[BaseException] = []

    def walk(e: BaseException | None) -> None:
        while e is not None and e not in found:
            found.append(e)
            for inner in getattr(e, "exceptions", ()):
                walk(inner)
            e = e.__cause__ or e.__context__

    walk(exc)
    for kind in (Interrupted, BenchError):
        for e in found:
            if isinstance(e, kind):
                return e
    for e in found:
        if isinstance(e, CorralError):
            return BenchError(f"corral supervisor: {e}")
    return exc


async def _delete_all(conn) -> list[str]:
    left = []
    for state in await conn.call("list"):
        left.append(f"supervisor container {state['id']}")
        await conn.call("delete", id=state["id"], force=True)
    return left


_daemons: dict[str, Daemon] = {}


def daemon(ws: Workspace) -> Daemon:
    if ws.dir not in _daemons:
        _daemons[ws.dir] = Daemon(ws)
    return _daemons[ws.dir]


def stop(ws: Workspace) -> list[str]:
    """From the suite's clean-up: what was left in the daemon (deleted now)."""
    d = _daemons.pop(ws.dir, None)
    return d.stop() if d is not None else []


# ---- throughput ----

def throughput(ws: Workspace, n: int, concurrency: int) -> Batch:
    """N /bin/true containers (run, wait, delete) through the API, ``concurrency`` workers."""
    d = daemon(ws)
    bundles = [ws.bundle(f"j{i}") for i in range(n)]
    seconds, latencies = d.call(_pool, d.socket, bundles, concurrency)
    return Batch(n, concurrency, seconds, latencies)


async def _pool(conn, socket: str, bundles: list[str], concurrency: int) -> tuple[float, list[float]]:
    import trio

    from corral.api.client import Connection

    latencies: list[float] = []
    todo = iter(enumerate(bundles))
    conns = [conn] + [await Connection.open(socket) for _ in range(concurrency - 1)]

    async def worker(c) -> None:
        for i, bundle in todo:
            t0 = time.perf_counter()
            cid = f"s{i}"
            await c.call("run", id=cid, bundle=bundle, logs=False)
            result = await c.call("wait", id=cid)
            if result.get("exitStatus") != 0:
                raise BenchError(f"supervisor: container {cid} exited {result}")
            await c.call("delete", id=cid)
            latencies.append(time.perf_counter() - t0)

    try:
        async with trio.open_nursery() as nursery:
            for c in conns[1:]:
                nursery.start_soon(c.run_reader)
            t0 = time.perf_counter()
            async with trio.open_nursery() as workers:
                for c in conns:
                    workers.start_soon(worker, c)
            wall = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
    finally:
        for c in conns[1:]:
            await c.aclose()
    return wall, latencies


# ---- CPU per container ----


@dataclass
class CpuProfile:
    """CPU per container, ms, over one batch at one concurrency (utime + stime deltas)."""

    n: int
    concurrency: int
    rate: float
    children: float  # launcher, init and its program: reaped by the keeper
    daemon: float
    keeper: float  # the keeper and its spawner
    client: float  # the suite's trio client: three API calls per container
    kernel: float  # everything else the machine was busy with: kworkers, RCU, softirqs

    @property
    def total(self) -> float:
        return self.children + self.daemon + self.keeper + self.client + self.kernel


def _ticks(pid: int) -> tuple[int, int]:
    """(own utime + stime, reaped children's cutime + cstime), clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _busy_ticks() -> int:
    """Every CPU's busy time, from /proc/stat: all but idle and iowait."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _spawner_of(keeper: int) -> int | None:
    for task in os.listdir(f"/proc/{keeper}/task"):
        with open(f"/proc/{keeper}/task/{task}/children") as f:
            for pid in map(int, f.read().split()):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if b"spawner" in c.read():
                            return pid
                except OSError:
                    continue
    return None


def cpu_profile(ws: Workspace, n: int, concurrency: int) -> CpuProfile:
    """Where a container's CPU goes, over a batch of ``n`` through the daemon."""
    import resource

    d = daemon(ws)
    spawner = _spawner_of(d.keeper)
    tick = os.sysconf("SC_CLK_TCK")
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    d0, k0 = _ticks(d.proc.pid), _ticks(d.keeper)
    s0 = _ticks(spawner)[0] if spawner else 0
    busy0 = _busy_ticks()
    batch = throughput(ws, n, concurrency)
    busy1 = _busy_ticks()
    d1, k1 = _ticks(d.proc.pid), _ticks(d.keeper)
    s1 = _ticks(spawner)[0] if spawner else 0
    me1 = resource.getrusage(resource.RUSAGE_SELF)

    def ms(ticks: float) -> float:
        return ticks / tick / n * 1000

    client = (me1.ru_utime - me0.ru_utime + me1.ru_stime - me0.ru_stime) / n * 1000
    children = ms(k1[1] - k0[1])
    daemon_ms = ms(d1[0] - d0[0])
    keeper = ms(k1[0] - k0[0] + s1 - s0)
    total = ms(busy1 - busy0)
    return CpuProfile(n, concurrency, batch.rate, children, daemon_ms, keeper, client,
                      max(0.0, total - children - daemon_ms - keeper - client))


# ---- memory ----

def _sleeper_bundle(ws: Workspace, i: int) -> str:
    path = os.path.join(ws.bundles, f"sleep{i}")
    if not os.path.isdir(path):
        os.mkdir(path)
        with open(os.path.join(ws.bundle("j0"), "config.json")) as f:
            config = json.load(f)
        config["process"]["args"] = SLEEPER_ARGS
        config["linux"]["cgroupsPath"] = f"/{ws.parent}/sleep{i}"
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f)
    return path


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field}")


def _pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/smaps_rollup has no Pss")


def rss(ws: Workspace, live: int) -> Memory:
    """Daemon + keeper memory while ``live`` sleeping containers run (made, measured, then
    deleted through the API, 16 at a time)."""
    d = daemon(ws)
    bundles = [_sleeper_bundle(ws, i) for i in range(live)]
    ids = [f"live{i}" for i in range(live)]
    try:
        d.call(_each, "run", ids, bundles)
        time.sleep(0.5)  # let the daemon's loop settle after the burst
        pids = (d.proc.pid, d.keeper)
        return Memory(live=live,
                      rss_kb=sum(_status_kb(p, "VmRSS") for p in pids),
                      pss_kb=sum(_pss_kb(p) for p in pids),
                      daemon_rss_kb=_status_kb(d.proc.pid, "VmRSS"),
                      keeper_rss_kb=_status_kb(d.keeper, "VmRSS"))
    finally:
        d.call(_each, "delete", ids, None)


async def _each(conn, method: str, ids: list[str], bundles: list[str] | None,
                width: int = 16) -> None:
    import trio

    todo = iter(range(len(ids)))

    async def worker() -> None:
        for i in todo:
            if method == "run":
                await conn.call("run", id=ids[i], bundle=bundles[i], logs=False)
            else:
                await conn.call("delete", id=ids[i], force=True)

    async with trio.open_nursery() as nursery:
        for _ in range(width):
            nursery.start_soon(worker)


# ---- soak ----

def _sample(pid: int) -> tuple[int, int, int]:
    """(RSS KiB, open fds, tasks) of the daemon."""
    return (_status_kb(pid, "VmRSS"), len(os.listdir(f"/proc/{pid}/fd")),
            len(os.listdir(f"/proc/{pid}/task")))


def _batch(d: Daemon, ws: Workspace, name: str, jobs: int, parallel: int) -> float:
    """``jobs`` /bin/true jobs (each the bundle j<k>, round robin over those made) through
    `corral batch` against the daemon; its wall time."""
    bundles = sorted(b for b in os.listdir(ws.bundles) if b.startswith("j"))
    path = os.path.join(ws.dir, f"{name}.jsonl")
    with open(path, "w") as f:
        for k in range(jobs):
            f.write(json.dumps({"name": f"{name}-{k}",
                                "bundle": os.path.join(ws.bundles, bundles[k % len(bundles)])}) + "\n")
    t0 = time.perf_counter()
    proc = subprocess.run([CORRAL, "--root", d.root, "batch", "--socket", d.socket,
                           "--parallel", str(parallel), "-q", path],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BenchError(f"soak: corral batch exited {proc.returncode}: {' '.join(tail)}")
    return seconds


def soak(ws: Workspace, jobs: int, parallel: int = 8) -> SoakResult:
    """``jobs`` jobs through `corral batch` on the daemon, after a warm-up batch (the first
    jobs load the job code and fill the allocator's pools: growth that is not per job)."""
    d = daemon(ws)
    _batch(d, ws, "warmup", min(200, jobs), parallel)
    start = _sample(d.proc.pid)
    seconds = _batch(d, ws, "soak", jobs, parallel)
    end = _sample(d.proc.pid)
    return SoakResult(jobs=jobs, seconds=seconds, rss_kb=(start[0], end[0]),
                      fds=(start[1], end[1]), tasks=(start[2], end[2]))


if __name__ == "__main__":  # a quick look: python -m bench.supervisor N CONCURRENCY
    from bench.session import Session

    with Session() as s:
        from bench import throughput as tp

        tp.prepare(s.ws, int(sys.argv[1]))
        try:
            b = throughput(s.ws, int(sys.argv[1]), int(sys.argv[2]))
            print(f"supervisor: {b.rate:.1f}/s")
        finally:
            print(stop(s.ws))
