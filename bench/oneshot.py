"""One-shot command line: each runtime's `create`, `state` (of the created container), `start`,
`delete` and `run` of /bin/true, timed one call at a time (wall clock and peak RSS of each
call), the runtimes interleaved round by round in rotating order so that the machine's drift
hits all of them alike."""

from __future__ import annotations

import os

from bench.runtimes import Runtime
from bench.workspace import Workspace

OPS = ("run", "create", "state", "start", "delete")

# samples[runtime][op] = [(seconds, peak RSS in KiB), ...]
Samples = dict[str, dict[str, list[tuple[float, int]]]]


def one_round(rt: Runtime, ws: Workspace, cid: str) -> dict[str, tuple[float, int]]:
    """create, state, start, (reap the init as an engine would), delete; then run."""
    bundle = ws.bundle(f"{rt.name}-oneshot")
    pid_file = os.path.join(ws.dir, f"{rt.name}.pid")
    out = {}
    for op, args in (("create", ["create", "--bundle", bundle, "--pid-file", pid_file, cid]),
                     ("state", ["state", cid]),
                     ("start", ["start", cid])):
        answer = rt.run(*args)
        out[op] = (answer["wall"], answer["maxrss_kb"])
    with open(pid_file) as f:
        rt.helper.ask(op="reap", pid=int(f.read()))
    answer = rt.run("delete", cid)
    out["delete"] = (answer["wall"], answer["maxrss_kb"])
    answer = rt.run("run", "--bundle", bundle, f"{cid}r")
    out["run"] = (answer["wall"], answer["maxrss_kb"])
    return out


def measure(runtimes: list[Runtime], ws: Workspace, rounds: int, warmup: int) -> Samples:
    samples: Samples = {rt.name: {op: [] for op in OPS} for rt in runtimes}
    for r in range(warmup + rounds):
        shift = r % len(runtimes)
        for rt in runtimes[shift:] + runtimes[:shift]:
            times = one_round(rt, ws, f"o{r}")
            if r >= warmup:
                for op, value in times.items():
                    samples[rt.name][op].append(value)
    return samples
