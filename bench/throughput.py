"""Throughput: N containers (create, start, wait, delete) at a given concurrency, from a shell
pool (``xargs -P``, one bench/job.sh per container) for each runtime's command line and for
the kernel's floor (bench/floor.c); the contenders interleaved per level and round."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from bench.errors import BenchError, NotMeasured
from bench.runtimes import Helper, Runtime
from bench.workspace import HERE, Workspace

JOB = os.path.join(HERE, "job.sh")


@dataclass
class Batch:
    """One batch: ``n`` containers, at most ``concurrency`` at once."""

    n: int
    concurrency: int
    seconds: float  # wall time of the whole batch
    latencies: list[float]  # each container's create-to-deleted time

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def prepare(ws: Workspace, n: int) -> None:
    """Bundles j0..j(n-1) (reused by every contender, each deletes its containers)."""
    os.makedirs(os.path.join(ws.dir, "pids"), exist_ok=True)
    never = os.path.join(ws.dir, "never")
    if not os.path.exists(never):
        os.mkfifo(never)
    for i in range(n):
        ws.bundle(f"j{i}")


def pool(helper: Helper, ws: Workspace, job_args: list[str], n: int, concurrency: int,
         label: str) -> Batch:
    ids = os.path.join(ws.dir, "ids")
    with open(ids, "w") as f:
        f.write("".join(f"{i}\n" for i in range(n)))
    out = os.path.join(ws.dir, "pool.out")
    argv = ["/usr/bin/xargs", "-a", ids, "-P", str(concurrency), "-n", "1",
            "/bin/bash", JOB, *job_args]
    answer = helper.ask(op="pool", argv=argv, stdout=out)
    if answer["code"] != 0:
        raise BenchError(f"{label} at concurrency {concurrency}: a job failed "
                         f"(xargs exited {answer['code']}): {answer['stderr']}")
    with open(out) as f:
        lines = [line.split() for line in f]
    if len(lines) != n:
        raise BenchError(f"{label} at concurrency {concurrency}: {len(lines)} of {n} jobs "
                         f"reported: {answer['stderr']}")
    latencies = [float(end) - float(start) for _id, start, end in lines]
    return Batch(n, concurrency, answer["wall"], latencies)


def runtime_contender(rt: Runtime, ws: Workspace) -> Callable[[int, int], Batch]:
    def run(n: int, concurrency: int) -> Batch:
        return pool(rt.helper, ws, ["container", ws.dir, *rt.argv], n, concurrency, rt.name)
    return run


def floor_contender(helper: Helper, floor: str, ws: Workspace) -> Callable[[int, int], Batch]:
    program = os.path.join(ws.rootfs, "bin", "true")  # the containers' own busybox true
    args = ["floor", ws.dir, floor, ",".join(ws.namespaces), program, *ws.cgroup_parents()]

    def run(n: int, concurrency: int) -> Batch:
        return pool(helper, ws, args, n, concurrency, "floor")
    return run


# results[contender][concurrency] = [Batch per round]
Results = dict[str, dict[int, list[Batch]]]


def measure(contenders: dict[str, Callable[[int, int], Batch]], levels: list[int],
            size: Callable[[int], int], rounds: int) -> tuple[Results, dict[str, str]]:
    """Every contender at every level, rotating order; a contender raising NotMeasured is
    dropped (returned with its message) and the others go on."""
    results: Results = {name: {c: [] for c in levels} for name in contenders}
    absent: dict[str, str] = {}
    names = list(contenders)
    for r in range(rounds):
        for c in levels:
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if name in absent:
                    continue
                try:
                    results[name][c].append(contenders[name](size(c), c))
                except NotMeasured as e:
                    absent[name] = str(e)
    for name in absent:
        del results[name]
    return results, absent
