"""`corral batch` against the real kernel: summaries and results of a batch with failures,
timeouts and retries, Ctrl-C in the middle, the progress output, bad input, and a batch
through a running `corral supervise` as well as through the embedded engine."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import CGROUP_PARENT, CORRAL, Corral
from tests.supervisor_fixture import Daemon


def write_jobs(path, jobs: list[dict]) -> str:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return str(path)


def batch(corral: Corral, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return corral("batch", "--cgroup-parent", CGROUP_PARENT, *args, check=False,
                  timeout=timeout)


def summary(results) -> dict:
    return json.loads((results / "summary.json").read_text())


def result(results, name: str) -> dict:
    return json.loads((results / name / "result.json").read_text())


# ---- a big batch ----


def test_200_jobs_with_failures_timeouts_and_retries(corral, tmp_path):
    """Each kind of job, its expected fate, and the counts that follow from them."""
    marks = tmp_path / "marks"  # where flaky jobs remember their first attempt
    marks.mkdir()
    jobs = []
    expect = {}  # name -> (status, reason, attempts)
    for i in range(160):
        jobs.append({"name": f"ok-{i}", "args": ["true"]})
        expect[f"ok-{i}"] = ("succeeded", None, 1)
    for i in range(20):  # non-zero exits: --retries 1 gives each a second run
        jobs.append({"name": f"exit-{i}", "args": f"echo out-{i}; echo err-{i} >&2; "
                                                  f"exit {1 + i % 5}"})
        expect[f"exit-{i}"] = ("failed", "exit_status", 2)
    for i in range(4):  # their own retries win over --retries
        jobs.append({"name": f"exit3-{i}", "args": "exit 7", "retries": 2})
        expect[f"exit3-{i}"] = ("failed", "exit_status", 3)
    jobs.append({"name": "no-retry", "args": "exit 9", "retries": 0})  # 0 opts out of it
    expect["no-retry"] = ("failed", "exit_status", 1)
    for i in range(8):  # fail once, then succeed
        jobs.append({"name": f"flaky-{i}", "mounts": [f"{marks}:/marks:rw"],
                     "args": f"test -e /marks/{i} && echo second || {{ touch /marks/{i}; exit 1; }}"})
        expect[f"flaky-{i}"] = ("succeeded", None, 2)
    for i in range(3):  # commands that do not exist: not retried
        jobs.append({"name": f"missing-{i}", "args": [f"/no/such/command-{i}"]})
        expect[f"missing-{i}"] = ("failed", "error", 1)
    for i in range(2):  # --timeout applies, and the retry times out again
        jobs.append({"name": f"slow-{i}", "args": ["sleep", "30"]})
        expect[f"slow-{i}"] = ("failed", "timed_out", 2)
    for i in range(2):  # a job's own timeout wins over --timeout
        jobs.append({"name": f"patient-{i}", "args": ["sleep", "0.5"], "timeout": "20s"})
        expect[f"patient-{i}"] = ("succeeded", None, 1)
    assert len(jobs) == 200
    results = tmp_path / "results"
    started = time.monotonic()
    proc = batch(corral, "--parallel", "8", "--retries", "1", "--timeout", "0.3s",
                 "--results", str(results), write_jobs(tmp_path / "jobs.jsonl", jobs))
    assert time.monotonic() - started < 60
    assert proc.returncode == 3, proc.stderr

    got = summary(results)
    fates = list(expect.values())
    count = {"succeeded": sum(f[0] == "succeeded" for f in fates),
             "failed": sum(f[0] == "failed" for f in fates)}
    assert got["counts"] == {
        "total": 200, **count,
        "exit_status": sum(f[1] == "exit_status" for f in fates),
        "timed_out": sum(f[1] == "timed_out" for f in fates),
        "error": sum(f[1] == "error" for f in fates),
        "retried": sum(f[2] > 1 for f in fates), "stopped": 0, "not_run": 0}
    assert got["engine"] == "embedded" and got["interrupted"] is None
    assert [j["name"] for j in got["jobs"]] == [j["name"] for j in jobs]  # file order
    for job in got["jobs"]:
        assert (job["status"], job["reason"], job["attempts"]) == expect[job["name"]], job
        assert sorted(os.listdir(results / job["name"])) == ["result.json", "stderr", "stdout"]

    one = result(results, "exit-3")
    assert one["exit_status"] == 4 and one["id"] and one["started_at"] and one["exited_at"]
    assert one["duration"] > 0 and one["job"]["args"][0] == "/bin/sh"
    assert [a["exit_status"] for a in one["earlier_attempts"]] == [4]
    assert (results / "exit-3" / "stdout").read_text() == "out-3\n"
    assert (results / "exit-3" / "stderr").read_text() == "err-3\n"
    assert (results / "flaky-2" / "stdout").read_text() == "second\n"
    slow = result(results, "slow-1")
    assert slow["timed_out"] and slow["exit_status"] == 137 and slow["job"]["limits"]["time"] == 0.3
    assert result(results, "patient-0")["job"]["limits"]["time"] == 20
    missing = result(results, "missing-1")
    assert "/no/such/command-1" in missing["error"] and missing["exit_status"] is None
    assert isinstance(result(results, "ok-0")["peak_memory"], int)

    # The terminal summary names every failed job (20 rows at most) with its result.
    assert "200 jobs in" in proc.stdout and f"{count['succeeded']} succeeded" in proc.stdout
    assert re.search(r"missing-0\s+1\s+\S+ s\s+error: .*command-0", proc.stdout)
    assert re.search(r"slow-0\s+2\s+\S+ s\s+timed out \(exit 137\)", proc.stdout)
    assert f"... and {count['failed'] - 20} more" in proc.stdout


# ---- Ctrl-C ----


def test_sigint_mid_batch_leaves_nothing(corral, tmp_path, rootfs_template):
    """SIGINT while jobs run (host-root and overlay-root ones): exit 130, every container,
    overlay, cgroup, mount and state dir gone (the _no_leaks fixture checks the host),
    finished jobs' results and the summary written."""
    jobs = [{"name": f"quick-{i}", "args": ["true"]} for i in range(4)]
    jobs += [{"name": f"long-{i}", "args": ["sleep", "60"]} for i in range(10)]
    jobs += [{"name": f"overlay-{i}", "args": ["sh", "-c", "echo x > /written; sleep 60"],
              "root": rootfs_template} for i in range(10)]
    jobs.sort(key=lambda j: (not j["name"].startswith("quick"), j["name"][-1]))
    results = tmp_path / "results"
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*CORRAL, "--root", corral.root, "batch", "--cgroup-parent", CGROUP_PARENT,
             "--parallel", "4", "--results", str(results),
             write_jobs(tmp_path / "jobs.jsonl", jobs)],
            stdout=subprocess.PIPE, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while not (err.read_text().count("exit 0") == 4 and running(corral.root) == 4):
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        time.sleep(0.2)  # let them reach their sleep
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.read_text()
    assert "SIGINT: stopping 4 running jobs" in err.read_text()
    assert "interrupted (SIGINT): 4 stopped, 16 not run" in out.decode()
    got = summary(results)
    assert got["interrupted"] == "SIGINT"
    assert got["counts"]["succeeded"] == 4 and got["counts"]["stopped"] == 4
    assert sorted(os.listdir(results)) == sorted(["summary.json"] +
                                                 [f"quick-{i}" for i in range(4)])
    assert os.listdir(corral.root) == []  # no container, no job work dir (overlay upper)
    assert not (tmp_path / "rootfs" / "written").exists()
    assert not os.path.exists(os.path.join(rootfs_template, "written"))


