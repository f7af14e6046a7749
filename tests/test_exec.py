"""`corral exec` against the real kernel: a new process in every namespace and the cgroup of a
running container, with runc's flags, exit statuses and errors."""

from __future__ import annotations

import json
import os
import time

import pytest


@pytest.fixture
def running(corral, make_bundle):
    """A running container (sleep) with its own uts name; yields its bundle."""
    b = make_bundle(["sleep", "300"])
    b.config["hostname"] = "inside"
    b.config["process"]["env"].append("FROM_CONFIG=yes")
    b.write()
    corral("run", "-d", "-b", b.path, b.id)
    yield b
    corral("delete", "--force", b.id)


def ns_of(pid: int, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def test_exec_joins_every_namespace_root_and_cgroup(corral, running):
    init = corral.state(running.id)["pid"]
    proc = corral("exec", running.id, "sh", "-c",
                  "hostname; echo $$; echo $FROM_CONFIG; ls /; "
                  "for n in mnt net ipc uts pid; do readlink /proc/self/ns/$n; done; "
                  "cat /proc/self/cgroup")
    lines = proc.stdout.splitlines()
    assert lines[0] == "inside"
    assert int(lines[1]) > 1  # a new process of the container's pid namespace
    assert lines[2] == "yes"  # the config's env
    assert "bin" in lines and "tmp" in lines  # the container's root
    for name in ("mnt", "net", "ipc", "uts", "pid"):
        assert ns_of(init, name) in lines, name
    with open(f"/proc/{init}/cgroup") as f:
        init_cgroups = f.read().splitlines()
    assert lines[-len(init_cgroups):] == init_cgroups


def test_exit_status_and_signal(corral, running):
    assert corral("exec", running.id, "sh", "-c", "exit 7", check=False).returncode == 7
    assert corral("exec", running.id, "sh", "-c", "kill -TERM $$",
                  check=False).returncode == 128 + 15


def test_flags_override_the_config_process(corral, running):
    proc = corral("exec", "--env", "A=1", "-e", "B=2", "--cwd", "/tmp", "--user", "1000:1001",
                  "--additional-gids", "7", "-g", "8", "--no-new-privs", running.id,
                  "sh", "-c", "echo $A $B; pwd; id -u; id -g; id -G; "
                  "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status")
    out = proc.stdout.splitlines()
    assert out[0] == "1 2" and out[1] == "/tmp" and out[2] == "1000" and out[3] == "1001"
    assert set(out[4].split()) >= {"1001", "7", "8"}
    assert out[5].split() == ["CapEff:", "0000000000000000"]  # no caps for a non-root user
    assert out[6].split() == ["NoNewPrivs:", "1"]


def test_cap_flag_adds_a_capability(corral, running):
    before = corral("exec", running.id, "grep", "CapBnd", "/proc/self/status").stdout
    after = corral("exec", "--cap", "CAP_SYS_ADMIN", running.id, "grep", "CapBnd",
                   "/proc/self/status").stdout
    assert int(after.split()[1], 16) == int(before.split()[1], 16) | (1 << 21)
    bad = corral("exec", "--cap", "CAP_NOPE", running.id, "true", check=False)
    assert bad.returncode == 255 and "--cap" in bad.stderr and "CAP_NOPE" in bad.stderr


def test_process_file(corral, running, tmp_path):
    spec = {"args": ["sh", "-c", "echo $ONLY; pwd; id -u"], "cwd": "/etc",
            "env": ["ONLY=file", "PATH=/bin"], "user": {"uid": 5, "gid": 5}}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(spec))
    out = corral("exec", "--process", str(path), running.id).stdout.splitlines()
    assert out == ["file", "/etc", "5"]
    path.write_text(json.dumps({"args": [], "cwd": "/"}))
    bad = corral("exec", "-p", str(path), running.id, check=False)
    assert bad.returncode == 255 and "process.args" in bad.stderr
    path.write_text("{not json")
    bad = corral("exec", "-p", str(path), running.id, check=False)
    assert bad.returncode == 255 and "--process" in bad.stderr


