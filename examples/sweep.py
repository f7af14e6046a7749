"""A parameter sweep with ``corral.Supervisor.map``: the same CPU-bound job under several
CPU limits and sizes, the results collected in Python and printed as a table.

Each job counts the primes below N (pure Python, one CPU at most) under a CPU limit of
0.25, 0.5 or 1 CPU; its wall time should grow as the limit shrinks (the CFS quota
throttles it), while its answer stays the same.

Run as root: ``.venv/bin/python examples/sweep.py``.  Environment:
  CORRAL_ROOT           state directory (default: the command line's, /run/corral)
  CORRAL_CGROUP_PARENT  cgroup parent of the jobs (default: corral)
"""

from __future__ import annotations

import os

import trio

import corral

ROOT = os.environ.get("CORRAL_ROOT")
CGROUP_PARENT = os.environ.get("CORRAL_CGROUP_PARENT", "corral")
CPU_LIMITS = (0.25, 0.5, 1.0)
SIZES = (120_000, 240_000)

PROGRAM = """
import sys, time
n = int(sys.argv[1])
started = time.process_time()
count = sum(all(k % d for d in range(2, int(k ** 0.5) + 1)) for k in range(2, n))
print(count, round(time.process_time() - started, 3))
"""


async def main() -> None:
    grid = [(cpus, size) for size in SIZES for cpus in CPU_LIMITS]
    jobs = [(f"cpus={cpus}-n={size}",
             corral.Job(["python3", "-c", PROGRAM, str(size)],
                        limits={"cpus": cpus, "memory": "128M", "time": "60s"}))
            for cpus, size in grid]
    rows = {}
    async with corral.Supervisor(ROOT, cgroup_parent=CGROUP_PARENT) as sup:
        async for result in sup.map(jobs, limit=2):
            if not result.ok:
                raise SystemExit(f"{result.name} failed: {result.error or result.stderr}")
            primes, cpu_seconds = result.stdout.split()
            rows[result.name] = (int(primes), float(cpu_seconds), result.duration)

    print(f"{'cpus':>5} {'n':>7} {'primes':>7} {'cpu s':>7} {'wall s':>7} {'cpu/wall':>8}")
    for cpus, size in grid:
        primes, cpu_seconds, wall = rows[f"cpus={cpus}-n={size}"]
        print(f"{cpus:>5} {size:>7} {primes:>7} {cpu_seconds:>7.2f} {wall:>7.2f} "
              f"{cpu_seconds / wall:>8.2f}")


if __name__ == "__main__":
    trio.run(main)
