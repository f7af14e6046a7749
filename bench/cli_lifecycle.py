"""`create` + `start` + `delete` of a /bin/true container: corral's command line against runc
(and crun where it can run), side by side, interleaved round by round; medians and ratios.

    .venv/bin/python bench/cli_lifecycle.py [--rounds N]

Each round runs every runtime once, in rotating order, on its own copy of one busybox bundle
(cgroups under a parent of the benchmark's own, removed at the end).  crun refuses this host's
hybrid cgroup layout unless the cgroup2 mount is hidden, so it runs inside a private mount
namespace where a tmpfs covers /sys/fs/cgroup/unified (see shared/reference/offline-engines.md).
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from corral import nsenter  # noqa: E402
from corral.images import build_rootfs  # noqa: E402
from corral.oci.spec import default_spec  # noqa: E402

CORRAL = os.path.join(os.path.dirname(sys.executable), "corral")
PARENT = f"corral-bench-{os.getpid()}"
STEPS = ("create", "start", "delete")


def runtimes(workdir: str) -> dict[str, list[str]]:
    found = {"corral": [CORRAL, "--root", os.path.join(workdir, "corral")]}
    if shutil.which("runc"):
        found["runc"] = ["runc", "--root", os.path.join(workdir, "runc")]
    if shutil.which("crun") and os.path.isdir("/sys/fs/cgroup/unified"):
        hide = "mount -t tmpfs none /sys/fs/cgroup/unified && exec crun \"$@\""
        found["crun"] = ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, "crun",
                         "--root", os.path.join(workdir, "crun")]
    elif shutil.which("crun"):
        found["crun"] = ["crun", "--root", os.path.join(workdir, "crun")]
    return found


def make_bundle(workdir: str, rootfs: str, name: str) -> str:
    path = os.path.join(workdir, f"bundle-{name}")
    os.mkdir(path)
    config = default_spec()
    config["root"]["path"] = rootfs
    config["process"].update(terminal=False, args=["/bin/true"])
    config["linux"]["cgroupsPath"] = f"/{PARENT}/{name}"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def one_round(cmd: list[str], bundle: str, cid: str, pid_file: str) -> dict[str, float]:
    times = {}
    for step, args in (("create", ["create", "--bundle", bundle, "--pid-file", pid_file, cid]),
                       ("start", ["start", cid])):
        t0 = time.perf_counter()
        subprocess.run(cmd + args, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        times[step] = time.perf_counter() - t0
        if step == "create":
            with open(pid_file) as f:
                pid = int(f.read())
    os.waitpid(pid, 0)  # /bin/true has exited: reap it, as conmon would
    t0 = time.perf_counter()
    subprocess.run(cmd + ["delete", cid], check=True, stdout=subprocess.DEVNULL)
    times["delete"] = time.perf_counter() - t0
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    nsenter.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: every runtime's init comes back to us
    workdir = tempfile.mkdtemp(prefix="corral-bench-")
    try:
        rootfs = build_rootfs(os.path.join(workdir, "rootfs"))
        rts = runtimes(workdir)
        bundles = {name: make_bundle(workdir, rootfs, name) for name in rts}
        samples = {name: {s: [] for s in (*STEPS, "total")} for name in rts}
        names = list(rts)
        for r in range(args.rounds + 2):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                t = one_round(rts[name], bundles[name], f"b{r}", os.path.join(workdir, "pid"))
                if r >= 2:  # two warm-up rounds
                    for step in STEPS:
                        samples[name][step].append(t[step])
                    samples[name]["total"].append(sum(t.values()))
        report(samples, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            parent = os.path.join("/sys/fs/cgroup", hierarchy, PARENT)
            if os.path.isdir(parent):
                os.rmdir(parent)
    return 0


def report(samples: dict, rounds: int) -> None:
    print(f"create + start + delete of /bin/true, median of {rounds} interleaved rounds (ms)\n")
    print(f"| runtime | {' | '.join(STEPS)} | total | total vs runc |")
    print("|---|" + "---|" * (len(STEPS) + 2))
    base = statistics.median(samples["runc"]["total"]) if "runc" in samples else None
    for name, steps in samples.items():
        med = {s: statistics.median(v) * 1000 for s, v in steps.items()}
        ratio = f"{med['total'] / (base * 1000):.2f}x" if base else "-"
        cells = " | ".join(f"{med[s]:.1f}" for s in STEPS)
        print(f"| {name} | {cells} | {med['total']:.1f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
