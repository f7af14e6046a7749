"""Faults from the daemon's clients and containers (issue 17): clients that read nothing,
containers that flood their stdout, fork thousands of children or ignore SIGTERM, and
malformed API input.  Each against the real daemon; docs/architecture.md, "Promises under
faults", says what each checks."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from corral.supervisor.api import METHODS
from corral.supervisor.server import MAX_MESSAGE
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
    d = start(tmp_path, rootfs_template, "--send-timeout", "8", "--log-max-size", "1M")
    try:
        daemon_pid = d.proc.pid
        c = d.client()
        # ~4 MB/s of text for as long as it runs, and a mark when asked (SIGUSR1)
        run(c, d, "chatty", ["sh", "-c", "trap 'echo MARK' USR1; while :; do "
                                         "head -c 100000 /dev/zero | tr '\\0' a; echo; "
                                         "sleep 0.02; done"])
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
        peak, tail = 0, ""
        end = time.monotonic() + 1.5  # the stuck ones' sockets are full by then
        while time.monotonic() < end:
            msg = healthy.message()
            assert msg["id"] == hid and "stream" in msg, msg
            peak = max(peak, status_kib(daemon_pid, "VmRSS"))
        # What the container writes now reaches the healthy follower, beside the stuck.
        c.call("kill", id="chatty", signal="USR1")
        marked = time.monotonic() + 60
        while "MARK" not in tail:
            assert time.monotonic() < marked, "the mark never reached the healthy follower"
            tail = tail[-4:] + healthy.message()["stream"]["data"]
            peak = max(peak, status_kib(daemon_pid, "VmRSS"))
        slowest = max(timed_version(c) for _ in range(3))
        assert not log_lines(d, "dropped"), "a stuck follower dropped before the mark came"
        assert slowest < 5, f"a version call took {slowest:.1f} s beside stuck clients"
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


def test_a_slow_reader_is_not_a_stuck_one(tmp_path, rootfs_template, _no_leaks):
    """The send timeout counts time without progress: a client taking a little now and
    then of one long message (64 KiB of NULs: 384 KiB of JSON), over several timeouts,
    gets all of it."""
    d = start(tmp_path, rootfs_template, "--send-timeout", "2")
    try:
        c = d.client()
        run(c, d, "big", ["head", "-c", "65536", "/dev/zero"])
        c.call("wait", id="big")
        slow = d.client()
        rid = slow.send("logs", id="big")
        data, began = b"", time.monotonic()
        end = json.dumps({"id": rid, "result": {}}, separators=(",", ":")).encode() + b"\n"
        while not data.endswith(end):
            time.sleep(0.3)  # ~50 KB/s: the daemon waits on a full socket between reads
            chunk = slow.file.read1(16 * 1024)
            assert chunk, "the daemon closed the connection"
            data += chunk
        assert time.monotonic() - began > 4  # longer than two send timeouts
        items = [json.loads(line) for line in data.splitlines()]
        assert "".join(m["stream"]["data"] for m in items[:-1]) == "\0" * 65536
        assert not log_lines(d, "dropped")
        slow.close()
        c.call("delete", id="big")
        c.close()
    finally:
        shutdown(d)


async def test_an_event_subscriber_that_falls_behind_is_told_so():
    """The bus behind the events method: an emit never waits for a subscriber; one more than
    EVENT_BUFFER behind gets what it had queued, then TooSlow; a reading one gets all."""
    import trio

    from corral.errors import TooSlow
    from corral.supervisor import api
    from corral.supervisor.event_bus import EVENT_BUFFER, EventBus

    bus = EventBus()  # what m_events uses of the engine: subscribe()
    release = trio.Event()
    slow_got, fast_got, outcome = [], [], {}

    async def stuck_emit(item) -> None:
        await release.wait()  # a client reading nothing, for now
        slow_got.append(item["id"])

    async def slow() -> None:
        with pytest.raises(TooSlow) as caught:
            await api.m_events(bus, {}, stuck_emit)
        outcome["error"] = str(caught.value)

    async def fast() -> None:
        async with bus.subscribe() as events:
            async for event in events:
                fast_got.append(event["id"])
                if len(fast_got) == EVENT_BUFFER + 100:
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        nursery.start_soon(fast)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(EVENT_BUFFER + 100):
            bus.emit("created", f"c{i}")
            await trio.sleep(0)  # the fast subscriber reads meanwhile
        release.set()
    everything = [f"c{i}" for i in range(EVENT_BUFFER + 100)]
    assert fast_got == everything
    assert slow_got == everything[:EVENT_BUFFER + 1]  # one in its emit, a full buffer
    assert f"fell more than {EVENT_BUFFER} events behind" in outcome["error"]


def test_a_cancelled_stream_never_garbles_the_connection(tmp_path, rootfs_template, _no_leaks):
    """A stream cancelled while one of its messages is half-sent (the client reads slowly):
    the message is finished, every line stays whole, and the connection goes on."""
    d = start(tmp_path, rootfs_template)
    try:
        c = d.client()
        run(c, d, "lines", ["sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' a; echo; "
                                        "sleep 1000"])
        log = os.path.join(d.root, "lines", "stdout.log")
        eventually(lambda: os.path.exists(log) and os.path.getsize(log) >= 8_000_000, 60,
                   "the log written")
        for _ in range(5):
            rid = c.send("logs", id="lines", follow=True)
            first = c.message()  # one 64 KiB chunk; more follow, into a full socket
            assert first["id"] == rid and "stream" in first
            time.sleep(0.2)
            cancel = c.send("cancel", request=rid)
            answers = {}
            while len(answers) < 2:
                msg = c.message()  # json.loads of each line: a garbled one fails here
                if "stream" not in msg:
                    answers[msg["id"]] = msg
            assert answers[cancel]["result"] == {"cancelled": True}
            assert answers[rid]["error"]["type"] == "RequestCancelled"
        assert c.call("version")["api"] == 1
        c.call("delete", id="lines", force=True)
        c.close()
    finally:
        shutdown(d)


def test_a_stuck_client_does_not_hold_up_the_daemons_stop(tmp_path, rootfs_template, _no_leaks):
    """The daemon stops at once beside a client stuck in the middle of a message (the send
    timeout is for the client, not for the daemon's stop)."""
    d = start(tmp_path, rootfs_template)  # the default send timeout: 30 s
    try:
        c = d.client()
        run(c, d, "big", ["sh", "-c", "head -c 4000000 /dev/zero | tr '\\0' a; exit 0"])
        c.call("wait", id="big")
        stuck = d.client()
        stuck.send("logs", id="big")  # 4 MB it never reads
        time.sleep(0.5)
        began = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - began < 15
        stuck.close()
        d.start()  # again, for the clean-up
        c.close()
    finally:
        shutdown(d)


# ---- containers that flood, fork and ignore SIGTERM ----

GIB = 1 << 30


def test_a_gibibyte_of_stdout_keeps_the_log_cap_and_memory(tmp_path, rootfs_template, _no_leaks):
    """The documented cap, the default one: files of 8 MiB, one rotation kept."""
    d = start(tmp_path, rootfs_template)
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
        assert during <= 2 * (8 << 20) + (8 << 20), during
        assert c.call("wait", id="flood")["exitStatus"] == 3
        directory = os.path.join(d.root, "flood")
        files = sorted(f for f in os.listdir(directory) if f.startswith("stdout.log"))
        assert files == ["stdout.log", "stdout.log.1"], files
        sizes = [os.path.getsize(os.path.join(directory, f)) for f in files]
        assert all(0 < size <= 8 << 20 for size in sizes), sizes
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


def cgroup_procs(cid: str) -> list[int]:
    """The processes in the container's cgroup (its pids hierarchy; [] once removed)."""
    pids = []
    for path in cgroup_dirs():
        if path.endswith(f"/{CGROUP_PARENT}/{cid}"):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids += [int(p) for p in f.read().split()]
            except FileNotFoundError:
                pass
    return sorted(set(pids))


def children_of(pid: int) -> set[int]:
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return found


def without_pid_namespace(config: dict) -> dict:
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "pid"]
    return config


