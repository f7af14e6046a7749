"""corral's engine inside a trio program (``corral.Supervisor``): no daemon, no image.

Runs a job and collects its result, execs into a running job and reads its stats, follows
a job's logs as they come, and maps over a handful of jobs, two at a time.  Leaving the
``async with`` deletes every container the program started, whatever happened.

Run as root: ``.venv/bin/python examples/trio_jobs.py``.  Environment:
  CORRAL_ROOT           state directory (default: the command line's, /run/corral, so
                        ``corral list`` shows the jobs while they run)
  CORRAL_CGROUP_PARENT  cgroup parent of the jobs (default: corral)
"""

from __future__ import annotations

import os

import trio

import corral

ROOT = os.environ.get("CORRAL_ROOT")  # None: the command line's default
CGROUP_PARENT = os.environ.get("CORRAL_CGROUP_PARENT", "corral")


async def main() -> None:
    async with corral.Supervisor(ROOT, cgroup_parent=CGROUP_PARENT) as sup:
        # One job to its end: output, exit status, timings, peak memory.
        job = corral.Job(["sh", "-c", "echo hello from $(hostname); exit 3"],
                         limits={"memory": "64M"})
        result = await (await sup.run(job, name="hello")).result()
        print(f"hello: exit {result.exit_status}, said {result.stdout.strip()!r}, "
              f"{result.duration:.2f} s, peak memory {result.peak_memory} bytes")

        # A running job: exec into it, read its cgroup stats, then stop it.
        server = await sup.run(corral.Job(["sleep", "30"], limits={"pids": 16}), name="server")
        found = await server.exec(["sh", "-c", "echo I am pid $$, pid 1 is "
                                               "$(tr '\\0' ' ' < /proc/1/cmdline)"])
        print(f"exec: exit {found.exit_status}: {found.stdout.strip()}")
        stats = await server.stats()
        print(f"stats: {stats['pids']['current']} processes, pids limit "
              f"{stats['pids']['limit']}")
        print(f"stop: exit {await server.stop(grace=0.5)} (SIGTERM, then SIGKILL)")
        await server.delete()

        # A job's logs, followed line by line while it runs.
        ticker = await sup.run(corral.Job(
            ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.1; done; echo done >&2"]))
        async for stream, text in ticker.logs(follow=True):
            for line in text.splitlines():
                print(f"logs: {stream}: {line}")
        await ticker.delete()

        # Many jobs, two at a time, results as they finish.
        jobs = [(f"cube-{n}", corral.Job(["python3", "-c", f"print({n} ** 3)"]))
                for n in range(1, 7)]
        cubes = {}
        async for result in sup.map(jobs, limit=2):
            cubes[result.name] = int(result.stdout)
        print("map:", ", ".join(f"{name}={value}" for name, value in sorted(cubes.items())))


if __name__ == "__main__":
    trio.run(main)
