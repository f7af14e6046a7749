"""`create` + `start` + `delete` of a /bin/true container: corral's command line against runc
and crun, side by side, interleaved round by round; medians and ratios.  The one-shot part of
the suite (bench/run), alone:

    .venv/bin/python bench/cli_lifecycle.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import oneshot  # noqa: E402
from bench.report import cycle_times  # noqa: E402
from bench.session import Interrupted, Session  # noqa: E402
from bench.stats import median  # noqa: E402

STEPS = ("create", "start", "delete")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    try:
        with Session() as session:
            samples = oneshot.measure(session.runtimes, session.ws, args.rounds, warmup=2)
    except Interrupted as e:
        print(f"interrupted ({e}): cleaned up", file=sys.stderr)
        return 130
    print(f"create + start + delete of /bin/true, median of {args.rounds} interleaved rounds "
          "(ms)\n")
    print(f"| runtime | {' | '.join(STEPS)} | total | total vs runc |")
    print("|---|" + "---|" * (len(STEPS) + 2))
    totals = {name: median(cycle_times(ops)) for name, ops in samples.items()}
    for name, ops in samples.items():
        cells = " | ".join(f"{median([t for t, _ in ops[s]]) * 1000:.1f}" for s in STEPS)
        ratio = f"{totals[name] / totals['runc']:.2f}x" if "runc" in totals else "-"
        print(f"| {name} | {cells} | {totals[name] * 1000:.1f} | {ratio} |")
    for name, why in session.absent.items():
        print(f"\n{name}: not measured ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
