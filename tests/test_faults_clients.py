"""Faults from the daemon's clients and containers (issue 17): clients that read nothing,
containers that flood their stdout, fork thousands of children or ignore SIGTERM, and
malformed API input.  Each against the real daemon; docs/architecture.md, "Promises under
faults", says what each checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest

from tests.conftest import CGROUP_PARENT, Corral, cgroup_dirs
from tests.supervisor_fixture import ApiError, Client, Daemon
from tests.test_supervise import shutdown


def start(tmp_path, rootfs: str, *flags: str) -> Daemon:
    d = Daemon(str(tmp_path / "state"), *flags).start()
    d.rootfs = rootfs
    return d


def run(client: Client, d: Daemon, cid: str, args: list[str], **process) -> dict:
    return client.call("run", id=cid, config=d.config(d.rootfs, args, cid, **process))


def status_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status size (VmRSS: resident now, VmHWM: the peak resident)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def open_sockets(pid: int) -> int:
    """How many sockets ``pid`` holds (a client's connection is one)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass
    return count


def eventually(check, timeout: float = 60, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def log_lines(d: Daemon, needle: str) -> list[str]:
    with open(d.log) as f:
        return [line for line in f if needle in line]


def read_to_end(client: Client) -> list[dict]:
    """Every message left on a connection, to its EOF."""
    out = []
    while True:
        line = client.file.readline()
        if not line:
            return out
        out.append(json.loads(line))


def timed_version(client: Client) -> float:
    started = time.monotonic()
    assert client.call("version")["api"] == 1
    return time.monotonic() - started


# ---- a client that reads nothing ----


def test_a_stuck_event_client_is_dropped_with_a_reason_and_slows_nobody(
        tmp_path, rootfs_template, _no_leaks):
    d = start(tmp_path, rootfs_template, "--send-timeout", "3")
    try:
        daemon_pid = d.proc.pid
        baseline_fds = open_sockets(daemon_pid)
        stuck = d.client()
        for _ in range(60):  # every event 60 times on its socket: it fills in a few
            stuck.send("events")
        healthy = d.client()
        hid = healthy.send("events")
        c = d.client()
        time.sleep(0.5)  # the subscriptions are in (they answer nothing until an event)
        slowest = 0.0
        for i in range(12):
            run(c, d, f"e{i}", ["true"])
            assert c.call("wait", id=f"e{i}")["exitStatus"] == 0
            c.call("delete", id=f"e{i}")
            slowest = max(slowest, timed_version(c))
        # The healthy subscriber saw every event, in order, while the stuck one sat there.
        seen = []
        while len(seen) < 48:
            msg = healthy.message()
            assert msg["id"] == hid and "stream" in msg, msg
            seen.append((msg["stream"]["type"], msg["stream"]["id"]))
        assert seen == [(kind, f"e{i}") for i in range(12)
                        for kind in ("created", "started", "exited", "deleted")]
        assert slowest < 10, f"a version call took {slowest:.1f} s beside a stuck client"
        # The stuck client: dropped after the send timeout, the daemon says why ...
        eventually(lambda: log_lines(d, "dropped: the client read nothing"), 60,
                   "the stuck client dropped")
        [line] = log_lines(d, "dropped: the client read nothing")
        assert f"pid {os.getpid()}" in line, line
        # ... and so does the client, once it reads: what was sent, whole, then the reason.
        got = read_to_end(stuck)
        assert got[-1]["id"] is None and got[-1]["error"]["type"] == "TooSlow", got[-1]
        assert "read nothing for 3 s" in got[-1]["error"]["message"]
        assert got[:-1] and all("stream" in m for m in got[:-1])
        stuck.close()
        # Nothing of it is left in the daemon; the healthy one still gets events.
        eventually(lambda: open_sockets(daemon_pid) <= baseline_fds + 2, 30,
                   f"the socket closed ({open_sockets(daemon_pid)} > {baseline_fds} + 2)")
        run(c, d, "after", ["true"])
        assert healthy.message()["stream"]["type"] == "created"
        c.call("wait", id="after")
        c.call("delete", id="after")
        for client in (healthy, c):
            client.close()
    finally:
        shutdown(d)


def test_stuck_log_followers_are_dropped_and_the_daemon_stays_small(
        tmp_path, rootfs_template, _no_leaks):
    d = start(tmp_path, rootfs_template, "--send-timeout", "3", "--log-max-size", "1M")
    try:
        daemon_pid = d.proc.pid
        c = d.client()
        # ~4 MB/s of text for as long as it runs
        run(c, d, "chatty", ["sh", "-c", "while :; do head -c 100000 /dev/zero | tr '\\0' a; "
                                         "echo; sleep 0.02; done"])
        time.sleep(0.5)
        baseline_fds = open_sockets(daemon_pid)
        rss_before = status_kib(daemon_pid, "VmRSS")
        stuck = []
        for _ in range(10):
            s = d.client()
            s.send("logs", id="chatty", follow=True)
            stuck.append(s)
        healthy = d.client()
        hid = healthy.send("logs", id="chatty", follow=True)
        got, slowest, peak = 0, 0.0, 0
        end = time.monotonic() + 2.5  # within the send timeout: none dropped yet
        while time.monotonic() < end:
            msg = healthy.message()
            assert msg["id"] == hid and "stream" in msg, msg
            got += len(msg["stream"]["data"])
            peak = max(peak, status_kib(daemon_pid, "VmRSS"))
        slowest = max(timed_version(c) for _ in range(3))
        assert got > 1_000_000, f"the healthy follower got only {got} bytes beside stuck ones"
        assert slowest < 10, f"a version call took {slowest:.1f} s beside stuck clients"
        # each stuck follower holds at most a message or two: no growth with their backlog
        assert peak - rss_before < 32 * 1024, (rss_before, peak)
        eventually(lambda: len(log_lines(d, "dropped: the client read nothing")) == 10, 60,
                   "the 10 stuck followers dropped")
        for s in stuck:  # never read: closed once the daemon gave up telling them why
            s.close()
        healthy.close()
        eventually(lambda: open_sockets(daemon_pid) <= baseline_fds, 60, "their sockets closed")
        c.call("delete", id="chatty", force=True)
        c.close()
    finally:
        shutdown(d)


# ---- containers that flood, fork and ignore SIGTERM ----

GIB = 1 << 30


def test_a_gibibyte_of_stdout_keeps_the_log_cap_and_memory(tmp_path, rootfs_template, _no_leaks):
    d = start(tmp_path, rootfs_template, "--log-max-size", "4M", "--log-max-files", "2")
    try:
        keeper = d.keeper_pid()
        c = d.client()
        peaks = {pid: status_kib(pid, "VmHWM") for pid in (d.proc.pid, keeper)}
        run(c, d, "flood", ["sh", "-c", f"head -c {GIB} /dev/zero; echo end; exit 3"])
        # While it floods, the daemon and the keeper serve the others.
        other = d.client()
        run(other, d, "quiet", ["sh", "-c", "echo hi; exit 5"])
        assert other.call("wait", id="quiet")["exitStatus"] == 5
        assert "".join(i["data"] for i in logs(other, "quiet")) == "hi\n"
        # A log read while it floods ends, with at most the cap (and what came meanwhile).
        during = sum(len(i["data"]) for i in logs(other, "flood"))
        assert during <= 3 * (4 << 20) + (8 << 20), during
        assert c.call("wait", id="flood")["exitStatus"] == 3
        directory = os.path.join(d.root, "flood")
        files = sorted(f for f in os.listdir(directory) if f.startswith("stdout.log"))
        assert files == ["stdout.log", "stdout.log.1", "stdout.log.2"], files
        sizes = [os.path.getsize(os.path.join(directory, f)) for f in files]
        assert all(0 < size <= 4 << 20 for size in sizes), sizes
        kept = logs(c, "flood", stream="stdout")
        text = "".join(i["data"] for i in kept)
        assert len(text) == sum(sizes) and text.endswith("\0" * 100 + "end\n")
        for pid, before in peaks.items():  # 1 GiB went through the keeper: none of it stayed
            assert status_kib(pid, "VmHWM") - before < 16 * 1024, (pid, before)
        for cid in ("flood", "quiet"):
            c.call("delete", id=cid)
        other.close()
        c.close()
    finally:
        shutdown(d)


def logs(client: Client, cid: str, **params) -> list[dict]:
    items: list = []
    client.reply(client.send("logs", id=cid, **params), items)
    return items


def test_an_exit_is_reported_while_a_leftover_child_floods_the_pipe(
        tmp_path, rootfs_template, _no_leaks):
    """The init exits and a child it left (no pid namespace: it lives on) writes without end
    into the same stdout: the keeper relays what the pipe held and reports the exit, it does
    not chase the writer."""
    d = start(tmp_path, rootfs_template, "--log-max-size", "1M")
    try:
        c = d.client()
        config = d.config(d.rootfs, ["sh", "-c", "for i in 1 2 3 4; do dd if=/dev/zero bs=1M 2>/dev/null & done; "
                                                 "sleep 0.5; exit 4"], "leftover")
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "pid"]
        c.call("run", id="leftover", config=config)
        other = d.client()
        assert c.call("wait", id="leftover")["exitStatus"] == 4
        run(other, d, "next", ["true"])  # the keeper is free for the others
        assert other.call("wait", id="next")["exitStatus"] == 0
        c.call("delete", id="leftover", force=True)
        other.call("delete", id="next")
        other.close()
        c.close()
    finally:
        shutdown(d)
