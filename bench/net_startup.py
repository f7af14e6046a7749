"""What a bridge network costs a job's start-up through the engine, side by side with `none`.

Issue 8's budget: a bridge container may start at most 3 ms later than a `none` one (median).
Both kinds run in one engine (``corral.supervisor.engine``, embedded, as ``corral.Supervisor``
has it), one container at a time, taking turns (bridge, none, none, bridge, ...) so that the
machine's drift hits both alike; start-up is ``Engine.run_job`` (bundle, create, start) to its
return: the process is running.  Waiting and deleting are not counted.  The first rounds of
each kind (imports, the bridge's creation, caches) are not counted either.

The process runs in a network namespace of its own (``unshare(CLONE_NEWNET)`` before any
thread exists; the engine's keeper and network thread inherit it), so the bridge and its
veths are made there and the machine's own network is never touched.  State and rootfs live
in a temporary directory under /run (tmpfs, as the supervisor's state root), cgroups under
``corral-bench-net-<pid>``; all of it is removed at the end.

    python bench/net_startup.py [--rounds N] [--ports]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.workspace import remove_cgroup_tree  # noqa: E402
from corral.net import netns as ns  # noqa: E402

WARM_UP = 5
BUDGET_MS = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="containers of each kind")
    parser.add_argument("--ports", action="store_true",
                        help="the bridge jobs also publish a port each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("net_startup: needs root (namespaces, cgroups, a bridge)", file=sys.stderr)
        return 1
    ns.unshare(ns.CLONE_NEWNET)  # this thread, before any other exists: all inherit it

    import trio

    parent = f"corral-bench-net-{os.getpid()}"
    base = "/run" if os.access("/run", os.W_OK) else None
    work = tempfile.mkdtemp(prefix="corral-bench-net-", dir=base)
    try:
        times = trio.run(measure, work, parent, args.rounds, args.ports)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_cgroup_tree(parent)
    report(times, args.ports)
    return 0


async def measure(work: str, parent: str, rounds: int, ports: bool) -> dict[str, list[float]]:
    from corral.images import build_rootfs
    from corral.jobs.job import Job
    from corral.supervisor.engine import open_engine

    rootfs = build_rootfs(os.path.join(work, "rootfs"))
    jobs = {"none": Job(["true"], root=rootfs, network="none")}
    times: dict[str, list[float]] = {"none": [], "bridge": []}
    previous = ""
    async with open_engine(os.path.join(work, "state"), cgroup_parent=parent,
                           networks={"corral0": {"subnet": "10.91.0.0/16"}}) as engine:
        for i in range(rounds + WARM_UP):
            # each kind goes first in every other pair of rounds
            order = ("bridge", "none") if i % 2 == 0 else ("none", "bridge")
            for kind in order:
                cid = f"{kind}{i}"
                job = jobs["none"] if kind == "none" else Job(
                    ["true"], root=rootfs, network="bridge",
                    ports=[f"{20000 + i}:80/tcp"] if ports else ())
                start = time.perf_counter()
                await engine.run_job(cid, job, logs=False)
                elapsed = time.perf_counter() - start
                if i >= WARM_UP:
                    times[kind].append(elapsed * 1000)
                    times.setdefault(f"{kind} after {previous}", []).append(elapsed * 1000)
                previous = kind
                await engine.wait(cid)
                await engine.delete(cid)
    return times


def report(times: dict[str, list[float]], ports: bool) -> None:
    medians: dict[str, float] = {}
    for kind in ("none", "bridge"):
        ms = sorted(times[kind])
        medians[kind] = statistics.median(ms)
        label = "bridge + 1 port" if kind == "bridge" and ports else kind
        print(f"{label:>15}: median {medians[kind]:6.2f} ms, p90 {ms[int(len(ms) * 0.9)]:6.2f} "
              f"ms, min {ms[0]:6.2f} ms ({len(ms)} containers)")
    for before in ("none", "bridge"):
        # The previous job's deletion sets the kernel's state for the next cgroup join
        # (docs/networks.md, "Start-up cost"): the same difference, by predecessor.
        after = {kind: statistics.median(times[f"{kind} after {before}"])
                 for kind in ("none", "bridge")}
        print(f"{'after ' + before:>15}: none {after['none']:6.2f} ms, bridge "
              f"{after['bridge']:6.2f} ms: {after['bridge'] - after['none']:+6.2f} ms")
    extra = medians["bridge"] - medians["none"]
    verdict = "within" if extra <= BUDGET_MS else "OVER"
    print(f"{'difference':>15}: {extra:+6.2f} ms (median; the budget is +{BUDGET_MS:.0f} ms: "
          f"{verdict})")


if __name__ == "__main__":
    sys.exit(main())
