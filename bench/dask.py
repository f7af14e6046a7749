"""What a Dask cluster adds per job (issue 16): N host-root ``/bin/true`` jobs, P at a time,
two ways, interleaved per round in one run:

- ``corral batch --parallel P``: the local batch (its embedded engine);
- ``corral batch --dask ADDRESS --parallel P``: a Dask scheduler and two ``dask worker``
  processes on this machine, each the node of its own ``corral supervise`` (own state root,
  cgroup parent ``corral-bench-<pid>/node-X``) with P/2 slots.

Both on this one machine: the cluster's cost here is its scheduling, its messages and the
daemons' API, never a network.  ``python -m bench.dask [N] [--parallel P] [--rounds R]``;
prints each contender's wall time, jobs/s and CPU per job, the overhead per job,
(dask - local) / N, and what that is in each slot, times P.  Not part of ``bench/run`` (it needs ``corral[dask]``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench.errors import BenchError
from bench.runtimes import CORRAL
from bench.supervisor import Daemon, _spawner_of, _ticks
from bench.workspace import Workspace

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
START_TIMEOUT = 60.0


class Cluster:
    """The scheduler, two nodes (daemon + worker); ``close`` ends all of it."""

    def __init__(self, ws: Workspace, slots_per_node: int) -> None:
        self.ws = ws
        self.daemons: list[Daemon] = []
        self.procs: list[subprocess.Popen] = []
        base = os.path.join(ws.dir, "dask")
        os.makedirs(base)
        try:
            scheduler_file = os.path.join(base, "scheduler.json")
            self._spawn(base, "scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                            "--no-dashboard", "--scheduler-file", scheduler_file])
            self._wait(lambda: os.path.exists(scheduler_file), "the scheduler's file")
            for name in ("node-a", "node-b"):
                daemon = Daemon(ws, name, ("--cgroup-parent", f"{ws.parent}/{name}"))
                self.daemons.append(daemon)
                self._spawn(base, name, [
                    DASK, "worker", "--scheduler-file", scheduler_file, "--name", name,
                    "--nthreads", str(slots_per_node), "--no-nanny", "--no-dashboard",
                    "--local-directory", os.path.join(base, name), "--preload", "corral.dask.node"],
                    CORRAL_SOCKET=daemon.socket)
            with open(scheduler_file) as f:
                self.address = json.load(f)["address"]
            import distributed

            with distributed.Client(self.address, timeout=START_TIMEOUT) as client:
                def slots() -> float:
                    workers = client.scheduler_info(n_workers=-1)["workers"]
                    return sum(w["resources"].get("corral-slots", 0) for w in workers.values())

                self._wait(lambda: slots() == 2 * slots_per_node, "both workers' corral slots")
        except BaseException:
            self.close()  # what started so far (close copes with a part)
            raise

    def _spawn(self, base: str, name: str, argv: list[str], **env: str) -> None:
        with open(os.path.join(base, f"{name}.log"), "wb") as log:
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=log, cwd=base,
                                               env={**os.environ, **env},
                                               start_new_session=True))

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise BenchError(f"bench.dask: no {what} (logs in {self.ws.dir}/dask)")
            time.sleep(0.1)

    def cpu_ticks(self) -> int:
        """CPU so far of the scheduler, the workers, the daemons, their keepers and
        spawners, and what those reaped (the keepers reap the jobs' processes)."""
        pids = [p.pid for p in self.procs] + [d.proc.pid for d in self.daemons]
        for d in self.daemons:
            pids += [d.keeper] + [s for s in [_spawner_of(d.keeper)] if s]
        return sum(sum(_ticks(pid)) for pid in pids)

    def close(self) -> list[str]:
        for proc in reversed(self.procs):  # workers first, the scheduler last
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [left for daemon in self.daemons for left in daemon.stop()]


def batch(ws: Workspace, jobs: str, parallel: int, round_: int,
          cluster: Cluster | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: the batch process and what it reaped, plus the
    cluster's processes when it runs there)."""
    root = os.path.join(ws.state, f"batch-{round_}-{'dask' if cluster else 'local'}")
    where = ["--dask", cluster.address] if cluster else ["--cgroup-parent", f"{ws.parent}/local"]
    cluster_before = cluster.cpu_ticks() if cluster else 0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run([CORRAL, "--root", root, "batch", "-q", "--parallel", str(parallel),
                           *where, jobs], capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    if cluster:
        cpu += (cluster.cpu_ticks() - cluster_before) / os.sysconf("SC_CLK_TCK")
    if proc.returncode != 0:
        raise BenchError(f"corral batch {' '.join(where)} exited {proc.returncode}: "
                         f"{proc.stderr.strip()}")
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("jobs", type=int, nargs="?", default=1000)
    parser.add_argument("--parallel", type=int, default=4, help="jobs at once (even)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if args.parallel < 2 or args.parallel % 2:
        parser.error("--parallel: an even number, 2 or more (half on each node)")
    ws = Workspace()
    cluster = None
    left: list[str] = []
    try:
        jobs = os.path.join(ws.dir, "jobs.jsonl")
        with open(jobs, "w") as f:
            f.write("".join(json.dumps({"name": f"b{i}", "args": ["/bin/true"]}) + "\n"
                            for i in range(args.jobs)))
        cluster = Cluster(ws, args.parallel // 2)
        runs: dict[str, list[tuple[float, float]]] = {"local": [], "dask": []}
        for r in range(args.rounds):
            order = ["local", "dask"] if r % 2 == 0 else ["dask", "local"]
            for name in order:
                runs[name].append(batch(ws, jobs, args.parallel, r,
                                        cluster if name == "dask" else None))
    finally:
        if cluster is not None:
            left = cluster.close()
        ws.remove_cgroups()
        ws.close()
    local, dask = (statistics.median(w for w, _ in runs[k]) for k in ("local", "dask"))
    cpu = {k: statistics.median(c for _, c in runs[k]) * 1000 / args.jobs for k in runs}
    n = args.jobs
    print(f"{n} /bin/true jobs, {args.parallel} at a time, {args.rounds} round(s), "
          f"medians")
    print(f"  corral batch (local, embedded engine): {local:7.2f} s  {n / local:7.1f} jobs/s  "
          f"CPU {cpu['local']:.1f} ms/job")
    print(f"  corral batch --dask (2 workers x {args.parallel // 2} slots): {dask:7.2f} s  "
          f"{n / dask:7.1f} jobs/s  CPU {cpu['dask']:.1f} ms/job (submitter, scheduler, "
          f"workers, daemons, keepers, jobs)")
    print(f"  overhead per job: {(dask - local) / n * 1000:+.2f} ms of the batch's wall time "
          f"({dask / local:.2f}x the local batch); each job holds its slot "
          f"{(dask - local) / n * args.parallel * 1000:+.1f} ms longer")
    if left:
        print(f"left behind (deleted): {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