def running(root: str) -> int:
    """Containers in the state root whose init runs."""
    count = 0
    for cid in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, cid, "state.json")) as f:
                pid = json.load(f).get("pid") or 0
        except (OSError, ValueError):
            continue
        count += pid > 0 and os.path.exists(f"/proc/{pid}")
    return count


# ---- output ----


def test_plain_lines_when_not_a_terminal(corral, tmp_path):
    jobs = [{"name": "good", "args": ["true"]}, {"name": "bad", "args": "exit 5"},
            {"name": "gone", "args": ["no-such-program"]}]
    proc = batch(corral, "--retries", "1", write_jobs(tmp_path / "jobs.jsonl", jobs))
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert re.fullmatch(r"job good: exit 0 in \d+\.\d\d s", _line(lines, "job good"))
    assert re.fullmatch(r"job bad: exit 5 in \d+\.\d\d s; trying again \(attempt 2 of 2\)",
                        _line(lines, "job bad: exit 5 in", "trying"))
    assert re.fullmatch(r"job bad: exit 5 in \d+\.\d\d s \(attempt 2\)",
                        _line(lines, "job bad", "(attempt 2)"))
    assert re.fullmatch(r'job gone: error: exec: "no-such-program": .* in \d+\.\d\d s',
                        _line(lines, "job gone"))
    assert len(lines) == 4 and "\r" not in proc.stderr and "\x1b" not in proc.stderr
    assert proc.stdout.startswith("3 jobs in ")

    quiet = batch(corral, "--quiet", write_jobs(tmp_path / "jobs.jsonl", jobs))
    assert quiet.returncode == 3 and quiet.stdout == ""
    assert sorted(line.split(":")[0] for line in quiet.stderr.splitlines()) == ["job bad",
                                                                              "job gone"]


def _line(lines: list[str], start: str, contains: str = "") -> str:
    found = [line for line in lines if line.startswith(start) and contains in line]
    assert len(found) == 1, lines
    return found[0]


