"""corral pause / resume / ps against real containers, and their grammar."""

from __future__ import annotations

import json
import os
import time

import pytest

from corral.cli import args as cliargs
from corral.errors import ConfigError


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    return raw[raw.rindex(")") + 2]


def _wait_status(corral, cid, want, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        status = corral.state(cid)["status"]
        if status == want or time.monotonic() > end:
            assert status == want
            return
        time.sleep(0.02)


def _reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_grammar():
    args, cmd = cliargs.parse(["ps", "-f", "json", "c1"])
    assert (cmd.name, args.format, args.id, args.ps_args) == ("ps", "json", "c1", [])
    args, _ = cliargs.parse(["ps", "c1", "-o", "pid,comm", "-f"])
    assert (args.format, args.id, args.ps_args) == ("table", "c1", ["-o", "pid,comm", "-f"])
    args, cmd = cliargs.parse(["pause", "c1"])
    assert (cmd.name, args.id) == ("pause", "c1")
    with pytest.raises(ConfigError, match="missing the id argument"):
        cliargs.parse(["resume"])
    with pytest.raises(ConfigError, match="--format must be one of table, json"):
        cliargs.parse(["ps", "--format", "yaml", "c1"])
    assert "[PS_ARGS...]" in cliargs.usage(cliargs.COMMANDS["ps"])


def test_pause_resume_running(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("pause", b.id)
    state = corral.state(b.id)
    assert state["status"] == "paused" and state["pid"] == pid
    assert _proc_state(pid) in "DT"
    assert corral("list", "-f", "json").stdout.count('"paused"') == 1
    again = corral("pause", b.id, check=False)
    assert (again.returncode, again.stderr) == (1, "corral: container not running\n")
    start = corral("start", b.id, check=False)
    assert start.returncode == 1 and "paused" in start.stderr
    corral("resume", b.id)
    assert corral.state(b.id)["status"] == "running"
    assert _proc_state(pid) in "SR"
    again = corral("resume", b.id, check=False)
    assert (again.returncode, again.stderr) == (1, "corral: container not paused\n")
    corral("kill", b.id, "KILL")
    _reap(pid)
    stopped = corral("pause", b.id, check=False)
    assert (stopped.returncode, stopped.stderr) == (1, "corral: container not running\n")
    corral("delete", b.id)


def test_pause_created_then_resume(corral, make_bundle):
    b = make_bundle(["true"])
    corral("create", "-b", b.path, b.id)
    corral("pause", b.id)
    assert corral.state(b.id)["status"] == "paused"
    corral("resume", b.id)
    assert corral.state(b.id)["status"] == "created"
    corral("delete", "--force", b.id)


def test_delete_force_paused(corral, make_bundle):
    b = make_bundle(["sh", "-c", "sleep 30 & sleep 30"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("pause", b.id)
    assert corral("delete", b.id, check=False).returncode == 1  # not stopped
    start = time.monotonic()
    corral("delete", "--force", b.id)
    assert time.monotonic() - start < 3
    _reap(pid)
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_kill_paused_delivers_on_resume(corral, make_bundle):
    b = make_bundle(["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    time.sleep(0.1)  # the trap is set
    corral("pause", b.id)
    corral("kill", b.id, "TERM")
    time.sleep(0.2)
    assert corral.state(b.id)["status"] == "paused"
    corral("resume", b.id)
    _wait_status(corral, b.id, "stopped")
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    corral("delete", b.id)


def test_kill_paused_with_sigkill_thaws(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("pause", b.id)
    corral("kill", b.id, "KILL")
    _wait_status(corral, b.id, "stopped")
    _reap(pid)
    corral("delete", b.id)


def test_ps(corral, make_bundle):
    b = make_bundle(["sh", "-c", "sleep 30 & exec sleep 31"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    deadline = time.monotonic() + 5
    while True:
        pids = json.loads(corral("ps", "--format", "json", b.id).stdout)
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert pid in pids and len(pids) == 2
    assert corral("ps", "-f", "json", b.id).stdout == f"[{','.join(map(str, pids))}]\n"
    table = corral("ps", b.id).stdout.splitlines()
    assert table[0].split()[:3] == ["UID", "PID", "PPID"]
    assert sorted(int(line.split()[1]) for line in table[1:]) == pids
    assert any(line.endswith("sleep 31") for line in table[1:])
    custom = corral("ps", b.id, "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(int(line.split()[0]) for line in custom[1:]) == pids
    bad = corral("ps", b.id, "-o", "comm", check=False)
    assert (bad.returncode, bad.stderr) == (1, "corral: couldn't find PID field in ps output\n")
    corral("kill", b.id, "KILL")
    _reap(pid)
    _wait_status(corral, b.id, "stopped")
    assert corral("ps", "-f", "json", b.id).stdout == "null\n"
    corral("delete", b.id)
    missing = corral("ps", b.id, check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