FORKS = 2000


@pytest.mark.parametrize("pid_ns", [True, False], ids=["own-pid-ns", "host-pid-ns"])
def test_thousands_of_children_and_an_exit(tmp_path, rootfs_template, _no_leaks, pid_ns):
    """The init forks thousands of children and exits.  In its own pid namespace they die
    with it; in the host's they are reparented to the keeper (a subreaper), and delete kills
    and the keeper reaps every one."""
    d = start(tmp_path, rootfs_template)
    try:
        keeper = d.keeper_pid()
        c = d.client()
        script = (f"i=0; while [ $i -lt {FORKS} ]; do sleep 600 & i=$((i+1)); done; "
                  f"echo forked; exit 7")
        config = d.config(d.rootfs, ["sh", "-c", script], "forker")
        if not pid_ns:
            without_pid_namespace(config)
        c.call("run", id="forker", config=config)
        assert c.call("wait", id="forker")["exitStatus"] == 7
        state = c.call("state", id="forker")
        assert (state["status"], state["exitStatus"]) == ("stopped", 7)
        assert "".join(i["data"] for i in logs(c, "forker")) == "forked\n"
        left = cgroup_procs("forker")
        if pid_ns:
            assert left == []  # the kernel killed the namespace with its init
        else:
            assert len(left) == FORKS  # alive, the keeper's children now
            assert set(left) <= children_of(keeper)
        c.call("delete", id="forker")
        assert cgroup_procs("forker") == []
        # every one reaped: the keeper has no child but its spawner, and no zombie
        eventually(lambda: len(children_of(keeper)) <= 1, 60, "the keeper reaped them all")
        run(c, d, "after", ["sh", "-c", "exit 2"])  # and it goes on keeping statuses
        assert c.call("wait", id="after")["exitStatus"] == 2
        c.call("delete", id="after")
        c.close()
    finally:
        shutdown(d)