def test_detach_writes_the_pid_file(corral, running, tmp_path):
    pid_file = tmp_path / "exec.pid"
    corral("exec", "-d", "--pid-file", str(pid_file), running.id, "sleep", "60")
    text = pid_file.read_text()
    assert text == text.strip()
    pid = int(text)
    assert pid in json.loads(corral("ps", "--format", "json", running.id).stdout)
    init = corral.state(running.id)["pid"]
    assert ns_of(pid, "pid") == ns_of(init, "pid") and ns_of(pid, "mnt") == ns_of(init, "mnt")
    # Reparented to us (the subreaper) once `corral exec -d` exited, as to conmon: reap it.
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def test_no_host_fd_crosses(corral, running, tmp_path):
    extra = os.open(tmp_path / "extra", os.O_WRONLY | os.O_CREAT, 0o644)
    os.set_inheritable(extra, True)  # even an inheritable fd of the caller stays outside
    try:
        proc = corral("exec", running.id, "ls", "/proc/self/fd", pass_fds=(extra,))
    finally:
        os.close(extra)
    assert sorted(int(x) for x in proc.stdout.split()) == [0, 1, 2, 3]  # 3: ls's own dir


def test_preserve_fds(corral, running, tmp_path):
    import subprocess

    from tests.conftest import CORRAL

    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        child = subprocess.Popen([*CORRAL, "--root", corral.root, "exec", "--preserve-fds", "1",
                                  running.id, "sh", "-c", "echo through >&3; ls /proc/self/fd"],
                                 stdout=subprocess.PIPE, pass_fds=(3,),
                                 preexec_fn=lambda: os.dup2(fd, 3))
        out, _ = child.communicate(timeout=30)
    finally:
        os.close(fd)
    assert child.returncode == 0
    assert path.read_text() == "through\n"
    assert sorted(int(x) for x in out.split()) == [0, 1, 2, 3, 4]  # 4: ls's own dir


def test_errors(corral, running, make_bundle):
    missing = corral("exec", running.id, "nosuch", check=False)
    assert missing.returncode == 255  # runc: every failure of exec itself is 255
    assert 'exec: "nosuch": executable file not found in $PATH' in missing.stderr
    cwd = corral("exec", "--cwd", "/nope", running.id, "true", check=False)
    assert cwd.returncode == 255 and "/nope" in cwd.stderr and "no such file" in cwd.stderr
    user = corral("exec", "--user", "me", running.id, "true", check=False)
    assert user.returncode == 255 and "--user" in user.stderr
    flag = corral("exec", "--bogus", running.id, "true", check=False)
    assert flag.returncode == 1 and "--bogus" in flag.stderr
    empty = corral("exec", running.id, check=False)
    assert empty.returncode == 255 and "command" in empty.stderr
    assert "does not exist" in corral("exec", "nope", "true", check=False).stderr
    corral("pause", running.id)
    try:
        paused = corral("exec", running.id, "true", check=False)
        assert paused.returncode == 255
        assert "cannot exec in a paused container" in paused.stderr
    finally:
        corral("resume", running.id)
    stopped = make_bundle(["true"])
    corral("run", "-d", "-b", stopped.path, stopped.id)
    deadline = time.monotonic() + 10
    while corral.state(stopped.id)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    gone = corral("exec", stopped.id, "true", check=False)
    assert gone.returncode == 255 and "cannot exec in a stopped container" in gone.stderr
    corral("delete", stopped.id)


def test_exec_in_a_user_namespaced_container(corral, make_bundle, mapped_root_can_reach):
    b = make_bundle(["sleep", "300"])
    b.config["linux"]["namespaces"].append({"type": "user"})
    b.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b.write()
    os.chown(b.rootfs, 100000, 100000)
    corral("run", "-d", "-b", b.path, b.id)
    try:
        proc = corral("exec", b.id, "sh", "-c", "id -u; cat /proc/self/uid_map; echo $$")
        uid, uid_map, pid = proc.stdout.splitlines()
        assert uid == "0" and uid_map.split() == ["0", "100000", "65536"] and int(pid) > 1
    finally:
        corral("delete", "--force", b.id)


