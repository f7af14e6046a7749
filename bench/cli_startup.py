"""Where a `corral` command's time goes before it does any work: the interpreter, corral's
imports, and a read-only command, against runc's and crun's same commands.

    .venv/bin/python bench/cli_startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CORRAL = os.path.join(os.path.dirname(sys.executable), "corral")


def commands(root: str) -> dict[str, list[str]]:
    with open(CORRAL) as f:
        interpreter = f.readline()[2:].split()[0]
    cmds = {
        "python -IS -c pass (the floor)": [interpreter, "-IS", "-c", "pass"],
        "corral --version (+ corral.cli.main)": [CORRAL, "--version"],
        "corral state (unknown id)": [CORRAL, "--root", root, "state", "nope"],
        "corral list (empty)": [CORRAL, "--root", root, "list"],
    }
    for rt in ("runc", "crun"):
        if shutil.which(rt):
            cmds[f"{rt} state (unknown id)"] = [rt, "--root", root, "state", "nope"]
            cmds[f"{rt} list (empty)"] = [rt, "--root", root, "list"]
    return cmds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="corral-bench-")
    try:
        cmds = commands(root)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():  # interleaved: drift hits every command alike
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                samples[name].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"median of {args.rounds} interleaved runs (ms)\n")
    print("| command | ms |\n|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
