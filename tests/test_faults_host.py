"""Issue 17's host faults, injected against the real daemon: its keeper SIGKILLed, the daemon
(and its keeper) killed in a burst of creations, the state root's filesystem full, no
descriptors left, no pids left.  Each checks the promise of docs/architecture.md ("Promises
under faults"): the daemon serves on, every exit status that happened is known after
recovery (or said to be unknown), nothing is left behind, and the client gets one clear
error naming the cause."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.conftest import CGROUP_PARENT, cgroup_dirs
from tests.supervisor_fixture import ApiError, Client, Daemon
from tests.test_supervise import _log_text, _wait_log, daemon, run, shutdown  # noqa: F401


def _until(check, what: str, timeout: float = 60.0, every: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"{what}: not within {timeout} s"
        time.sleep(every)


def _cgroups_of(cid: str) -> list[str]:
    return [d for d in cgroup_dirs() if os.path.basename(d) == cid]


# ---- the keeper SIGKILLed ----


def test_keeper_sigkilled_is_replaced_at_once(daemon, tmp_path):
    """Running containers keep running and logging (the daemon holds their log pipes and
    hands them to the new keeper), statuses before, during and after the gap are known, a
    creation the keeper died in the middle of is undone with one clear error, and the next
    creation works, all without a daemon restart."""
    c = daemon.client()
    run(c, daemon, "early", ["sh", "-c", "exit 3"])
    assert c.call("wait", id="early")["exitStatus"] == 3
    run(c, daemon, "talker", ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"])
    run(c, daemon, "quitter", ["sleep", "300"])
    _wait_log(c, "talker", "tick 1")
    # A creation in flight: its createRuntime hook (on the host) says it is running, then
    # sleeps while the keeper is killed; the creation would otherwise complete.
    flag = tmp_path / "in-hook"
    slow = daemon.config(daemon.rootfs, ["true"], "slow")
    slow["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {flag}; sleep 3"]}]}
    maker = daemon.client()
    rid = maker.send("create", id="slow", config=slow)
    _until(flag.exists, "the creation's hook ran")
    old = daemon.keeper_pid()
    os.kill(old, signal.SIGKILL)
    with pytest.raises(ApiError, match="the keeper process exited during the creation"):
        maker.reply(rid)
    assert not os.path.exists(os.path.join(daemon.root, "slow"))
    assert not _cgroups_of("slow")
    new = _until(lambda: daemon.keeper_pid() != old and daemon.keeper_pid(), "a new keeper")
    assert daemon.proc.poll() is None  # the same daemon
    # the quitter exits after the keeper died: the daemon reaps and records it
    quitter = c.call("state", id="quitter")["pid"]
    assert quitter > 0
    os.kill(quitter, signal.SIGKILL)
    assert c.call("wait", id="quitter", timeout=30)["exitStatus"] == 137
    assert json.load(open(os.path.join(daemon.root, "quitter", "exit.json")))["exitStatus"] == 137
    assert c.call("state", id="early")["exitStatus"] == 3
    # the talker still runs, and its logs go on through the new keeper
    ticks = _log_text(c, "talker").count("tick")
    _until(lambda: _log_text(c, "talker").count("tick") > ticks + 5, "the talker's logs go on")
    assert c.call("state", id="talker")["status"] == "running"
    # new creations work, through the new keeper
    run(c, daemon, "after", ["sh", "-c", "echo hi; exit 4"])
    assert c.call("wait", id="after")["exitStatus"] == 4
    assert _log_text(c, "after") == "hi\n"
    assert daemon.keeper_pid() == new
    c.call("kill", id="talker", signal="KILL")
    assert c.call("wait", id="talker")["exitStatus"] == 137
    for cid in ("early", "quitter", "after", "talker"):
        c.call("delete", id=cid)
    assert c.call("list") == []


# ---- the daemon (and its keeper) killed in a burst of creations ----

BURST = int(os.environ.get("CORRAL_FAULT_BURST", "200"))  # smaller on a slow machine


def _burst(d: Daemon, count: int, width: int = 10) -> tuple[dict, list, threading.Event]:
    """``count`` runs pipelined on ``width`` connections (each in a thread); returns the
    replies as they come (id -> state or error text), the threads, and an event set
    once a quarter of them came."""
    replies: dict = {}
    quarter = threading.Event()

    def worker(k: int) -> None:
        c = d.client()
        sent = {}
        for i in range(k, count, width):
            cid = f"b{i}"
            # a third exit at once, with a status of their own; the rest keep running
            args = ["sh", "-c", f"exit {i % 7 + 1}"] if i % 3 == 0 else ["sleep", "300"]
            sent[c.send("run", id=cid, config=d.config(d.rootfs, args, cid))] = cid
        try:
            for rid, cid in sent.items():
                try:
                    replies[cid] = c.reply(rid)
                except ApiError as exc:
                    replies[cid] = str(exc)
                if len(replies) >= count // 4:
                    quarter.set()
        except (EOFError, OSError, ValueError):
            pass  # the daemon was killed
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(width)]
    for t in threads:
        t.start()
    return replies, threads, quarter


@pytest.mark.parametrize("killed", ["daemon", "daemon-and-keeper"])
def test_killed_in_a_burst_of_creations_then_restarted(daemon, killed):
    """Every container whose creation completed is adopted (running, or stopped with its
    status); every one in flight is gone (state dir, cgroup, processes); none is half
    there.  With the keeper killed too, the statuses of exits nobody could reap are
    reported as unknown (null), never made up."""
    replies, threads, quarter = _burst(daemon, BURST)
    assert quarter.wait(600), f"not even a quarter of {BURST} creations within 600 s"
    if killed == "daemon-and-keeper":
        os.kill(daemon.keeper_pid(), signal.SIGKILL)
    daemon.stop(signal.SIGKILL)
    for t in threads:
        t.join(60)
    made = {cid for cid, r in replies.items() if isinstance(r, dict)}
    failed = {cid: r for cid, r in replies.items() if not isinstance(r, dict)}
    assert not failed, list(failed.items())[:3]  # nothing failed before the kill
    daemon.start()
    c = daemon.client()
    states = {s["id"]: s for s in c.call("list")}
    assert made <= set(states), sorted(made - set(states))[:5]
    for i in range(BURST):
        cid = f"b{i}"
        if cid not in states:  # in flight when the daemon died: not a trace of it
            assert not os.path.exists(os.path.join(daemon.root, cid)), cid
            assert not _cgroups_of(cid), cid
            continue
        state = states[cid]
        if i % 3:
            assert state["status"] in ("created", "running"), state
            assert os.path.exists(f"/proc/{state['pid']}"), state
        elif cid in made:  # started: it exited, with its own status (or an unknown one)
            assert state["status"] == "stopped", state
            if killed == "daemon":
                assert state["exitStatus"] == i % 7 + 1, state
            else:
                assert state["exitStatus"] in (i % 7 + 1, None), state
    assert len(states) >= len(made) and len(made) >= BURST // 4
    # the restarted daemon creates, and every adopted container can be deleted
    run(c, daemon, "after", ["sh", "-c", "exit 9"])
    assert c.call("wait", id="after")["exitStatus"] == 9
    for cid in [*states, "after"]:
        c.call("delete", id=cid, force=True)
    assert c.call("list") == []
    assert not [d for d in cgroup_dirs() if os.path.basename(d).startswith("b")]


# ---- the state root's filesystem full ----


class WrappedDaemon(Daemon):
    """A daemon started by ``sh -c "SETUP && exec corral ... supervise"`` under ``argv``
    (e.g. unshare): what it needs done to it before it runs."""

    def __init__(self, root: str, setup: str, *extra: str, argv: tuple[str, ...] = ()) -> None:
        super().__init__(root, *extra)
        self.setup = setup
        self.argv = argv
        os.makedirs(self.root, exist_ok=True)

    def start(self) -> WrappedDaemon:
        import shlex
        import subprocess

        from tests.conftest import CORRAL, read_line

        command = " ".join(shlex.quote(a) for a in [
            *CORRAL, "--root", self.root, "--log", self.log, "supervise", "--cgroup-parent",
            CGROUP_PARENT, *self.extra])
        self.proc = subprocess.Popen([*self.argv, "sh", "-c", f"{self.setup} && exec {command}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(self.proc.stdout, time.monotonic() + 30)
        assert b"ready on" in line, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        return self


class TmpfsDaemon(WrappedDaemon):
    """A daemon whose --root is a small tmpfs, mounted in a private mount namespace of its
    own (never the host's): the test reaches the root through /proc/<daemon>/root, and the
    API socket lives outside it.  The tmpfs goes with the last process of the namespace."""

    def __init__(self, base: str, size: str) -> None:
        import shlex

        root = os.path.join(base, "state")
        super().__init__(root, f"mount -t tmpfs -o size={size},mode=0711 corral-full "
                               f"{shlex.quote(root)}",
                         "--socket", os.path.join(base, "api.sock"),
                         argv=("unshare", "-m", "--propagation", "private"))
        self.socket = os.path.join(base, "api.sock")

    def path(self, *names: str) -> str:
        """A path of the root as the daemon sees it."""
        return os.path.join(f"/proc/{self.proc.pid}/root", self.root.lstrip("/"), *names)


def _fill(path: str) -> None:
    """Writes ``path`` until the filesystem has no room left."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"x" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc
        try:
            while True:
                f.write(b"x")
        except OSError as exc:
            assert exc.errno == 28, exc


def test_state_root_full(tmp_path, rootfs_template, _no_leaks):
    """A creation fails with one error saying "no space left" and naming a path of the root,
    and leaves nothing; running containers run on (their logs say how much was dropped);
    an exit while full is known at once and on disk once there is room; then all works."""
    d = TmpfsDaemon(str(tmp_path), "8m").start()
    d.rootfs = rootfs_template
    keeper = d.keeper_pid()
    try:
        c = d.client()
        # a kilobyte a line: more than the last page of its log file holds while full
        run(c, d, "talker", ["sh", "-c", "i=0; while :; do printf 'tick %d %01000d\\n' $i 0; "
                                         "i=$((i+1)); sleep 0.05; done"])
        run(c, d, "sleeper", ["sleep", "300"])
        _wait_log(c, "talker", "tick 1")
        _fill(d.path("filler"))
        for cid in ("new1", "new2"):
            with pytest.raises(ApiError) as failed:
                run(c, d, cid, ["true"])
            message = str(failed.value)
            assert "No space left on device" in message and d.root in message, message
            assert "\n" not in message
            assert not os.path.exists(d.path(cid)) and not _cgroups_of(cid)
        c.call("kill", id="sleeper", signal="KILL")
        assert c.call("wait", id="sleeper")["exitStatus"] == 137  # known at once
        assert not os.path.exists(d.path("sleeper", "exit.json"))  # no room for it (yet)
        time.sleep(1)
        assert c.call("state", id="talker")["status"] == "running"
        os.unlink(d.path("filler"))
        # the keeper writes the status it could not, and the talker's logs go on
        _until(lambda: os.path.exists(d.path("sleeper", "exit.json")), "the exit recorded")
        assert json.load(open(d.path("sleeper", "exit.json")))["exitStatus"] == 137
        _until(lambda: "dropped: no space left on device]" in _log_text(c, "talker"),
               "the talker's log says what was dropped")
        text = _log_text(c, "talker")
        ticks = text.count("tick")
        _until(lambda: _log_text(c, "talker").count("tick") > ticks + 5, "the logs go on")
        assert c.call("state", id="talker")["status"] == "running"
        run(c, d, "after", ["sh", "-c", "echo fine"])
        assert c.call("wait", id="after")["exitStatus"] == 0
        assert _log_text(c, "after") == "fine\n"
        for cid in ("talker", "sleeper", "after"):
            c.call("delete", id=cid, force=True)
        assert c.call("list") == []
    finally:
        _stop_tmpfs_daemon(d, keeper)


def _stop_tmpfs_daemon(d: TmpfsDaemon, keeper: int) -> None:
    from tests.supervisor_fixture import wait_gone

    d.delete_all_and_stop()
    wait_gone(keeper)
    assert os.listdir(d.root) == []  # the tmpfs went with its namespace


# ---- no descriptors left, no pids left ----


def _nofile(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-files limit")


def _set_nofile(pid: int, soft: int, hard: int) -> None:
    import resource

    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _lowest_free_fd(pid: int) -> int:
    """A limit at this leaves the process no descriptor to open (the limit is on numbers)."""
    held = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(held) + 1) if n not in held)


