"""corral's benchmark suite: one-shot command line, throughput against concurrency, memory;
corral against runc, crun and the kernel's floor, side by side in one run.

    bench/run [--quick | --smoke] [--out DIR] [--no-install]

Results go to bench/results/<timestamp>/ (report.md, PNG plots, summary.json); a full run
also refreshes bench/results/latest/.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass

from bench import batch, oneshot, plots, report, supervisor, throughput
from bench.errors import BenchError, NotMeasured
from bench.machine import describe
from bench.runtimes import install_missing
from bench.session import Interrupted, Session
from bench.stats import median
from bench.workspace import HERE, PRIVATE_MOUNTS

LEVELS = (1, 2, 4, 8, 16, 32, 64)
SUPERVISOR_LIVE = (0, 100, 1000)
SOAK_JOBS = 10_000


@dataclass(frozen=True)
class Sizes:
    """How much each part measures; ``full`` is sized for < 10 minutes on 2 cores."""

    oneshot_rounds: int
    warmup: int
    throughput_rounds: int
    levels: tuple[int, ...]
    per_concurrency: int  # N = max(min_n, per_concurrency * concurrency)
    min_n: int
    live: tuple[int, ...] = SUPERVISOR_LIVE  # sleeping containers for the supervisor's memory
    soak_jobs: int = SOAK_JOBS
    batch_jobs: int = 1000  # host-root /bin/true jobs per batch (issue 13)
    batch_rounds: int = 3
    cpu_n: int = 512  # containers of the CPU-per-container profile (at concurrency 8)

    def n(self, concurrency: int) -> int:
        return max(self.min_n, self.per_concurrency * concurrency)

    def describe(self) -> dict[str, str]:
        return {"one-shot rounds": f"{self.oneshot_rounds} (+{self.warmup} warm-up)",
                "throughput rounds": str(self.throughput_rounds),
                "N per concurrency": ", ".join(f"{c}: {self.n(c)}" for c in self.levels),
                "supervisor live containers": ", ".join(map(str, self.live)),
                "soak jobs": str(self.soak_jobs),
                "batch jobs": f"{self.batch_jobs} x {self.batch_rounds} round(s)",
                "CPU profile containers": str(self.cpu_n)}


MODES = {
    "full": Sizes(oneshot_rounds=30, warmup=2, throughput_rounds=3, levels=LEVELS,
                  per_concurrency=4, min_n=24),
    "quick": Sizes(oneshot_rounds=10, warmup=1, throughput_rounds=1, levels=LEVELS,
                   per_concurrency=2, min_n=8, soak_jobs=1000, batch_jobs=300, batch_rounds=1,
                   cpu_n=128),
    "smoke": Sizes(oneshot_rounds=1, warmup=0, throughput_rounds=1, levels=(1, 2),
                   per_concurrency=1, min_n=2, live=(0, 2), soak_jobs=10, batch_jobs=8,
                   batch_rounds=1, cpu_n=8),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="corral against runc, crun and the kernel's floor: "
        "one-shot calls, throughput, latency, memory (see bench/README.md)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="under a minute: fewer rounds, N = max(8, 2 x concurrency)")
    size.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="seconds: one round, N=2, concurrency 1 and 2 (the suite's own test)")
    parser.add_argument("--out", help="results directory (default: bench/results/<timestamp>)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install a missing runc or crun: report it missing")
    parser.add_argument("--state-on-disk", action="store_true",
                        help="keep the runtimes' state roots on the disk's /tmp (default: a "
                        "tmpfs in the suite's own mount namespace, as /run is on a production "
                        "host)")
    args = parser.parse_args(argv)
    args.mode = args.mode or "full"
    return args


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    sizes = MODES[args.mode]
    started = time.strftime("%Y-%m-%dT%H-%M-%S")
    out_dir = os.path.abspath(args.out or os.path.join(
        HERE, "results", started + ("" if args.mode == "full" else f"-{args.mode}")))
    if os.geteuid() != 0:
        print("bench/run: must run as root (containers, cgroups)", file=sys.stderr)
        return 2
    if not args.state_on_disk and os.environ.get(PRIVATE_MOUNTS) != "1":
        # A mount namespace of the suite's own, private: its tmpfs is nobody else's, and
        # goes with the suite (every runtime it runs, and their containers, are inside).
        os.environ[PRIVATE_MOUNTS] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private",
                              sys.executable, "-m", "bench", *(argv if argv is not None
                                                               else sys.argv[1:])])
    notes = [] if args.no_install else install_missing(["runc", "crun"])
    for note in notes:
        print(f"bench: {note}", file=sys.stderr)

    try:
        with Session() as session:
            outcome = measure(session, sizes, started, args.mode)
            outcome.seconds = time.monotonic() - t0
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"bench: interrupted ({e}): cleaned up", file=sys.stderr)
        return 130
    if session.leftovers:
        print(f"bench: runs left behind (now removed): {'; '.join(session.leftovers)}",
              file=sys.stderr)
        return 1
    write(outcome, out_dir, update_latest=args.mode == "full" and not args.out)
    print(f"bench: report in {os.path.join(out_dir, 'report.md')}")
    return 0


def measure(session: Session, sizes: Sizes, started: str, mode: str) -> report.Outcome:
    ws, runtimes = session.ws, session.runtimes
    machine = describe({rt.name: rt.version for rt in runtimes})
    machine["state roots"] = ("a tmpfs in the suite's own mount namespace (as /run on a "
                              "production host)" if ws.state_on_tmpfs else
                              "the disk's /tmp (--state-on-disk)")

    log(f"one-shot: {sizes.oneshot_rounds} rounds, {', '.join(rt.name for rt in runtimes)}")
    samples = oneshot.measure(runtimes, ws, sizes.oneshot_rounds, sizes.warmup)

    throughput.prepare(ws, max(sizes.n(c) for c in sizes.levels))
    contenders = {}
    absent_contenders = {}
    try:
        floor = ws.compile("floor")
        contenders["kernel floor"] = throughput.floor_contender(session.host, floor, ws)
    except BenchError as e:
        absent_contenders["kernel floor"] = f"kernel floor: not measured ({e})"
    contenders["corral supervisor"] = lambda n, c: supervisor.throughput(ws, n, c)
    for rt in runtimes:
        contenders["corral CLI" if rt.name == "corral" else rt.name] = \
            throughput.runtime_contender(rt, ws)
    log(f"throughput: concurrency {', '.join(map(str, sizes.levels))}, "
        f"{sizes.throughput_rounds} round(s)")
    results, dropped = throughput.measure(contenders, list(sizes.levels), sizes.n,
                                          sizes.throughput_rounds)
    absent_contenders.update(dropped)

    log(f"CPU per container: {sizes.cpu_n} through the supervisor at concurrency 8")
    try:
        cpu = supervisor.cpu_profile(ws, sizes.cpu_n, min(8, max(sizes.levels)))
    except NotMeasured as e:
        cpu = str(e)
    log(f"batches: {sizes.batch_jobs} host-root jobs, --parallel 8, {sizes.batch_rounds} "
        f"round(s): corral batch, crun run and bwrap from xargs")
    batches, batches_absent = batch.measure(ws, session.host, runtimes, sizes.batch_jobs, 8,
                                            sizes.batch_rounds)
    log(f"supervisor memory: {', '.join(map(str, sizes.live))} live containers")
    try:
        rss = {live: supervisor.rss(ws, live) for live in sizes.live}
    except NotMeasured as e:
        rss = str(e)
    log(f"soak: {sizes.soak_jobs} jobs through `corral batch`")
    try:
        soak = supervisor.soak(ws, sizes.soak_jobs)
    except NotMeasured as e:
        soak = str(e)
    return report.Outcome(started=started, mode=mode, machine=machine,
                          sizes=sizes.describe(), runtimes=[rt.name for rt in runtimes],
                          absent=session.absent, oneshot=samples, throughput=results,
                          throughput_absent=absent_contenders, supervisor_rss=rss, soak=soak,
                          batches=batches, batches_absent=batches_absent, cpu=cpu)


def write(outcome: report.Outcome, out_dir: str, update_latest: bool) -> None:
    os.makedirs(out_dir, exist_ok=True)
    outcome.plots = plots.draw(outcome.throughput, out_dir)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report.render(outcome))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary(outcome), f, indent=1)
    if update_latest:
        latest = os.path.join(HERE, "results", "latest")
        shutil.rmtree(latest, ignore_errors=True)
        shutil.copytree(out_dir, latest)


def summary(o: report.Outcome) -> dict:
    """Medians only (small enough to commit), for comparing runs by program."""
    return {
        "started": o.started, "mode": o.mode, "machine": o.machine, "sizes": o.sizes,
        "absent": {**o.absent, **o.throughput_absent},
        "oneshot_ms": {n: {op: round(median([t for t, _ in s]) * 1000, 3)
                              for op, s in ops.items()} for n, ops in o.oneshot.items()},
        "oneshot_peak_rss_kib": {n: {op: median([k for _, k in s]) for op, s in ops.items()}
                                 for n, ops in o.oneshot.items()},
        "containers_per_s": {n: {c: round(r, 2) for c, r in report.rates(o.throughput, n).items()}
                             for n in o.throughput},
        "supervisor_memory_kib": (o.supervisor_rss if isinstance(o.supervisor_rss, str) else
                                  {live: asdict(m) for live, m in o.supervisor_rss.items()}),
        "soak": o.soak if isinstance(o.soak, str) else asdict(o.soak),
        "batch_jobs_per_s": {n: round(r, 2) for n, r in report.batch_rates(o).items()},
        "cpu_ms_per_container": o.cpu if isinstance(o.cpu, str) else asdict(o.cpu),
    }


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
