"""Batches of jobs (issue 13): N `/bin/true` jobs on the host's own root, read-only, P at a
time, three ways, interleaved per round:

- ``corral batch``: a jobs file, ``--parallel P``, its embedded engine (each job in its own
  cgroup: the hierarchies a job uses);
- ``crun run`` from ``xargs -P P``: the same job's OCI config (``corral.Job.config``, the
  host root through one shared staging directory), a bundle per job for its own cgroup path
  (crun makes it in every hierarchy);
- ``bwrap`` from ``xargs -P P``: ``--ro-bind / / --unshare-all --proc /proc --dev /dev true``,
  what a user running sandboxed jobs without cgroups picks (no cgroup, no state).

Every container each makes is gone at the end of its round (the suite's clean-up checks).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from bench.errors import BenchError
from bench.runtimes import CORRAL, Helper, Runtime
from bench.workspace import Workspace

BWRAP = ["--ro-bind", "/", "/", "--unshare-all", "--proc", "/proc", "--dev", "/dev", "true"]


@dataclass
class BatchRun:
    contender: str
    jobs: int
    parallel: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def prepare(ws: Workspace, jobs: int, crun: Runtime | None) -> dict[str, str]:
    """The jobs file, and crun's bundles (one config per job: only the cgroup path differs).
    Returns the paths the contenders read."""
    from corral.jobs.job import HostRoot, Job

    base = os.path.join(ws.dir, "batch")
    os.makedirs(base, exist_ok=True)
    jobs_file = os.path.join(base, "jobs.jsonl")
    with open(jobs_file, "w") as f:
        for i in range(jobs):
            f.write(json.dumps({"name": f"b{i}", "args": ["/bin/true"]}) + "\n")
    paths = {"jobs": jobs_file, "ids": os.path.join(base, "ids")}
    with open(paths["ids"], "w") as f:
        f.write("".join(f"{i}\n" for i in range(jobs)))
    if crun is not None:
        staging = HostRoot.make(os.path.join(base, "hostroot"))
        job = Job(["/bin/true"])
        bundles = os.path.join(base, "crun")
        os.makedirs(bundles, exist_ok=True)
        for i in range(jobs):
            path = os.path.join(bundles, str(i))
            os.makedirs(path, exist_ok=True)
            config = job.config(f"c{i}", f"{ws.parent}/crun-batch", host_root=staging)
            with open(os.path.join(path, "config.json"), "w") as f:
                json.dump(config, f)
        paths["crun"] = bundles
    return paths


def corral_batch(helper: Helper, ws: Workspace, paths: dict[str, str], parallel: int,
                 round_: int) -> BatchRun:
    root = os.path.join(ws.state, f"batch-{round_}")
    argv = [CORRAL, "--root", root, "batch", "--parallel", str(parallel), "-q",
            "--cgroup-parent", f"{ws.parent}/corral-batch", paths["jobs"]]
    answer = helper.ask(op="time", argv=argv)
    if answer["code"] != 0:
        raise BenchError(f"corral batch exited {answer['code']}: {answer['stderr']}")
    shutil.rmtree(root, ignore_errors=True)
    return BatchRun("corral batch", _count(paths), parallel, answer["wall"])


def crun_xargs(ws: Workspace, crun: Runtime, paths: dict[str, str], parallel: int) -> BatchRun:
    script = f'exec {" ".join(crun.argv)} run --bundle {paths["crun"]}/"$1" "b$1" >/dev/null'
    argv = ["/usr/bin/xargs", "-a", paths["ids"], "-P", str(parallel), "-n", "1",
            "/bin/sh", "-c", script, "sh"]
    answer = crun.helper.ask(op="pool", argv=argv, stdout="/dev/null")
    if answer["code"] != 0:
        raise BenchError(f"crun run from xargs exited {answer['code']}: {answer['stderr']}")
    for parent in ws.cgroup_parents():  # crun keeps the parent it made; its jobs' are gone
        try:
            os.rmdir(os.path.join(parent, "crun-batch"))
        except OSError:
            pass
    return BatchRun("crun + xargs", _count(paths), parallel, answer["wall"])


def bwrap_xargs(helper: Helper, paths: dict[str, str], parallel: int) -> BatchRun:
    bwrap = shutil.which("bwrap")
    argv = ["/usr/bin/xargs", "-a", paths["ids"], "-P", str(parallel), "-n", "1",
            "/bin/sh", "-c", f'exec {bwrap} {" ".join(BWRAP)}', "sh"]
    answer = helper.ask(op="pool", argv=argv, stdout="/dev/null")
    if answer["code"] != 0:
        raise BenchError(f"bwrap from xargs exited {answer['code']}: {answer['stderr']}")
    return BatchRun("bwrap + xargs", _count(paths), parallel, answer["wall"])


def _count(paths: dict[str, str]) -> int:
    with open(paths["ids"]) as f:
        return sum(1 for _ in f)


def measure(ws: Workspace, helper: Helper, runtimes: list[Runtime], jobs: int, parallel: int,
            rounds: int) -> tuple[dict[str, list[BatchRun]], dict[str, str]]:
    """Every contender each round, rotating the order; (runs by contender, absent ones)."""
    crun = next((rt for rt in runtimes if rt.name == "crun"), None)
    absent = {}
    if crun is None:
        absent["crun + xargs"] = "crun not installed"
    if shutil.which("bwrap") is None:
        absent["bwrap + xargs"] = "bwrap not installed (apt-get install bubblewrap)"
    paths = prepare(ws, jobs, crun)
    contenders = {"corral batch": lambda r: corral_batch(helper, ws, paths, parallel, r)}
    if crun is not None:
        contenders["crun + xargs"] = lambda r: crun_xargs(ws, crun, paths, parallel)
    if "bwrap + xargs" not in absent:
        contenders["bwrap + xargs"] = lambda r: bwrap_xargs(helper, paths, parallel)
    runs: dict[str, list[BatchRun]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(contenders[name](r))
    return runs, absent