def test_out_of_descriptors(daemon, tmp_path):
    """With RLIMIT_NOFILE at what the daemon holds already, creations are refused with one
    error naming the cause; the daemon neither crashes nor loses a status (an exit meanwhile
    is known), a client that connects meanwhile is served once descriptors come back, and
    creations work again."""
    c = daemon.client()
    run(c, daemon, "keep", ["sleep", "300"])
    run(c, daemon, "victim", ["sleep", "300"])
    victim = c.call("state", id="victim")["pid"]
    assert victim > 0
    pid = daemon.proc.pid
    limits = _nofile(pid)
    _set_nofile(pid, _lowest_free_fd(pid) + 2, limits[1])  # a creation needs more
    try:
        for k in range(3):
            with pytest.raises(ApiError) as refused:
                run(c, daemon, f"refused{k}", ["true"])
            message = str(refused.value)
            assert "Too many open files" in message and "descriptors" in message, message
            assert "\n" not in message
        os.kill(victim, signal.SIGKILL)
        assert c.call("wait", id="victim", timeout=30)["exitStatus"] == 137
        _set_nofile(pid, _lowest_free_fd(pid), limits[1])  # none left now
        late: list = []
        joiner = threading.Thread(target=lambda: late.append(daemon.client()))
        joiner.start()
        time.sleep(0.5)
        assert not late  # not accepted (no descriptor for it), not refused either
        assert c.call("version")["api"] == 1  # a connection it has is served
    finally:
        _set_nofile(pid, *limits)
    joiner.join(60)
    assert late and late[0].call("version")["api"] == 1
    # A creation that found enough descriptors and ran out in the middle (the limit
    # lowered while its createRuntime hook runs): undone all the same (the undo has a
    # reserve of its own), its error naming the cause.
    flag, go = tmp_path / "in-hook", tmp_path / "go"
    midway = daemon.config(daemon.rootfs, ["true"], "midway")
    midway["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {flag}; while [ ! -e {go} ]; do sleep 0.05; done"]}]}
    rid = c.send("create", id="midway", config=midway)
    _until(flag.exists, "the creation's hook ran")
    # below the descriptors the hook's run holds (its state memfd first): none free after
    hook_fds = [int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
                if "corral-hook-state" in _readlink(f"/proc/{pid}/fd/{fd}")]
    assert len(hook_fds) == 1
    _set_nofile(pid, min(_lowest_free_fd(pid), hook_fds[0]), limits[1])
    go.touch()
    try:
        with pytest.raises(ApiError, match="Too many open files") as failed:
            c.reply(rid)
        assert "\n" not in str(failed.value)
    finally:
        _set_nofile(pid, *limits)
    assert not os.path.exists(os.path.join(daemon.root, "midway")) and not _cgroups_of("midway")
    listed = {state["id"] for state in c.call("list")}
    for k in range(3):
        assert not os.path.exists(os.path.join(daemon.root, f"refused{k}"))
        assert not _cgroups_of(f"refused{k}")
    assert listed == {"keep", "victim"}
    assert c.call("state", id="keep")["status"] == "running"
    assert c.call("state", id="victim")["exitStatus"] == 137
    run(c, daemon, "after", ["sh", "-c", "exit 2"])
    assert c.call("wait", id="after")["exitStatus"] == 2
    for cid in ("keep", "victim", "after"):
        c.call("delete", id=cid, force=True)
    assert daemon.proc.poll() is None