STUBBORN = ("trap '' TERM; for i in 1 2 3; do sh -c \"trap '' TERM; while :; do sleep 1; done\" & "
            "done; echo ready; while :; do sleep 1; done")


def wait_for_log(client: Client, cid: str, text: str) -> None:
    eventually(lambda: text in "".join(i["data"] for i in logs(client, cid)), 30,
               f"{text!r} in the logs of {cid}")


@pytest.mark.parametrize("case", ["own-pid-ns", "host-pid-ns", "paused"])
def test_stop_escalates_to_sigkill_after_the_grace(tmp_path, rootfs_template, _no_leaks, case):
    """An init and its children that ignore SIGTERM (in a paused container too): SIGKILL to
    every one of them after the grace, not before; the others are served meanwhile."""
    d = start(tmp_path, rootfs_template)
    try:
        c = d.client()
        config = d.config(d.rootfs, ["sh", "-c", STUBBORN], "stubborn")
        if case == "host-pid-ns":
            without_pid_namespace(config)
        c.call("run", id="stubborn", config=config)
        wait_for_log(c, "stubborn", "ready")
        assert len(cgroup_procs("stubborn")) >= 4
        if case == "paused":
            Corral(d.root)("pause", "stubborn")
            assert c.call("state", id="stubborn")["status"] == "paused"
        other = d.client()
        began = time.monotonic()
        rid = c.send("stop", id="stubborn", grace=2)
        slowest = max(timed_version(other) for _ in range(5))
        assert c.reply(rid) == {"exitStatus": 137}
        took = time.monotonic() - began
        assert took >= 2, took
        assert slowest < 1.5, f"a version call took {slowest:.1f} s during the grace"
        assert cgroup_procs("stubborn") == []
        c.call("delete", id="stubborn")
        other.close()
        c.close()
    finally:
        shutdown(d)


