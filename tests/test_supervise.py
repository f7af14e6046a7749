"""`corral supervise` against the real kernel: the API, concurrency, surviving its own death,
the exec fifo across clients, signals, logs, events and every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import CGROUP_PARENT, CORRAL, Corral
from tests.supervisor_fixture import ApiError, Client, Daemon, wait_gone


@pytest.fixture
def daemon(tmp_path, rootfs_template, _no_leaks):
    root = str(tmp_path / "state")
    d = Daemon(root).start()
    d.rootfs = rootfs_template
    yield d
    shutdown(d)


def shutdown(d: Daemon) -> None:
    """Deletes every container, stops the daemon and waits for its keeper to end (it ends
    once it has no daemon and no container); then nothing of corral's may remain."""
    keeper = d.keeper_pid()
    Corral(d.root).cleanup()
    if d.proc.poll() is None:
        assert d.stop() == 0
    wait_gone(keeper)
    sup = os.path.join(d.root, ".supervisor")
    bundles = os.path.join(sup, "bundles")
    assert not os.path.isdir(bundles) or not os.listdir(bundles), "an inline bundle was left"
    assert not os.path.exists(os.path.join(sup, "keeper.sock"))
    shutil.rmtree(sup)


def run(client: Client, d: Daemon, cid: str, args: list[str], **process) -> dict:
    return client.call("run", id=cid, config=d.config(d.rootfs, args, cid, **process))


# ---- the basics ----


