"""The Markdown report: one section per measurement, medians and ratios only; every number the
suite could not take is named with the reason instead."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.oneshot import OPS, Samples
from bench.stats import median, percentile, ratio
from bench.batch import BatchRun
from bench.supervisor import CpuProfile, Memory, SoakResult
from bench.throughput import Results

REFERENCE_CONCURRENCY = 8  # the comparison point
CYCLE = "create+start+delete"
PERCENTILES = (50, 90, 99)
# issue 6: the supervisor (daemon + keeper) under 40 MiB plus 64 KiB per live container
MEMORY_BASE_KIB, MEMORY_PER_CONTAINER_KIB = 40 * 1024, 64


@dataclass
class Outcome:
    """Everything one run of the suite measured (or could not)."""

    started: str
    mode: str
    machine: dict[str, str]
    sizes: dict[str, str]
    runtimes: list[str]  # measured, in order
    absent: dict[str, str]  # runtime -> why it was not measured
    oneshot: Samples
    throughput: Results
    throughput_absent: dict[str, str]  # contender -> why
    supervisor_rss: dict[int, Memory] | str
    soak: SoakResult | str
    plots: list[str] | str = field(default_factory=list)  # file names, or why none
    seconds: float = 0.0
    batches: dict[str, list[BatchRun]] = field(default_factory=dict)
    batches_absent: dict[str, str] = field(default_factory=dict)
    cpu: CpuProfile | str = "not measured"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def cycle_times(samples: dict[str, list[tuple[float, int]]]) -> list[float]:
    steps = [samples[op] for op in ("create", "start", "delete")]
    return [sum(s[i][0] for s in steps) for i in range(len(steps[0]))]


def rates(results: Results, name: str) -> dict[int, float]:
    return {c: median([b.rate for b in batches]) for c, batches in results[name].items()}


def render(o: Outcome) -> str:
    out = [f"# corral benchmark, {o.started} ({o.mode} run)", ""]
    out += machine_section(o) + targets_section(o) + oneshot_section(o) + throughput_section(o)
    out += cpu_section(o) + batch_section(o)
    out += latency_section(o) + memory_section(o) + soak_section(o) + plots_section(o)
    out.append(METHOD)
    return "\n".join(out) + "\n"


def machine_section(o: Outcome) -> list[str]:
    lines = ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in o.machine.items()]
    lines += [f"- sizes: {', '.join(f'{k} {v}' for k, v in o.sizes.items())}",
              f"- the whole run took {o.seconds:.0f} s", ""]
    return lines


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def batch_rates(o: Outcome) -> dict[str, float]:
    return {name: median([r.rate for r in runs]) for name, runs in o.batches.items() if runs}


def targets_section(o: Outcome) -> list[str]:
    """Issue 13's "done when" (and issue 6's memory), checked against this run's medians."""
    lines = ["## Targets (issue 13)", ""]
    if "runc" in o.oneshot:
        mine, theirs = (median([t for t, _ in o.oneshot[n]["run"]]) for n in ("corral", "runc"))
        lines.append(f"- corral's command-line `run` no slower than runc's: "
                     f"{_verdict(mine <= theirs)} ({ratio(mine, theirs)} runc's time)")
        mine, theirs = (median(cycle_times(o.oneshot[n])) for n in ("corral", "runc"))
        lines.append(f"- corral's {CYCLE} at most 1.25x runc's: "
                     f"{_verdict(mine <= 1.25 * theirs)} ({ratio(mine, theirs)} runc's time)")
    else:
        lines.append("- corral's command-line `run` no slower than runc's: runc not measured")
    sup = "corral supervisor"
    ref = REFERENCE_CONCURRENCY
    for other, want, text in (("crun", 2.0, "at least 2x crun's"),
                              ("kernel floor", 0.6, "at least 0.6x the kernel floor's")):
        label = f"- supervisor containers/s at concurrency {ref} {text}: "
        if sup not in o.throughput or other not in o.throughput:
            why = o.throughput_absent.get(sup) or o.throughput_absent.get(other) or \
                o.absent.get(other, f"{other} not measured")
            lines.append(label + why)
        elif ref not in o.throughput[sup]:
            lines.append(label + f"concurrency {ref} not measured in a {o.mode} run")
        else:
            got = rates(o.throughput, sup)[ref] / rates(o.throughput, other)[ref]
            lines.append(label + f"{_verdict(got >= want)} ({got:.2f}x {other}'s)")
    rates_ = batch_rates(o)
    for other, want in (("crun + xargs", 2.0), ("bwrap + xargs", 0.5)):
        label = f"- `corral batch` jobs/s at least {want:g}x {other}'s: "
        if "corral batch" not in rates_ or other not in rates_:
            lines.append(label + o.batches_absent.get(other, "not measured"))
        else:
            got = rates_["corral batch"] / rates_[other]
            lines.append(label + f"{_verdict(got >= want)} ({got:.2f}x)")
    label = (f"- supervisor memory (daemon + keeper RSS) under 40 MiB + 64 KiB per live "
             f"container (issue 6): ")
    if isinstance(o.supervisor_rss, str):
        lines.append(label + o.supervisor_rss)
    else:
        # every measured count must be under its limit: report the tightest one
        def margin(live: int) -> float:
            return (MEMORY_BASE_KIB + MEMORY_PER_CONTAINER_KIB * live
                    - o.supervisor_rss[live].rss_kb)

        live = min(o.supervisor_rss, key=margin)
        m = o.supervisor_rss[live]
        limit = MEMORY_BASE_KIB + MEMORY_PER_CONTAINER_KIB * live
        lines.append(label + f"{_verdict(m.rss_kb < limit)} at {live} live ({mib(m.rss_kb)} "
                             f"MiB of {mib(limit)}; the tightest of "
                             f"{', '.join(map(str, sorted(o.supervisor_rss)))} live)")
    label = "- supervisor memory flat across the soak (RSS +10% at most, no more fds or tasks): "
    if isinstance(o.soak, str):
        lines.append(label + o.soak)
    else:
        s = o.soak
        flat = s.rss_kb[1] <= s.rss_kb[0] * 1.1 and s.fds[1] <= s.fds[0] and \
            s.tasks[1] <= s.tasks[0]
        lines.append(label + _verdict(flat))
    return lines + [""]