def test_out_of_pids(tmp_path, rootfs_template, _no_leaks):
    """The daemon (and so its keeper and spawner) in a pids cgroup of its own at its limit:
    creations are refused with one error naming the pids limit, nothing is left, the
    running containers (in cgroups of their own) and their statuses are untouched, and
    creations work again once the limit is raised."""
    group = os.path.join("/sys/fs/cgroup/pids", CGROUP_PARENT, "daemon-pids")
    if not os.path.isdir(os.path.dirname(os.path.dirname(group))):
        group = os.path.join("/sys/fs/cgroup", CGROUP_PARENT, "daemon-pids")  # unified only
    os.makedirs(group)
    d = WrappedDaemon(str(tmp_path / "state"), f"echo $$ > {group}/cgroup.procs")
    try:
        d.start()
        d.rootfs = rootfs_template
        c = d.client()
        run(c, d, "keep", ["sleep", "300"])
        run(c, d, "victim", ["sleep", "300"])
        victim = c.call("state", id="victim")["pid"]
        assert victim > 0
        # trio's idle worker threads end after 10 s: then no thread is to be had either,
        # and the undo of a refused creation runs on the event loop
        _until(lambda: len(os.listdir(f"/proc/{d.proc.pid}/task")) == 1,
               "the daemon's idle threads ended")
        with open(f"{group}/pids.current") as f:
            current = int(f.read())
        with open(f"{group}/pids.max", "w") as f:
            f.write(str(current))
        try:
            for k in range(3):
                with pytest.raises(ApiError) as refused:
                    run(c, d, f"refused{k}", ["true"])
                message = str(refused.value)
                assert "pids limit" in message and "\n" not in message, message
                assert not os.path.exists(os.path.join(d.root, f"refused{k}"))
                assert not _cgroups_of(f"refused{k}")
            os.kill(victim, signal.SIGKILL)
            assert c.call("wait", id="victim", timeout=30)["exitStatus"] == 137
            assert c.call("state", id="keep")["status"] == "running"
        finally:
            with open(f"{group}/pids.max", "w") as f:
                f.write("max")
        run(c, d, "after", ["sh", "-c", "exit 3"])
        assert c.call("wait", id="after")["exitStatus"] == 3
        for cid in ("keep", "victim", "after"):
            c.call("delete", id=cid, force=True)
        assert c.call("list") == []
    finally:
        keeper = d.keeper_pid() if d.proc is not None and os.path.exists(d.log) else None
        if d.proc is not None and d.proc.poll() is None:
            shutdown(d)
        elif keeper:
            from tests.supervisor_fixture import wait_gone

            wait_gone(keeper)
        os.rmdir(group)


def test_keeper_sigkilled_after_a_daemon_restart(daemon):
    """A restarted daemon is handed the log pipes of the containers it adopts, so they log
    on through the keeper that replaces a dead one too."""
    c = daemon.client()
    run(c, daemon, "talker", ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"])
    _wait_log(c, "talker", "tick 1")
    c.close()
    assert daemon.stop() == 0
    daemon.start()
    old = daemon.keeper_pid()
    os.kill(old, signal.SIGKILL)
    _until(lambda: daemon.keeper_pid() != old, "a new keeper")
    c = daemon.client()
    ticks = _log_text(c, "talker").count("tick")
    _until(lambda: _log_text(c, "talker").count("tick") > ticks + 5, "the talker's logs go on")
    assert c.call("state", id="talker")["status"] == "running"
    c.call("delete", id="talker", force=True)
