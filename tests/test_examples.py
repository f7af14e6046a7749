"""The examples run as written (their environment variables point them at the test's state
root and cgroup parent), and say what they should."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from tests.conftest import CGROUP_PARENT, run_capturing

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples")


@pytest.fixture
def run_example(corral):
    """Runs examples/NAME with CORRAL_ROOT (the corral fixture's root: the leak check looks
    there) and CORRAL_CGROUP_PARENT (ours)."""

    def run(name: str):
        env = dict(os.environ, CORRAL_ROOT=corral.root, CORRAL_CGROUP_PARENT=CGROUP_PARENT)
        proc = run_capturing([sys.executable, os.path.join(EXAMPLES, name)], env=env,
                             timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    return run


def test_trio_example(run_example):
    out = run_example("trio_jobs.py")
    assert re.search(r"hello: exit 3, said 'hello from corral', .* peak memory \d+ bytes", out)
    assert "exec: exit 0: I am pid 2, pid 1 is sleep 30" in out
    assert "stats: 1 processes, pids limit 16" in out
    assert "stop: exit 137" in out
    assert [line for line in out.splitlines() if line.startswith("logs:")] == [
        "logs: stdout: tick 1", "logs: stdout: tick 2", "logs: stdout: tick 3",
        "logs: stderr: done"]
    assert "map: " + ", ".join(f"cube-{n}={n ** 3}" for n in range(1, 7)) in out


def test_asyncio_example(run_example):
    out = run_example("asyncio_jobs.py")
    assert re.search(r"python: exit 0 in \S+ s: '3\.\d+\.\d+'", out)  # the host's python3
    assert re.search(r"limited: exit 0 in \S+ s: '42'", out)
    assert "too-slow: timed out" in out
    assert 'no-such-command: refused: exec: "no-such-command"' in out
    assert "map: " + ", ".join(f"square-{n}={n * n}" for n in range(1, 9)) in out


def test_sweep_example(run_example):
    out = run_example("sweep.py").splitlines()
    assert out[0].split() == ["cpus", "n", "primes", "cpu", "s", "wall", "s", "cpu/wall"]
    rows = [line.split() for line in out[1:]]
    assert len(rows) == 6
    primes = {n: {r[2] for r in rows if r[1] == n} for n in ("120000", "240000")}
    assert primes == {"120000": {"11301"}, "240000": {"21221"}}  # same answer under any limit
    for cpus, _n, _p, _cpu, _wall, ratio in rows:
        assert float(ratio) <= float(cpus) + 0.1  # the quota throttles it


def test_jobs100_batch(corral, tmp_path):
    results = tmp_path / "results"
    proc = corral("batch", "--cgroup-parent", CGROUP_PARENT, "--results", str(results),
                  os.path.join(EXAMPLES, "jobs100.toml"), timeout=120)
    assert proc.stdout.startswith("100 jobs in ") and "100 succeeded, 0 failed" in proc.stdout
    summary = json.loads((results / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == 100
    assert (results / "memory-limit-1" / "stdout").read_text() == ("16 MiB: fine\n"
                                                                   "256 MiB: exit 137\n")
    assert "fork refused after" in (results / "pids-limit-1" / "stdout").read_text()
    assert (results / "square-12" / "stdout").read_text() == "144\n"