def _others_line(name: str, values: dict[str, dict[str, float]], columns: list[str]) -> str:
    """"- **name**: col a.aax other, b.bbx other2; col ..." against every other runtime
    (a column named "" has no label)."""
    parts = []
    for col in columns:
        vs = [f"{ratio(values[name][col], values[other][col])} {other}"
              for other in values if other != name]
        if vs:
            parts.append(f"{col} {', '.join(vs)}".strip())
    return f"- **{name}**: " + ("; ".join(parts) if parts else "no other runtime measured")


def _absent_lines(o: Outcome) -> list[str]:
    """"- crun: not measured (why)" per absent runtime, and a blank line after them."""
    lines = [f"- {name}: not measured ({why})" for name, why in o.absent.items()]
    return lines + [""] if lines else []


def oneshot_section(o: Outcome) -> list[str]:
    cols = [*OPS, CYCLE]
    med = {}
    for name in o.runtimes:
        med[name] = {op: median([t for t, _ in o.oneshot[name][op]]) for op in OPS}
        med[name][CYCLE] = median(cycle_times(o.oneshot[name]))
    lines = ["## One-shot command line", "",
             f"Median wall time of each call, ms, over {o.sizes['one-shot rounds']} interleaved "
             "rounds (`state` of a created container; `run` of /bin/true in the foreground; "
             f"{CYCLE}: each round's three calls summed).", "",
             f"| runtime | {' | '.join(cols)} |", "|---|" + "---|" * len(cols)]
    lines += [f"| {n} | {' | '.join(ms(med[n][c]) for c in cols)} |" for n in o.runtimes]
    lines += ["", *_absent_lines(o), "### One-shot ratios (time: below 1.00x is faster)", ""]
    lines += [_others_line(n, med, ["run", CYCLE, "state"]) for n in o.runtimes]
    return lines + [""]