def test_ready_hello_and_lifecycle(daemon, tmp_path):
    c = daemon.client()
    assert c.hello == {"hello": {"api": 1, "server": "corral supervise"}}
    assert c.call("version")["api"] == 1
    state = run(c, daemon, "one", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    # (a container quick enough to have exited already is "stopped", with pid 0, as runc says)
    assert state["status"] == "running" and state["pid"] > 0 or state["status"] == "stopped"
    assert c.call("wait", id="one")["exitStatus"] == 3
    items: list = []
    c.reply(c.send("logs", id="one", stream="both"), items)
    assert {(i["stream"], i["data"]) for i in items} == {("stdout", "out\n"), ("stderr", "err\n")}
    state = c.call("state", id="one")
    assert (state["status"], state["exitStatus"], state["managed"]) == ("stopped", 3, True)
    # The command line reads the same state directory.
    cli = Corral(daemon.root)
    assert cli.state("one")["status"] == "stopped"
    c.call("delete", id="one")
    with pytest.raises(ApiError, match="does not exist"):
        c.call("state", id="one")


def test_sees_the_command_lines_containers(daemon, make_bundle):
    cli = Corral(daemon.root)
    b = make_bundle(["sleep", "100"])
    cli("create", "--bundle", b.path, b.id)
    c = daemon.client()
    assert [s["id"] for s in c.call("list")] == [b.id]
    assert c.call("state", id=b.id)["managed"] is False
    c.call("start", id=b.id)
    assert cli.state(b.id)["status"] == "running"
    c.call("kill", id=b.id, signal="KILL")
    c.call("delete", id=b.id, force=True)
    assert c.call("list") == []


def test_second_daemon_on_a_root_is_refused(daemon):
    proc = subprocess.run([*CORRAL, "--root", daemon.root, "supervise", "--socket",
                           daemon.socket + "2"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "another corral supervise is running on" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_bad_flags_are_one_line_errors(tmp_path):
    for flags, field in ((["--max-concurrent-creates", "0"], "--max-concurrent-creates"),
                         (["--log-max-size", "12Q"], "--log-max-size"),
                         (["--group", "no-such-group-xyz"], "--group"),
                         (["--request-timeout", "soon"], "--request-timeout"),
                         (["--send-timeout", "0"], "--send-timeout")):
        proc = subprocess.run([*CORRAL, "--root", str(tmp_path / "s"), "supervise", *flags],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and field in proc.stderr, (flags, proc.stderr)
        assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "s").exists() or not os.listdir(tmp_path / "s")


# ---- concurrency ----


def test_200_concurrent_creations_report_their_statuses(daemon):
    count, width = 200, 20
    clients = [daemon.client() for _ in range(width)]
    results: dict[str, int] = {}

    def worker(k: int) -> None:
        c = clients[k]
        ids = [f"c{i}" for i in range(k, count, width)]
        sent = [c.send("run", id=cid, config=daemon.config(
            daemon.rootfs, ["sh", "-c", f"exit {int(cid[1:]) % 7}"], cid)) for cid in ids]
        for rid in sent:
            c.reply(rid)
        for cid in ids:
            results[cid] = c.call("wait", id=cid)["exitStatus"]
        for cid in ids:
            c.call("delete", id=cid)

    errors = []

    def guarded(k: int) -> None:
        try:
            worker(k)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert results == {f"c{i}": i % 7 for i in range(count)}


def test_500_clients_at_once(daemon):
    clients = [daemon.client() for _ in range(500)]
    rids = [c.send("version") for c in clients]
    assert all(c.reply(r)["api"] == 1 for c, r in zip(clients, rids))
    for c in clients:
        c.close()


# ---- surviving its own death ----


def test_kill9_while_50_run_then_restart_knows_every_status(daemon):
    c = daemon.client()
    keeper = daemon.keeper_pid()
    ids = [f"k{i}" for i in range(50)]
    # Half exit during the downtime (after 1 s) with a status of their own; half keep running.
    for i, cid in enumerate(ids):
        args = ["sh", "-c", f"sleep 1; exit {i}"] if i % 2 else ["sleep", "300"]
        run(c, daemon, cid, args)
    pids = {s["id"]: s["pid"] for s in c.call("list")}
    daemon.stop(signal.SIGKILL)
    time.sleep(2)
    for i, cid in enumerate(ids):
        alive = os.path.exists(f"/proc/{pids[cid]}") and open(
            f"/proc/{pids[cid]}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        assert alive == (i % 2 == 0), cid  # nothing was killed with the daemon
    daemon.start()
    assert daemon.keeper_pid() == keeper  # re-adopted, not replaced
    c = daemon.client()
    states = {s["id"]: s for s in c.call("list")}
    assert set(states) == set(ids)
    for i, cid in enumerate(ids):
        if i % 2:
            assert (states[cid]["status"], states[cid]["exitStatus"]) == ("stopped", i), cid
        else:
            assert states[cid]["status"] == "running" and states[cid]["pid"] == pids[cid]
    # The adopted ones are still watched: a status after the restart arrives too.
    c.call("kill", id="k0", signal="KILL")
    assert c.call("wait", id="k0")["exitStatus"] == 137
    for cid in ids:
        c.call("delete", id=cid, force=True)


def test_half_made_creation_is_undone_at_restart(daemon):
    """A creation the daemon died in the middle of (state.json with no pid yet)."""
    c = daemon.client()
    run(c, daemon, "whole", ["sleep", "300"])
    record = json.load(open(os.path.join(daemon.root, "whole", "state.json")))
    os.makedirs(os.path.join(daemon.root, "half"))
    half = dict(record, id="half", pid=0, pid_start=None, cgroup=None)
    with open(os.path.join(daemon.root, "half", "state.json"), "w") as f:
        json.dump(half, f)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    c = daemon.client()
    assert [s["id"] for s in c.call("list")] == ["whole"]
    c.call("delete", id="whole", force=True)


def _full_listener(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket whose backlog is full: a blocking connect to it waits."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return listener, fillers
        fillers.append(s)


def test_creation_cut_short_is_undone_and_an_ended_one_never(daemon, tmp_path):
    """The creation journal (`.supervisor/creating`): a daemon SIGKILLed while a creation had
    no pid yet (its launcher stuck connecting to a seccomp agent whose backlog is full) leaves
    it for the next daemon to undo (state dir and cgroup); a creation that ended long before,
    whose container was deleted and whose cgroup path is now another runtime's container's,
    is never undone."""
    c = daemon.client()
    shared = f"/{CGROUP_PARENT}/journal-shared"
    ended = daemon.config(daemon.rootfs, ["true"], "ended")
    ended["linux"]["cgroupsPath"] = shared
    c.call("run", id="ended", config=ended)
    assert c.call("wait", id="ended")["exitStatus"] == 0
    c.call("delete", id="ended")
    # Now the command line (another root) has a container at that cgroup path.
    other = Corral(str(tmp_path / "other"))
    bundle = tmp_path / "victim"
    bundle.mkdir()
    victim = daemon.config(daemon.rootfs, ["sleep", "60"], "victim")
    victim["linux"]["cgroupsPath"] = shared
    (bundle / "config.json").write_text(json.dumps(victim))
    other("create", "-b", str(bundle), "victim")
    victim_pid = other.state("victim")["pid"]
    agent = str(tmp_path / "agent.sock")
    listener, fillers = _full_listener(agent)
    try:
        stuck = daemon.config(daemon.rootfs, ["true"], "stuck")
        stuck["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": agent,
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
        c.send("run", id="stuck", config=stuck)
        journal = os.path.join(daemon.root, ".supervisor", "creating")
        end = time.monotonic() + 30
        while '"stuck"' not in open(journal).read():
            assert time.monotonic() < end, "the creation never began"
            time.sleep(0.02)
        stuck_cgroups = [os.path.join("/sys/fs/cgroup", h, CGROUP_PARENT, "stuck")
                         for h in os.listdir("/sys/fs/cgroup")]
        end = time.monotonic() + 30
        while not any(os.path.isdir(d) for d in stuck_cgroups):
            assert time.monotonic() < end, "the creation made no cgroup"
            time.sleep(0.02)
        assert not os.path.exists(os.path.join(daemon.root, "stuck", "state.json"))
        daemon.stop(signal.SIGKILL)
        c.close()
        daemon.start()
        c = daemon.client()
        assert c.call("list") == []
        assert not os.path.exists(os.path.join(daemon.root, "stuck"))
        assert not any(os.path.isdir(d) for d in stuck_cgroups)
        # the ended creation's cgroup path, someone else's now, was left alone
        assert other.state("victim")["status"] == "created"
        procs = os.path.join("/sys/fs/cgroup/pids", CGROUP_PARENT, "journal-shared",
                             "cgroup.procs")
        assert open(procs).read().split() == [str(victim_pid)]
    finally:
        for s in [listener, *fillers]:
            s.close()  # the stuck launcher's connect fails: it exits, the keeper reaps it
        other("delete", "-f", "victim", check=False)
        try:
            os.waitpid(victim_pid, 0)
        except ChildProcessError:
            pass


# ---- stopping, signals, the exec fifo ----


def test_stop_kills_a_sigterm_ignoring_container_after_the_grace(daemon):
    c = daemon.client()
    run(c, daemon, "stubborn", ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
    _wait_log(c, "stubborn", "ready")
    started = time.monotonic()
    assert c.call("stop", id="stubborn", grace=0.5) == {"exitStatus": 137}
    assert time.monotonic() - started >= 0.5
    c.call("delete", id="stubborn")


def test_stop_of_a_well_behaved_container_is_its_own_exit(daemon):
    c = daemon.client()
    run(c, daemon, "polite", ["sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done"])
    _wait_log(c, "polite", "ready")
    assert c.call("stop", id="polite", grace=20) == {"exitStatus": 7}
    c.call("delete", id="polite")


def test_signal_forwarding(daemon):
    c = daemon.client()
    run(c, daemon, "sig", ["sh", "-c", "trap 'echo got USR1; exit 0' USR1; echo ready; "
                                       "while :; do sleep 0.1; done"])
    _wait_log(c, "sig", "ready")
    assert c.call("kill", id="sig", signal=0) == {}  # runc's check: delivers nothing
    with pytest.raises(ApiError, match="params.signal"):
        c.call("stop", id="sig", signal=0)  # only kill takes 0
    c.call("kill", id="sig", signal="USR1")
    assert c.call("wait", id="sig")["exitStatus"] == 0
    assert "got USR1" in _log_text(c, "sig")
    for sig in (15, 0):
        with pytest.raises(ApiError, match="container not running"):
            c.call("kill", id="sig", signal=sig)
    c.call("delete", id="sig")


def test_create_and_start_from_two_clients(daemon):
    a, b = daemon.client(), daemon.client()
    state = a.call("create", id="fifo", config=daemon.config(daemon.rootfs, ["echo", "hi"], "fifo"))
    assert state["status"] == "created"
    assert b.call("state", id="fifo")["status"] == "created"
    assert b.call("start", id="fifo")["status"] in ("running", "stopped")
    assert a.call("wait", id="fifo")["exitStatus"] == 0
    assert _log_text(b, "fifo") == "hi\n"
    with pytest.raises(ApiError, match="stopped"):
        b.call("start", id="fifo")
    b.call("delete", id="fifo")


def test_delete_of_a_created_container_and_refusals(daemon):
    c = daemon.client()
    c.call("create", id="cr", config=daemon.config(daemon.rootfs, ["true"], "cr"))
    with pytest.raises(ApiError, match="already exists"):
        c.call("create", id="cr", config=daemon.config(daemon.rootfs, ["true"], "cr"))
    run(c, daemon, "busy", ["sleep", "100"])
    with pytest.raises(ApiError, match="not stopped: running"):
        c.call("delete", id="busy")
    c.call("delete", id="cr")  # created, never started: allowed, as with runc
    c.call("delete", id="busy", force=True)
    assert c.call("list") == []


def test_exec_stats_and_bad_exec(daemon):
    c = daemon.client()
    run(c, daemon, "ex", ["sleep", "100"], env=["PATH=/bin", "GREETING=hello"])
    got = c.call("exec", id="ex", args=["sh", "-c", "echo $GREETING $(id -u); echo e >&2; exit 4"])
    assert got == {"exitStatus": 4, "stdout": "hello 0\n", "stderr": "e\n"}
    got = c.call("exec", id="ex", args=["id", "-u"], user="1000")
    assert got["stdout"] == "1000\n"
    with pytest.raises(ApiError, match="executable file not found"):
        c.call("exec", id="ex", args=["no-such-thing"])
    with pytest.raises(ApiError, match="timed out"):
        c.call("exec", id="ex", args=["sleep", "100"], timeout=0.3)
    stats = c.call("stats", id="ex")
    assert stats["pids"]["current"] >= 1 and "memory" in stats
    c.call("delete", id="ex", force=True)


# ---- logs and events ----


def test_logs_are_capped_rotated_and_followed(tmp_path, rootfs_template, _no_leaks):
    d = Daemon(str(tmp_path / "state"), "--log-max-size", "4k", "--log-max-files", "1").start()
    d.rootfs = rootfs_template
    try:
        c = d.client()
        # 100 lines of 100 bytes, slowly enough that a follower sees them arrive.
        script = "i=0; while [ $i -lt 100 ]; do printf '%099d\\n' $i; i=$((i+1)); " \
                 "[ $((i % 20)) = 0 ] && sleep 0.1; done"
        c.call("create", id="chatty", config=d.config(d.rootfs, ["sh", "-c", script], "chatty"))
        rid = c.send("logs", id="chatty", stream="stdout", follow=True)
        c.call  # the follow stream is open before the container starts
        other = d.client()
        other.call("start", id="chatty")
        items: list = []
        c.reply(rid, items)  # ends when the container has exited and the logs are drained
        followed = "".join(i["data"] for i in items)
        assert followed.splitlines() == [f"{n:099d}" for n in range(100)]
        files = sorted(os.listdir(os.path.join(d.root, "chatty")))
        assert "stdout.log.1" in files and "stdout.log.2" not in files
        sizes = [os.path.getsize(os.path.join(d.root, "chatty", f)) for f in files
                 if f.startswith("stdout.log")]
        assert all(size <= 4096 for size in sizes)
        kept = "".join(i["data"] for i in _logs(c, "chatty"))
        assert 4096 < len(kept) <= 8192 and kept.endswith(f"{99:099d}\n")
        c.call("delete", id="chatty")
    finally:
        shutdown(d)


def test_a_client_leaving_mid_stream_disturbs_nobody(daemon):
    c = daemon.client()
    run(c, daemon, "talker", ["sh", "-c", "while :; do echo tick; sleep 0.05; done"])
    leaver = daemon.client()
    leaver.send("logs", id="talker", follow=True)
    leaver.message()
    leaver.sock.shutdown(socket.SHUT_RDWR)
    leaver.close()
    events = daemon.client()
    events.send("events")
    events.close()
    time.sleep(0.3)
    assert c.call("state", id="talker")["status"] == "running"
    c.call("delete", id="talker", force=True)


def test_delete_on_close_containers_go_with_their_client(daemon):
    """A job run with delete_on_close is deleted once its client's connection closes (a
    Dask worker that died), also one whose run was still in flight then, and also when the
    client died with answers unread (a reset, not an end of file); one the client
    deleted itself, or one run without the flag,
    is not touched; a wrong type is a ConfigError naming the param."""
    owner = daemon.client()
    job = {"args": ["sleep", "60"]}
    owner.call("run", id="owned", job=job, delete_on_close=True)
    owner.call("run", id="kept", job=job)
    owner.call("run", id="done", job=job, delete_on_close=True)
    owner.call("delete", id="done", force=True)
    owner.call("run", id="done", job=job)  # the same id again, not owned this time
    with pytest.raises(ApiError) as err:
        owner.call("run", id="bad", job=job, delete_on_close="yes")
    assert err.value.type == "ConfigError" and "delete_on_close" in str(err.value)
    pid = owner.call("state", id="owned")["pid"]
    owner.send("run", id="in-flight", job=job, delete_on_close=True)  # closed before its answer
    owner.close()
    # A client that dies with an answer unread: the daemon's side is reset, not closed.
    resetter = daemon.client()
    resetter.call("run", id="reset", job=job, delete_on_close=True)
    resetter.send("state", id="reset")
    time.sleep(0.3)  # the answer waits, unread
    resetter.close()
    c = daemon.client()
    deadline = time.monotonic() + 30
    while {"owned", "in-flight", "reset"} & {s["id"] for s in c.call("list")}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert sorted(s["id"] for s in c.call("list")) == ["done", "kept"]
    assert c.call("state", id="kept")["status"] == "running"
    for cid in ("done", "kept"):
        c.call("delete", id=cid, force=True)


def test_events_stream(daemon):
    watcher = daemon.client()
    rid = watcher.send("events")
    c = daemon.client()
    config = daemon.config(daemon.rootfs, ["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a)"], "oom")
    config["linux"]["resources"] = {"memory": {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}}
    c.call("run", id="oom", config=config)
    status = c.call("wait", id="oom")["exitStatus"]
    c.call("delete", id="oom")
    seen = []
    while "deleted" not in [e["type"] for e in seen]:
        msg = watcher.message()
        assert msg["id"] == rid
        assert "stream" in msg, msg
        seen.append(msg["stream"])
    kinds = [e["type"] for e in seen]
    assert kinds[:2] == ["created", "started"] and kinds[-2:] == ["exited", "deleted"], kinds
    assert "oom" in kinds, kinds
    assert all(e["count"] >= 1 for e in seen if e["type"] == "oom")  # one event per wake-up
    assert all(e["id"] == "oom" and e["time"] for e in seen)
    assert seen[-2]["exitStatus"] == status


# ---- bad input ----


def test_bad_requests_each_get_a_clear_error(daemon):
    c = daemon.client()
    cases = [
        (b"this is not json\n", "ParseError"),
        (b"[1, 2]\n", "BadRequest"),
        (b'{"id": 1, "method": 5}\n', "BadRequest"),
        (b'{"id": 1, "method": "frobnicate"}\n', "UnknownMethod"),
        (b'{"id": 1, "method": "state", "params": []}\n', "BadRequest"),
        (b'{"id": 1, "method": "state", "params": {}}\n', "ConfigError"),
        (b'{"id": 1, "method": "state", "params": {"id": 7}}\n', "ConfigError"),
        (b'{"id": 1, "method": "state", "params": {"id": "../etc"}}\n', "ConfigError"),
        (b'{"id": 1, "method": "kill", "params": {"id": "x", "signal": "SIGNOPE"}}\n', "ConfigError"),
        (b'{"id": 1, "method": "wait", "params": {"id": "x", "timeout": "soon"}}\n', "ConfigError"),
        (b'{"id": 1, "method": "create", "params": {"id": "x"}}\n', "ConfigError"),
        (b'{"id": 1, "method": "create", "params": {"id": "x", "config": {"root": {"path": "rel"}}}}\n',
         "ConfigError"),
        (b'{"id": 1, "method": "create", "params": {"id": "x", "bundle": "/nonexistent"}}\n',
         "ConfigError"),
        (b'{"id": 1, "method": "logs", "params": {"id": "x", "stream": "stdin"}}\n', "ConfigError"),
    ]
    for raw, kind in cases:
        c.file.write(raw)
        c.file.flush()
        msg = c.message()
        assert msg["error"]["type"] == kind, (raw, msg)
        assert "\n" not in msg["error"]["message"] and msg["error"]["message"]
    assert c.call("list") == []  # the connection still serves
    assert sorted(os.listdir(daemon.root)) == [".supervisor", "supervise.sock"]


def test_oversized_and_unfinished_requests_are_dropped(tmp_path, rootfs_template, _no_leaks):
    d = Daemon(str(tmp_path / "state"), "--request-timeout", "0.5").start()
    try:
        big = d.client()
        try:  # the daemon stops reading (and closes) at the limit, before the end
            big.sock.sendall(b'{"id": 1, "method": "version", "params": {"x": "' + b"a" * (2 << 20))
        except BrokenPipeError:
            pass
        msg = big.message()
        assert msg["error"]["type"] == "TooLarge"
        with pytest.raises((EOFError, ConnectionResetError)):
            big.message()
        slow = d.client()
        slow.sock.sendall(b'{"id": 1, "meth')
        assert slow.message()["error"]["type"] == "Timeout"
        with pytest.raises((EOFError, ConnectionResetError)):
            slow.message()
        assert d.client().call("version")["api"] == 1  # and the daemon serves on
    finally:
        shutdown(d)


def test_peer_credentials(tmp_path, rootfs_template, mapped_root_can_reach, _no_leaks):
    """The socket file is 0660 root:GROUP; and should it be opened wider, the daemon still
    answers only root and the group's members (SO_PEERCRED)."""
    gid = int(subprocess.run(["getent", "group", "nogroup"], capture_output=True,
                             text=True).stdout.split(":")[2])
    d = Daemon(str(tmp_path / "state"), "--group", "nogroup").start()
    try:
        st = os.stat(d.socket)
        assert (st.st_mode & 0o777, st.st_gid) == (0o660, gid)
        os.chmod(d.socket, 0o666)
        probe = ("import socket; s = socket.socket(socket.AF_UNIX); s.connect({path!r}); "
                 "print(s.makefile().readline())").format(path=d.socket)

        def as_user(gid_: int) -> str:
            proc = subprocess.run(["setpriv", "--reuid=65534", f"--regid={gid_}", "--clear-groups",
                                   "/usr/bin/python3", "-c", probe], capture_output=True,
                                  text=True, timeout=30)
            return proc.stdout + proc.stderr

        assert "PermissionDenied" in as_user(12345)
        assert '"hello"' in as_user(gid)
        assert d.client().call("version")["api"] == 1  # root, always
    finally:
        shutdown(d)


def _log_text(c: Client, cid: str) -> str:
    return "".join(i["data"] for i in _logs(c, cid))


def _logs(c: Client, cid: str) -> list:
    items: list = []
    c.reply(c.send("logs", id=cid, stream="stdout"), items)
    return items


def _wait_log(c: Client, cid: str, text: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while text not in _log_text(c, cid):
        assert time.monotonic() < end, f"{cid} never printed {text!r}"
        time.sleep(0.02)


def test_notify_socket_and_json_log(tmp_path, _no_leaks):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    root = str(tmp_path / "state")
    log = tmp_path / "daemon.json.log"
    proc = subprocess.Popen([*CORRAL, "--root", root, "--log", str(log), "--log-format", "json",
                             "supervise"], stdout=subprocess.PIPE,
                            env=dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify")))
    try:
        assert notify.recv(4096).startswith(b"READY=1")
        assert b"ready on" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        proc.stdout.close()
        notify.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(set(e) == {"level", "msg", "time"} for e in lines)
    assert any("keeper pid" in e["msg"] for e in lines)
    keeper = int(next(e["msg"] for e in lines if "keeper pid" in e["msg"]).split()[2].rstrip(";"))
    wait_gone(keeper)
    shutil.rmtree(os.path.join(root, ".supervisor"))


def test_the_command_line_drives_the_daemons_containers(daemon):
    c = daemon.client()
    run(c, daemon, "shared", ["sleep", "100"])
    cli = Corral(daemon.root)
    assert cli.state("shared")["status"] == "running"
    assert "shared" in cli("list", "-q").stdout.split()
    cli("kill", "shared", "KILL")
    assert c.call("wait", id="shared")["exitStatus"] == 137
    cli("delete", "shared")
    assert c.call("list") == []


def test_keeper_killed_the_daemon_reaps_and_records(daemon):
    """The keeper is the inits' parent; if it dies, they are reparented to the daemon (a
    subreaper), which records their statuses as the keeper would have (and starts another
    keeper: tests/test_faults_host.py)."""
    c = daemon.client()
    run(c, daemon, "orphan", ["sh", "-c", "sleep 0.5; exit 5"])
    os.kill(daemon.keeper_pid(), signal.SIGKILL)
    assert c.call("wait", id="orphan", timeout=20)["exitStatus"] == 5
    record = json.load(open(os.path.join(daemon.root, "orphan", "exit.json")))
    assert record["exitStatus"] == 5
    c.call("delete", id="orphan")
