"""corral events: stats (runc's types.Stats shape) and OOM events, against real cgroups."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from corral.cgroups import Cgroup, stats
from corral.errors import ConfigError
from corral.runtime import events as events_mod
from tests.conftest import CORRAL, read_line


def test_parse_duration():
    cases = {"5s": 5.0, "500ms": 0.5, "1m30s": 90.0, "1.5h": 5400.0, "250us": 0.00025,
             "0": 0.0, "2s500ms": 2.5, "100ns": 1e-7}
    for text, want in cases.items():
        assert events_mod.parse_duration(text) == pytest.approx(want), text
    for bad in ("", "5", "s", "1x", "1..2s", "ms5"):
        with pytest.raises(ConfigError, match="^--interval: invalid duration"):
            events_mod.parse_duration(bad)


def _fake_v2(tmp_path, files):
    d = tmp_path / "cg"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return Cgroup("v2", "/cg", {"unified": str(d)}, {"unified": str(tmp_path)}), d


def test_v2_stats_shape(tmp_path):
    cg, _ = _fake_v2(tmp_path, {
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
                    "nr_throttled 1\nthrottled_usec 20\n",
        "memory.current": "4096\n", "memory.max": "max\n", "memory.peak": "8192\n",
        "memory.stat": "anon 1024\nfile 2048\n", "memory.events": "max 3\noom 1\n",
        "pids.current": "2\n", "pids.max": "max\n",
        "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
        "hugetlb.2MB.current": "0\n", "hugetlb.2MB.max": "max\n",
        "hugetlb.2MB.events": "max 0\n",
    })
    s = stats.read(cg)
    assert s["cpu"] == {"usage": {"kernel": 500000, "user": 1000000, "total": 1500000},
                        "throttling": {"periods": 4, "throttled_periods": 1,
                                       "throttled_time": 20000}}
    assert s["memory"]["usage"] == {"limit": stats.MAX_U64, "usage": 4096, "max": 8192,
                                    "failcnt": 3}
    assert s["memory"]["cache"] == 2048 and s["memory"]["raw"] == {"anon": 1024, "file": 2048}
    assert s["pids"] == {"current": 2}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "op": "Read", "value": 100}, {"major": 8, "op": "Write", "value": 200}]
    assert s["hugetlb"] == {"2MB": {"failcnt": 0}}


def test_v2_oom_counter(tmp_path):
    cg, d = _fake_v2(tmp_path, {"memory.events": "low 0\nmax 1\noom 0\noom_kill 0\n"})
    watch = events_mod.OomWatch(cg)
    try:
        assert watch.kind == "v2" and watch.check() == 0
        (d / "memory.events").write_text("low 0\nmax 9\noom 1\noom_kill 1\n")
        assert watch.check() == 1
        assert watch.check() == 0
        (d / "memory.events").write_text("low 0\nmax 9\noom 3\noom_kill 2\n")
        assert watch.check() == 2
    finally:
        watch.close()


def test_stats_once(corral, make_bundle):
    b = make_bundle(["sh", "-c", "sleep 30 & sleep 30"])
    corral("run", "-d", "-b", b.path, b.id)
    proc = corral("events", "--stats", b.id)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "stats" and event["id"] == b.id
    data = event["data"]
    assert {"cpu", "memory", "pids", "blkio", "hugetlb"} <= set(data)
    assert data["pids"]["current"] == 2
    assert data["cpu"]["usage"]["total"] > 0
    assert data["memory"]["usage"]["usage"] > 0 and "limit" in data["memory"]["usage"]


def test_events_refusals(corral, make_bundle):
    proc = corral("events", "--stats", "nope", check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    proc = corral("events", "--interval", "soon", b.id, check=False)
    assert proc.returncode == 1 and "--interval: invalid duration" in proc.stderr
    pid = corral.state(b.id)["pid"]
    corral("kill", b.id, "KILL")
    os.waitpid(pid, 0)
    proc = corral("events", b.id, check=False)
    assert proc.returncode == 1 and "container not running" in proc.stderr


def test_stream_reports_oom_and_ends(corral, make_bundle):
    b = make_bundle(["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo $x"])
    b.config["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    stream = subprocess.Popen([*CORRAL, "--root", corral.root, "events", "--interval", "200ms",
                               b.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        first = json.loads(read_line(stream.stdout, deadline))  # the watch is set up
        assert first["type"] == "stats" and first["id"] == b.id
        corral("start", b.id)
        seen = []
        while True:
            line = read_line(stream.stdout, deadline)
            if not line:
                break
            seen.append(json.loads(line))
        assert stream.wait(5) == 0, stream.stderr.read()
    finally:
        if stream.poll() is None:
            stream.kill()
            stream.wait()
    assert {"type": "oom", "id": b.id} in seen
    assert all(e["type"] in ("stats", "oom") for e in seen)
    os.waitpid(pid, 0)


def test_update_and_events_stay_light(corral, make_bundle, tmp_path):
    from tests.test_cli_startup import HEAVY, imported_by

    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    for argv in (("events", "--stats", b.id), ("update", "--memory", "64m", b.id)):
        code, modules = imported_by(corral, tmp_path, *argv)
        assert code == 0, argv
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
        assert not heavy, f"corral {argv[0]} imported {heavy}"
    corral("kill", b.id, "KILL")
    os.waitpid(pid, 0)
