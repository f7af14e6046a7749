"""The benchmark suite works: `bench/run --smoke` (N=2, concurrency 1 and 2, one round) writes a
report with every section, real numbers and a ratio line per runtime measured, the plots or
the note saying why there are none, and leaves no container, process, cgroup, mount or
temp directory behind."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import host_mounts, our_children, reap_exited, run_capturing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_RUN = os.path.join(REPO, "bench", "run")
SECTIONS = ("## Machine", "## Targets (issue 13)", "## One-shot command line",
            "### One-shot ratios", "## Throughput", "### Throughput ratios",
            "## Latency percentiles", "## Memory", "### Memory ratios", "### Supervisor",
            "## Scale", "## Plots", "## Method")
RATIO = re.compile(r"\d+\.\d\dx (corral|runc|crun|kernel floor)")
ENV = dict(os.environ, PYTHON=sys.executable)


def _workspaces() -> set[str]:
    return set(glob.glob("/tmp/corral-bench-*"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "results"
    before = {"workspaces": _workspaces(), "mounts": host_mounts()}
    with open(out.parent / "stderr", "w+") as err:
        proc = subprocess.Popen([BENCH_RUN, "--smoke", "--no-install", "--out", str(out)],
                                env=ENV, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        code = proc.wait(timeout=120)
        err.seek(0)
        stderr = err.read()
    reap_exited()
    return {
        "code": code, "stderr": stderr, "out": str(out),
        "report": (out / "report.md").read_text() if (out / "report.md").exists() else "",
        "cgroups": glob.glob(f"/sys/fs/cgroup/*/corral-bench-{proc.pid}"),
        "children": [pid for pid, state in our_children() if state != "Z"],
        "workspaces": _workspaces() - before["workspaces"],
        "mounts": [m for m in set(host_mounts()) ^ set(before["mounts"])
                   if "corral-bench" in m or "/sys/fs/cgroup" in m],
    }


def section(report: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of any level."""
    start = report.index(heading + "\n") if heading + "\n" in report else report.index(heading)
    rest = report[start + len(heading):]
    end = re.search(r"^#", rest, re.M)
    return rest[: end.start()] if end else rest


def test_smoke_run_succeeds(smoke):
    assert smoke["code"] == 0, smoke["stderr"]
    assert smoke["report"].startswith("# corral benchmark"), smoke["stderr"]


def test_report_has_every_section(smoke):
    missing = [s for s in SECTIONS if s not in smoke["report"]]
    assert not missing, f"report lacks {missing}:\n{smoke['report']}"


@pytest.mark.parametrize("runtime", ["corral", "runc", "crun"])
def test_ratio_line_per_runtime(smoke, runtime):
    report = smoke["report"]
    if runtime != "corral" and not shutil.which(runtime):
        assert f"- {runtime}: not measured ({runtime} not installed" in report
        pytest.skip(f"{runtime} is not installed here: the report says it was not measured")
    measured = [r for r in ("corral", "runc", "crun") if r == "corral" or shutil.which(r)]
    if len(measured) == 1:
        pytest.skip("runc and crun are both missing: no ratio to take")
    throughput_name = "corral CLI" if runtime == "corral" else runtime
    for heading, name in (("### One-shot ratios", runtime),
                          ("### Throughput ratios", throughput_name),
                          ("### Memory ratios", runtime)):
        lines = [line for line in section(report, heading).splitlines()
                 if line.startswith(f"- **{name}**: ")]
        assert len(lines) == 1 and RATIO.search(lines[0]), f"{heading}: no ratio line for {name}"


def test_tables_hold_numbers(smoke):
    report = smoke["report"]
    rows = [line for line in section(report, "## One-shot command line").splitlines()
            if line.startswith("| corral |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    assert len(cells) == 6 and all(float(c) > 0 for c in cells), rows[0]
    throughput = section(report, "## Throughput")
    header = next(line for line in throughput.splitlines() if line.startswith("| concurrency"))
    assert "kernel floor" in header and "corral CLI" in header
    for level in (1, 2):
        row = next(line for line in throughput.splitlines() if line.startswith(f"| {level} | 2 |"))
        assert all(float(c) > 0 for c in row.strip("|").split("|")[2:]), row


def test_supervisor_parts_are_numbers_or_say_why(smoke):
    report = smoke["report"]
    for heading in ("## Throughput", "### Supervisor", "## Scale"):
        text = section(report, heading)
        assert "not measured (issue 6)" in text or re.search(r"\d+\.\d", text), heading


def test_plots_or_the_reason(smoke):
    has_matplotlib = subprocess.run([sys.executable, "-c", "import matplotlib"],
                                    capture_output=True).returncode == 0
    plots = section(smoke["report"], "## Plots")
    if has_matplotlib:
        for name in ("throughput.png", "latency.png"):
            assert f"]({name})" in plots
            with open(os.path.join(smoke["out"], name), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in plots


def test_leaves_nothing_behind(smoke):
    assert not smoke["cgroups"], smoke["cgroups"]
    assert not smoke["children"], f"processes left: {smoke['children']}"
    assert not smoke["workspaces"], smoke["workspaces"]
    assert not smoke["mounts"], smoke["mounts"]


def test_ctrl_c_cleans_up(tmp_path, _no_leaks):
    """SIGINT in the middle of throughput batches: every container, process and cgroup of the
    run is removed, and no results are written."""
    log = tmp_path / "stderr"
    before = _workspaces()
    with open(log, "w") as err:
        proc = subprocess.Popen([BENCH_RUN, "--quick", "--no-install", "--out",
                                 str(tmp_path / "results")], env=ENV,
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    deadline = time.monotonic() + 60
    while "throughput:" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    time.sleep(1)  # a few batches in flight
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()
    assert "interrupted (SIGINT): cleaned up" in log.read_text()
    assert not glob.glob(f"/sys/fs/cgroup/*/corral-bench-{proc.pid}")
    assert _workspaces() == before
    assert not (tmp_path / "results").exists()


def test_bad_argument_is_one_clear_error():
    proc = run_capturing([BENCH_RUN, "--smoke", "--quick"], env=ENV)
    assert proc.returncode == 2
    assert "--quick: not allowed with argument --smoke" in proc.stderr
