"""corral from an asyncio program: ``corral.Client`` talking to a ``corral supervise`` daemon.

The example starts its own daemon on a private state directory (so it runs anywhere,
next to any other corral), uses it, and stops it at the end; a real program would connect
to the host's daemon with ``corral.Client()`` (``/run/corral/supervise.sock``).

It runs jobs concurrently with ``asyncio.gather``, one job past its time limit, a job
whose command does not exist (a ``ChildError`` to catch), and a ``map`` of several jobs;
leaving ``async with corral.Client(...)`` deletes every container it started.

Run as root: ``.venv/bin/python examples/asyncio_jobs.py``.  Environment:
  CORRAL_CGROUP_PARENT  cgroup parent of the daemon's jobs (default: corral)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time

import corral
from corral.errors import ChildError

CGROUP_PARENT = os.environ.get("CORRAL_CGROUP_PARENT", "corral")
CORRAL = os.path.join(os.path.dirname(sys.executable), "corral")


async def start_daemon(root: str, log: str) -> tuple[asyncio.subprocess.Process, str]:
    """``corral supervise`` on ``root``; returns once it says it is ready."""
    proc = await asyncio.create_subprocess_exec(
        CORRAL, "--root", root, "--log", log, "supervise", "--cgroup-parent", CGROUP_PARENT,
        stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if b"ready on" not in line:
        raise SystemExit(f"corral supervise did not start: {line!r}")
    return proc, os.path.join(root, "supervise.sock")


async def stop_daemon(proc: asyncio.subprocess.Process, log: str) -> None:
    """SIGTERM.  Its keeper (the containers' parent, which outlives a daemon) ends by
    itself once no daemon and no container is left: wait for that too."""
    with open(log) as f:
        keeper = int(f.read().split("keeper pid ")[1].split(";")[0])
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{keeper}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # exited; its new parent reaps it
        except FileNotFoundError:
            return
        await asyncio.sleep(0.05)


async def use(client: corral.Client) -> None:
    async def run(name: str, job: corral.Job) -> corral.JobResult:
        container = await client.run(job, name=name)
        try:
            return await container.result()
        finally:
            await container.delete()

    results = await asyncio.gather(
        run("python", corral.Job(["python3", "-c", "import sys; print(sys.version.split()[0])"])),
        run("limited", corral.Job(["sh", "-c", "echo $((6 * 7))"],
                                  limits={"pids": 32, "memory": "64M", "cpus": 0.5})),
        run("too-slow", corral.Job(["sleep", "10"], limits={"time": "0.2s"})),
    )
    for r in results:
        what = "timed out" if r.timed_out else f"exit {r.exit_status}"
        print(f"{r.name}: {what} in {r.duration:.2f} s: {r.stdout.strip()!r}")

    try:
        await client.run(corral.Job(["no-such-command"]))
    except ChildError as err:
        print(f"no-such-command: refused: {err}")

    squares = {}
    async for r in client.map([(f"square-{n}", corral.Job(["sh", "-c", f"echo $(({n} * {n}))"]))
                               for n in range(1, 9)], limit=4):
        squares[r.name] = int(r.stdout)
    print("map:", ", ".join(f"{k}={v}" for k, v in sorted(squares.items())))


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="corral-asyncio-") as tmp:
        root, log = os.path.join(tmp, "state"), os.path.join(tmp, "daemon.log")
        proc, socket = await start_daemon(root, log)
        try:
            async with corral.Client(socket) as client:
                await use(client)
        finally:
            await stop_daemon(proc, log)


if __name__ == "__main__":
    asyncio.run(main())