def test_ignore_paused_runs_once_resumed(corral, running, tmp_path):
    """The process is made while the container is frozen, joins the frozen cgroup only after
    its setup (so exec returns), and runs once the container is resumed."""
    import subprocess

    from tests.conftest import CORRAL

    marker = os.path.join(running.rootfs, "tmp", "x")
    pid_file = tmp_path / "exec.pid"
    init = corral.state(running.id)["pid"]
    corral("pause", running.id)
    foreground = None
    try:
        corral("exec", "-d", "--ignore-paused", "--pid-file", str(pid_file), running.id,
               "touch", "/tmp/x")
        pid = int(pid_file.read_text())
        with open(f"/proc/{pid}/cgroup") as f, open(f"/proc/{init}/cgroup") as g:
            assert f.read() == g.read()  # in the container's (frozen) cgroup
        foreground = subprocess.Popen([*CORRAL, "--root", corral.root, "exec",
                                       "--ignore-paused", running.id, "sh", "-c", "exit 6"],
                                      stdin=subprocess.DEVNULL)
        time.sleep(0.3)
        assert not os.path.exists(marker)  # frozen before its first instruction
        assert foreground.poll() is None  # waits for its process, frozen too
        refused = corral("exec", running.id, "true", check=False)
        assert refused.returncode == 255
        assert "cannot exec in a paused container" in refused.stderr
    finally:
        corral("resume", running.id)
        if foreground is not None:
            status = foreground.wait(15)
    assert status == 6
    _, raw = os.waitpid(pid, 0)  # reparented to us (the subreaper), as to conmon
    assert os.waitstatus_to_exitcode(raw) == 0 and os.path.exists(marker)


# A container process that opens every /proc/<pid>/exe it can see, without forking (so it
# sweeps many times while an exec joins): an open file that is not busybox (the runtime's
# interpreter, while it joins the container) is recorded; ``n`` counts the opens that
# succeeded at all (busybox: its own siblings), written once, to show that the sweep opens.
EXE_SWEEP = """exec 2>/dev/null; n=0
opened() { n=$((n+1)); [ /proc/self/fd/0 -ef /bin/busybox ] || echo "$1" >>/tmp/escaped; }
while :; do
  for e in /proc/[0-9]*/exe; do opened "$e" <"$e"; done
  [ $n -gt 0 ] && [ ! -e /tmp/opens ] && echo $n >/tmp/opens
done"""


def test_runtime_exe_cannot_be_opened_from_inside(corral, make_bundle):
    """CVE-2019-5736's first step: while `corral exec` joins a container, its process (the
    runtime's own executor, corral-exec, until exec) is in the container's pid namespace; being
    non-dumpable it can't be opened through /proc/<pid>/exe by the container's root."""
    import subprocess

    from corral.cli import args as cliargs
    from corral.runtime.blocking import create_container
    from corral.runtime.execution import prepare_exec
    from tests.conftest import CORRAL

    b = make_bundle(["sh", "-c", EXE_SWEEP])
    corral("run", "-d", "-b", b.path, b.id)
    try:
        for _ in range(15):  # the sweep runs while each exec joins
            corral("exec", b.id, "true")

        # And at a known moment: an exec parked after its last message, before exec.
        args, _ = cliargs.parse(["--root", corral.root, "exec", b.id, "true"])
        seen = {}

        def probe(pid: int) -> None:
            seen["exe"] = os.readlink(f"/proc/{pid}/exe")  # the host's view: the executor
            with open(f"/proc/{pid}/status") as f:
                nspid = [ln.split()[-1] for ln in f if ln.startswith("NSpid:")][0]
            seen["probe"] = subprocess.run(
                [*CORRAL, "--root", corral.root, "exec", b.id, "sh", "-c",
                 f"[ -d /proc/{nspid} ] && echo visible; true </proc/{nspid}/exe && echo opened;"
                 f" readlink /proc/{nspid}/exe && echo read; exit 0"],
                capture_output=True, text=True, timeout=30).stdout

        prepared = prepare_exec(args)
        pid = create_container(prepared, before_release=probe)
        _, raw = os.waitpid(pid, 0)  # our child: it ran `true` once released
        assert os.waitstatus_to_exitcode(raw) == 0
        assert os.path.basename(seen["exe"]) == "corral-exec"
        assert seen["probe"].split() == ["visible"]
        corral("kill", b.id, "KILL")  # the sweep stops: its files are whole
        deadline = time.monotonic() + 10
        while corral.state(b.id)["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        root = os.path.join(b.rootfs, "tmp")
        assert not os.path.exists(os.path.join(root, "escaped")), \
            open(os.path.join(root, "escaped")).read()
        with open(os.path.join(root, "opens")) as f:
            assert int(f.read()) > 0  # the sweep did open its own processes' exe
    finally:
        corral("delete", "--force", b.id)
