"""Issue 7's target, side by side: N `/bin/true` jobs through `corral batch --parallel P`
against the same N containers through `crun run` from `xargs -P P`.

    python bench/batch_vs_crun.py [--jobs 1000] [--parallel 8] [--rounds 3]

Both run the same busybox bundle (read-only root, `corral spec`'s config); each crun
container gets its own config only for its cgroup path. crun runs in a private mount namespace
with the cgroup2 mount hidden (it refuses this hybrid layout otherwise: see
../shared/reference/offline-engines.md). Cgroups live under `corral-bench-batch-<pid>`, state
in a temp directory; both are removed at the end, also on Ctrl-C. Rounds alternate which goes
first; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from corral.images import build_rootfs  # noqa: E402
from corral.oci.spec import default_spec  # noqa: E402
from bench.workspace import remove_cgroup_tree  # noqa: E402

PARENT = f"corral-bench-batch-{os.getpid()}"
CORRAL = os.path.join(os.path.dirname(sys.executable), "corral")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    crun = shutil.which("crun")
    if crun is None:
        print("batch_vs_crun: crun is not installed (apt-get install crun)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="corral-bench-batch-")
    try:
        jobs_file = _prepare(work, args.jobs)
        rates: dict[str, list[float]] = {"corral batch": [], "crun + xargs": []}
        for r in range(args.rounds):
            order = [("corral batch", _batch), ("crun + xargs", _crun)]
            for name, run in (order if r % 2 == 0 else order[::-1]):
                rates[name].append(args.jobs / run(work, jobs_file, args, crun, r))
        medians = {name: statistics.median(v) for name, v in rates.items()}
        for name, value in medians.items():
            print(f"{name:>14}: {value:7.1f} jobs/s (median of {args.rounds}; "
                  f"{', '.join(f'{v:.1f}' for v in rates[name])})")
        ratio = medians["corral batch"] / medians["crun + xargs"]
        print(f"{'ratio':>14}: corral batch is {ratio:.2f}x crun's rate (issue 7 wants >= 2x: "
              f"{'met' if ratio >= 2 else 'NOT met'})")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_cgroup_tree(PARENT)


def _prepare(work: str, count: int) -> str:
    rootfs = build_rootfs(os.path.join(work, "rootfs"))
    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    config["root"] = {"path": rootfs, "readonly": True}
    os.makedirs(os.path.join(work, "bundle"))
    with open(os.path.join(work, "bundle", "config.json"), "w") as f:
        json.dump(config, f)
    for i in range(count):
        bundle = os.path.join(work, "crun", f"c{i}")
        os.makedirs(bundle)
        config["linux"]["cgroupsPath"] = f"/{PARENT}/crun-c{i}"
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
    jobs_file = os.path.join(work, "jobs.jsonl")
    with open(jobs_file, "w") as f:
        for i in range(count):
            f.write(json.dumps({"name": f"j{i}", "bundle": os.path.join(work, "bundle")}) + "\n")
    return jobs_file


def _batch(work: str, jobs_file: str, args, crun: str, round_: int) -> float:
    root = os.path.join(work, f"corral-state-{round_}")
    started = time.monotonic()
    proc = subprocess.run([CORRAL, "--root", root, "batch", "--parallel", str(args.parallel),
                           "--cgroup-parent", PARENT, "-q", jobs_file],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"corral batch failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def _crun(work: str, jobs_file: str, args, crun: str, round_: int) -> float:
    state = os.path.join(work, f"crun-state-{round_}")
    # Each container: `crun run` of its own bundle (its own cgroup), detached from stdio.
    one = (f'{crun} --root {state} run --bundle {work}/crun/"$1" r{round_}-"$1" '
           '</dev/null >/dev/null 2>&1 || echo "crun failed: $1" >&2')
    script = (f"mount -t tmpfs none /sys/fs/cgroup/unified && "
              f"seq 0 {args.jobs - 1} | sed 's/^/c/' | "
              f"xargs -P {args.parallel} -n 1 sh -c '{one}' sh")
    started = time.monotonic()
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0 or "crun failed" in proc.stderr:
        raise SystemExit(f"crun failed: {proc.stderr.strip()[:400]}")
    return elapsed



if __name__ == "__main__":
    sys.exit(main())