def test_stop_of_a_command_line_container_waits_the_grace(tmp_path, rootfs_template,
                                                          make_bundle, _no_leaks):
    """A container the command line made (the daemon does not watch its pidfd): the grace
    is waited for all the same before the SIGKILL."""
    d = start(tmp_path, rootfs_template)
    try:
        b = make_bundle(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
        cli = Corral(d.root)
        cli("run", "-d", "-b", b.path, b.id)
        pid = cli.state(b.id)["pid"]
        c = d.client()
        began = time.monotonic()
        assert c.call("stop", id=b.id, grace=1.5) == {"exitStatus": None}  # nobody knows it
        assert time.monotonic() - began >= 1.5
        os.waitpid(pid, 0)  # ours: the command line's containers are the test's children
        assert c.call("state", id=b.id)["status"] == "stopped"
        c.call("delete", id=b.id)
        c.close()
    finally:
        shutdown(d)


def test_a_job_past_its_time_limit_that_ignores_sigterm(tmp_path, rootfs_template, _no_leaks):
    """The time limit's stop: SIGTERM, then SIGKILL after the engine's stop grace (2 s)."""
    d = start(tmp_path, rootfs_template)
    try:
        c = d.client()
        began = time.monotonic()
        c.call("run", id="late", job={"args": ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
                                      "limits": {"time": 1}})
        result = c.call("wait", id="late")
        took = time.monotonic() - began
        assert (result["exitStatus"], result["timedOut"]) == (137, True), result
        assert took >= 3, took
        c.call("delete", id="late")
        c.close()
    finally:
        shutdown(d)


# ---- malformed API input (last: one daemon for the module, torn down at its end) ----


# What a bad request may be answered with (docs/api.md, "Errors"); never InternalError.
ERRORS = {"ParseError", "BadRequest", "UnknownMethod", "ConfigError", "ContainerNotFound",
          "ContainerStateError", "ContainerExists", "NotSupportedError", "OSError"}
# Every method but the two that could make something (create and run: their fuzzing is
# the config parser's, tests/test_oci_config.py) and the one that never ends (events).
FUZZED = sorted(set(METHODS) - {"create", "run", "events"})
PARAMS = ("id", "signal", "all", "grace", "force", "timeout", "stream", "follow", "args",
          "process", "env", "cwd", "user", "request", "bundle", "config", "job", "logs")
VICTIM = "fuzz-victim-3f9c1d"  # an id no example can hit

scalars = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
           | st.floats(allow_nan=False) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
TARGET = "fuzz-target"  # a stopped container the examples may aim at (and delete)
params = st.builds(lambda aimed, other: {**other, **aimed},
                   st.fixed_dictionaries({}, optional={"id": st.just(TARGET) | values}),
                   st.dictionaries(st.sampled_from(PARAMS) | st.text(max_size=6), values,
                                   max_size=5))
methods = st.sampled_from(FUZZED)
requests = st.fixed_dictionaries(
    {"method": st.one_of(methods, methods, methods, st.text(max_size=12), values)},
    optional={"id": values, "params": params | params | values})
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, rootfs_template):
    """One daemon for every example, with one container running throughout: it must still
    be running, and the daemon never have logged an internal error, when they are done."""
    d = Daemon(str(tmp_path_factory.mktemp("fuzz") / "state")).start()
    d.rootfs = rootfs_template
    c = d.client()
    pid = run(c, d, VICTIM, ["sleep", "1000"])["pid"]
    d.conn = c
    try:
        yield d
        assert d.proc.poll() is None, "the daemon died"
        state = c.call("state", id=VICTIM)
        assert (state["status"], state["pid"]) == ("running", pid)
        assert not log_lines(d, "internal error")
    finally:
        c.close()
        shutdown(d)
        assert not cgroup_dirs()


class Answers:
    """A connection that sends one line, then a sentinel request, and collects what comes
    back until the sentinel is answered and the line's own answer (if due) has come."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.client = d.client()
        self.count = 0

    def ask(self, line: bytes) -> list[dict]:
        """The line's answers (streamed items aside: a ``logs`` of the target has some)."""
        self.count += 1
        sentinel = f"sentinel-{self.count}"
        self.client.file.write(line + b"\n" + json.dumps(
            {"id": sentinel, "method": "version"}).encode() + b"\n")
        self.client.file.flush()
        due = 1 if line.strip() else 0
        got, answered = [], False
        while not answered or len(got) < due:
            msg = self.client.message()
            if msg.get("id") == sentinel:
                answered = "result" in msg
                assert answered, msg
            elif "stream" not in msg:
                got.append(msg)
        assert len(got) == due, (line[:200], got)
        return got


@pytest.fixture(scope="module")
def answers(fuzzed):
    a = Answers(fuzzed)
    yield a
    a.client.close()


def ensure_target(d: Daemon) -> None:
    """The stopped container examples aim at, made again when one deleted it."""
    try:
        d.conn.call("state", id=TARGET)
    except ApiError:
        run(d.conn, d, TARGET, ["sh", "-c", "echo done; exit 3"])
        d.conn.call("wait", id=TARGET)


def check_error(msg: dict, kinds: set[str] = ERRORS) -> None:
    error = msg["error"]
    assert error["type"] in kinds, msg
    assert error["message"] and "\n" not in error["message"], msg