def throughput_section(o: Outcome) -> list[str]:
    names = list(o.throughput)
    levels = sorted(next(iter(o.throughput.values()))) if names else []
    rounds = o.sizes["throughput rounds"]
    lines = ["## Throughput", "",
             "Containers per second: N containers (create, start, wait, delete) with at most "
             f"`concurrency` in flight, median over {rounds} round(s) of N / the batch's wall "
             "time; the contenders interleaved at each level.", ""]
    if names:
        per = {n: rates(o.throughput, n) for n in names}
        sizes = {c: next(iter(o.throughput.values()))[c][0].n for c in levels}
        lines += [f"| concurrency | N | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
        lines += [f"| {c} | {sizes[c]} | {' | '.join(f'{per[n][c]:.1f}' for n in names)} |"
                  for c in levels]
    lines += [""] + [f"- {why}" for why in o.throughput_absent.values()]
    lines += [f"- {name}: not measured ({why})" for name, why in o.absent.items()]
    if names:
        ref = REFERENCE_CONCURRENCY if REFERENCE_CONCURRENCY in levels else levels[-1]
        values = {n: {"": per[n][ref]} for n in names}
        lines += ["", f"### Throughput ratios at concurrency {ref} (containers/s: above 1.00x "
                  "is faster)", ""]
        lines += [_others_line(n, values, [""]) for n in names]
    return lines + [""]


def cpu_section(o: Outcome) -> list[str]:
    lines = ["## CPU per container", ""]
    c = o.cpu
    if isinstance(c, str):
        return lines + [f"- {c}", ""]
    rows = [("the container's processes: launcher, init, its program (reaped by the keeper)",
             c.children),
            ("the daemon: engine, API", c.daemon),
            ("the keeper and its spawner", c.keeper),
            ("the client: the suite's three API calls", c.client),
            ("the kernel besides: kworkers, RCU, softirqs (all CPUs' busy time, less the above)",
             c.kernel)]
    lines += [f"{c.n} `/bin/true` containers through `corral supervise` at concurrency "
              f"{c.concurrency} ({c.rate:.1f}/s): utime + stime of each process (/proc), and "
              "the whole machine's busy time (/proc/stat), divided by the containers.", "",
              "| where | ms per container |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows]
    lines += [f"| **total** | **{c.total:.2f}** |", ""]
    return lines


def batch_section(o: Outcome) -> list[str]:
    lines = ["## Batches of jobs", ""]
    rates_ = batch_rates(o)
    if not rates_:
        return lines + ["- not measured", ""]
    runs = next(iter(o.batches.values()))
    lines += [f"{runs[0].jobs} `/bin/true` jobs on the host's root, read-only, "
              f"{runs[0].parallel} at a time, median jobs/s over {len(runs)} round(s) "
              "(interleaved): `corral batch` (each job in its own cgroup), `crun run` from "
              "`xargs -P` (each in its own cgroup: a bundle per job), `bwrap` from `xargs -P` "
              "(no cgroup).", "", "| contender | jobs/s | corral batch vs it |", "|---|---|---|"]
    for name, rate in rates_.items():
        vs = "" if name == "corral batch" else f"{rates_['corral batch'] / rate:.2f}x"
        lines.append(f"| {name} | {rate:.1f} | {vs} |")
    lines += [""] + [f"- {name}: not measured ({why})" for name, why in o.batches_absent.items()]
    return lines + [""]


def latency_section(o: Outcome) -> list[str]:
    heads = " | ".join(f"p{p}" for p in PERCENTILES)
    lines = ["## Latency percentiles", "",
             "Each container's time from its job's start to its `delete` returning, ms, within "
             "its batch (all rounds pooled).", "",
             f"| contender | concurrency | {heads} |", "|---|---|" + "---|" * len(PERCENTILES)]
    for name, levels in o.throughput.items():
        for c, batches in sorted(levels.items()):
            pooled = [x for b in batches for x in b.latencies]
            cells = " | ".join(ms(percentile(pooled, p)) for p in PERCENTILES)
            lines.append(f"| {name} | {c} | {cells} |")
    return lines + [""]


def memory_section(o: Outcome) -> list[str]:
    med = {n: {op: median([k for _, k in o.oneshot[n][op]]) for op in OPS} for n in o.runtimes}
    lines = ["## Memory", "",
             "Peak RSS of each command-line call, MiB, median over the one-shot rounds (wait4's "
             "ru_maxrss: the command and the children it waited for).", "",
             f"| runtime | {' | '.join(OPS)} |", "|---|" + "---|" * len(OPS)]
    lines += [f"| {n} | {' | '.join(mib(med[n][op]) for op in OPS)} |" for n in o.runtimes]
    lines += ["", *_absent_lines(o), "### Memory ratios (peak RSS: below 1.00x is smaller)", ""]
    lines += [_others_line(n, med, ["run", "create"]) for n in o.runtimes]
    lines += ["", "### Supervisor", ""]
    if isinstance(o.supervisor_rss, str):
        lines.append(f"- {o.supervisor_rss}")
    else:
        lines += ["`corral supervise` with N sleeping containers alive, MiB: RSS of the daemon "
                  "and of its keeper, their sum (the target's measure: an upper bound, pages "
                  "they share count twice) and their PSS (shared pages split: what the two "
                  "cost together).", "",
                  "| live | daemon RSS | keeper RSS | RSS sum | PSS sum | target |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {live} | {mib(m.daemon_rss_kb)} | {mib(m.keeper_rss_kb)} | "
                  f"{mib(m.rss_kb)} | {mib(m.pss_kb)} | "
                  f"{mib(MEMORY_BASE_KIB + MEMORY_PER_CONTAINER_KIB * live)} |"
                  for live, m in o.supervisor_rss.items()]
    return lines + [""]


def soak_section(o: Outcome) -> list[str]:
    lines = ["## Scale: jobs through `corral batch`", ""]
    s = o.soak
    if isinstance(s, str):
        return lines + [f"- {s}", ""]
    return lines + [
        f"- {s.jobs} jobs in {s.seconds:.1f} s ({s.jobs / s.seconds:.1f} jobs/s)", "",
        "| supervisor | start | end |", "|---|---|---|",
        f"| RSS, MiB | {mib(s.rss_kb[0])} | {mib(s.rss_kb[1])} |",
        f"| open fds | {s.fds[0]} | {s.fds[1]} |",
        f"| tasks | {s.tasks[0]} | {s.tasks[1]} |", ""]


def plots_section(o: Outcome) -> list[str]:
    lines = ["## Plots", ""]
    if isinstance(o.plots, str):
        return lines + [o.plots, ""]
    return lines + [f"![{name}]({name})" for name in o.plots] + [""]


METHOD = """## Method

- Every runtime's commands are run by the same code: a helper process (bench/helper.py), a
  child subreaper that reaps the container inits as an engine's shim does, runs each under
  bench/timer.c (fork, exec, wait4: wall time and ru_maxrss, the command's own peak RSS). crun 1.8 refuses hybrid cgroup hosts, so on them its helper runs in a private mount
  namespace in which a tmpfs hides /sys/fs/cgroup/unified (crun sees a v1 host).
- Bundles: one busybox rootfs (corral.images.build_rootfs) shared by every container, the
  config of `corral spec` running /bin/true, cgroups under the suite's own
  `corral-bench-<pid>` parent, removed at the end.
- Throughput batches run from a shell pool: `xargs -P concurrency` of bench/job.sh, one per
  container: `create`, `start`, wait for the init to exit (reaped by the helper), `delete`.
- The kernel floor (bench/floor.c, compiled by the suite) runs from the same pool: it makes
  the container's cgroup in every hierarchy, clones a child into the bundle's namespaces,
  attaches it, lets it make / private and exec the rootfs's /bin/true, waits, removes the
  cgroups. No rootfs, pivot_root, mounts, devices, capabilities or seccomp.
"""