def test_progress_bar_on_a_terminal(corral, tmp_path):
    jobs = [{"name": f"j{i}", "args": ["sleep", "0.3"]} for i in range(4)]
    jobs.append({"name": "bad", "args": "exit 2"})
    master, slave = pty.openpty()
    try:
        out = tmp_path / "out"
        with open(out, "wb") as stdout:
            proc = subprocess.run([*CORRAL, "--root", corral.root, "batch", "--cgroup-parent",
                                   CGROUP_PARENT, "--parallel", "2",
                                   write_jobs(tmp_path / "jobs.jsonl", jobs)],
                                  stdout=stdout, stderr=slave, timeout=60)
        os.close(slave)
        slave = -1
        screen = _read_all(master)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 3
    assert "\r\x1b[K[" in screen and "5/5 done  1 failed  0 running" in screen
    assert re.search(r"0/5 done  0 failed  \d running  \S+ s  ETA --", screen)
    assert re.search(r"ETA \d+\.\d\d s", screen)
    assert re.search(r"\r\x1b\[Kjob bad: exit 2 in \S+ s\r?\n", screen)  # above the bar
    assert "job j0" not in screen  # successes only move the bar
    assert out.read_text().startswith("5 jobs in ")


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


# ---- bad input ----


@pytest.mark.parametrize("content, suffix, message", [
    ('{"args": ["true"]}\n{"args": ["true"], "limits": {"memory": "12Q"}}\n', "jsonl",
     r"jobs\.jsonl line 2: limits\.memory: '12Q' is not a size"),
    ('{"args": ["true"]}\n{"args": \n', "jsonl", r"jobs\.jsonl line 2: invalid JSON"),
    ('[[job]]\nname = "a"\nargs = ["true"]\nmounts = ["/no/such/dir:/x"]\n', "toml",
     r"jobs\.toml job 1 \(a\): mounts\[0\]\.source: /no/such/dir does not exist"),
    ('[[job]]\nargs = ["true"]\nlimits = { time = "5 parsecs" }\n', "toml",
     r"jobs\.toml job 1: limits\.time: '5 parsecs' is not a duration"),
    ('[[job]]\nargs = ["true"]\nretries = -1\n', "toml", r"job 1: retries: -1 is not a count"),
])
def test_invalid_jobs_file_is_one_error_line(corral, tmp_path, content, suffix, message):
    path = tmp_path / f"jobs.{suffix}"
    path.write_text(content)
    results = tmp_path / "results"
    proc = batch(corral, "--results", str(results), str(path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and re.search(message, proc.stderr), proc.stderr
    assert not results.exists()


@pytest.mark.parametrize("flags, message", [
    (["--parallel", "0"], "--parallel: 0 must be at least 1"),
    (["--parallel", "many"], "--parallel takes a number"),
    (["--timeout", "5x"], "--timeout: '5x' is not a duration"),
    (["--retries", "-2"], "--retries: -2 must be 0 or more"),
    (["--socket", "/nonexistent/supervise.sock"], "cannot reach corral supervise at "
                                                  "/nonexistent/supervise.sock"),
    (["--socket", "/x.sock", "--cgroup-parent", "x"], "--cgroup-parent: is for the embedded"),
])
def test_bad_flags(corral, tmp_path, flags, message):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"args": ["true"]}])
    proc = corral("batch", *flags, jobs, check=False)
    assert proc.returncode == 1 and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_results_dir_must_be_new_or_empty(corral, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"name": "a", "args": ["true"]}])
    results = tmp_path / "results"
    assert batch(corral, "--results", str(results), jobs).returncode == 0
    again = batch(corral, "--results", str(results), jobs)
    assert again.returncode == 1 and f"--results: {results} is not empty" in again.stderr
    clash = write_jobs(tmp_path / "clash.jsonl", [{"name": "summary.json", "args": ["true"]}])
    proc = batch(corral, "--results", str(tmp_path / "new"), clash)
    assert proc.returncode == 1 and "would clash" in proc.stderr


# ---- engines ----


def test_batch_through_a_running_daemon(tmp_path, _no_leaks):
    """With a daemon on the root's socket, the batch is its client (no engine of its own);
    --socket names one explicitly."""
    from tests.test_supervise import shutdown

    daemon = Daemon(str(tmp_path / "state")).start()
    try:
        corral = Corral(daemon.root)
        jobs = write_jobs(tmp_path / "jobs.jsonl", [
            {"name": "hello", "args": "echo hello; exit 0"},
            {"name": "bad", "args": "exit 4"},
            {"name": "gone", "args": ["no-such-program"]},
            {"name": "slow", "args": ["sleep", "30"], "timeout": "0.2s"}])
        for extra in ([], ["--socket", daemon.socket]):
            results = tmp_path / f"results{len(extra)}"
            proc = corral("batch", "--parallel", "4", "--results", str(results), *extra, jobs,
                          check=False)
            assert proc.returncode == 3, proc.stderr
            got = summary(results)
            assert (got["engine"], got["socket"]) == ("daemon", daemon.socket)
            assert {j["name"]: j["reason"] for j in got["jobs"]} == {
                "hello": None, "bad": "exit_status", "gone": "error", "slow": "timed_out"}
            assert (results / "hello" / "stdout").read_text() == "hello\n"
        assert daemon.client().call("list") in ([], None)  # every container deleted
    finally:
        shutdown(daemon)