@FUZZ
@given(request=requests)
def test_fuzz_requests_each_get_one_answer(answers, request):
    """Wrong types, unknown methods, unknown and ill-typed parameters."""
    ensure_target(answers.d)
    [msg] = answers.ask(json.dumps(request).encode())
    params = request.get("params")
    event(f"{request.get('method')!s:.12} on the target: {msg.get('error', {}).get('type', 'result')}"
          if isinstance(params, dict) and params.get("id") == TARGET else "elsewhere")
    rid = request.get("id")
    assert msg["id"] == (rid if isinstance(rid, (str, int, float, type(None))) else None), msg
    if "error" in msg:
        check_error(msg)
    else:  # an ill-typed parameter a method does not read is no error (as with JSON APIs)
        assert request.get("method") in METHODS and "result" in msg, msg


@FUZZ
@given(line=st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")))
@example(line=b"[" * 100_000)  # nested too deep for the parser's recursion
@example(line=b'{"id": 1, "method": "version", "params": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
@example(line=b"\xff\xfe{}")
@example(line=b'{"id": 1e999, "method": "state", "params": {"id": NaN}}')
def test_fuzz_bytes_each_get_one_error(answers, line):
    for msg in answers.ask(line):
        check_error(msg)


@FUZZ
@given(data=st.data(), request=requests)
def test_fuzz_truncated_requests_are_parse_errors(answers, data, request):
    raw = json.dumps(request).encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    for msg in answers.ask(raw[:cut]):
        assert msg["id"] is None
        check_error(msg, {"ParseError"})


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(MAX_MESSAGE - 4096, MAX_MESSAGE + 4096),
       filler=st.sampled_from([b"a", b"\\u00e9", b"\xff", b" "]))
def test_fuzz_huge_lines(fuzzed, size, filler):
    """A line up to the 1 MiB limit is read and answered; a longer one is refused (TooLarge)
    and its connection closed; the daemon serves the next connection either way."""
    head = b'{"id": 1, "method": "version", "params": {"x": "'
    tail = b'"}}\n'
    body = filler * max(0, (size - len(head) - len(tail)) // len(filler))
    line = head + body + tail
    c = fuzzed.client()
    try:
        try:
            c.sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading at the limit
        msg = c.message()
        if len(line) <= MAX_MESSAGE:
            if filler == b"\xff":
                check_error(msg, {"ParseError"})
            else:
                assert msg == {"id": 1, "result": msg["result"]} and msg["result"]["api"] == 1
        else:
            check_error(msg, {"TooLarge"})
            with pytest.raises((EOFError, ConnectionResetError)):
                c.message()
    finally:
        c.close()
    assert fuzzed.conn.call("version")["api"] == 1


def test_thousands_of_requests_on_one_connection(fuzzed):
    """5000 requests pipelined on one connection, good and bad mixed, written while the
    answers are read: each is answered once, as it should be, and none is refused Busy."""
    c = fuzzed.client()
    lines, want = [], {}
    for i in range(5000):
        # first 3000 answered by their own tasks only (quick ones: a client pipelining
        # them is slowed, not refused), then every kind mixed
        kind = (0, 1, 3)[i % 3] if i < 3000 else i % 5
        if kind == 0:
            lines.append({"id": i, "method": "version"})
            want[i] = "result"
        elif kind == 1:
            lines.append({"id": i, "method": "state", "params": {"id": f"nope{i}"}})
            want[i] = "ContainerNotFound"
        elif kind == 2:
            lines.append({"id": i, "method": f"no-such-{i}"})
            want[i] = "UnknownMethod"
        elif kind == 3:
            lines.append({"id": i, "method": "wait", "params": {"id": VICTIM, "timeout": 0}})
            want[i] = "ContainerStateError"  # still running after 0 s
        else:
            lines.append(None)  # not JSON: answered with a null id
    payload = b"".join((json.dumps(m).encode() if m is not None else b"{oops") + b"\n"
                       for m in lines)
    writer = threading.Thread(target=c.sock.sendall, args=(payload,))
    writer.start()
    got, nulls = {}, 0
    try:
        while len(got) < len(want) or nulls < 400:
            msg = c.message()
            if msg["id"] is None:
                check_error(msg, {"ParseError"})
                nulls += 1
                continue
            assert msg["id"] not in got, msg
            got[msg["id"]] = "result" if "result" in msg else msg["error"]["type"]
    finally:
        writer.join()
        c.close()
    assert got == want
    assert nulls == 400

