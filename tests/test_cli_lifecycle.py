"""The runc-compatible lifecycle through the real `corral` command, on a busybox rootfs."""

import json
import os
import re
import signal
import subprocess
import time


from tests.conftest import CGROUP_PARENT, CORRAL


def run_out(corral, bundle, *extra, check=True):
    """`corral run` in the foreground; returns the completed process."""
    return corral("run", "-b", bundle.path, *extra, bundle.id, check=check)


def test_create_start_kill_delete(corral, make_bundle, tmp_path):
    b = make_bundle(["sleep", "30"])
    pid_file = tmp_path / "pid"
    corral("create", "-b", b.path, "--pid-file", str(pid_file), b.id)
    raw = pid_file.read_text()
    assert raw.isdigit() and not raw.endswith("\n")
    pid = int(raw)
    state = corral.state(b.id)
    assert state["status"] == "created" and state["pid"] == pid
    # The init is ours now (we are the caller's subreaper, like conmon), not the runtime's.
    assert _ppid(pid) == os.getpid()
    corral("start", b.id)
    assert corral.state(b.id)["status"] == "running"
    # The container's processes are in its cgroup, in every hierarchy.
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    assert all(line.endswith(f"/{CGROUP_PARENT}/{b.id}") for line in lines), lines
    corral("kill", b.id, "KILL")
    _wait_status(corral, b.id, "stopped")
    assert corral.state(b.id)["pid"] == 0
    os.waitpid(pid, 0)
    corral("delete", b.id)
    assert corral("state", b.id, check=False).returncode == 1
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_state_json_is_runcs(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    b.config["annotations"] = {"org.example": "x"}
    b.write()
    corral("create", "-b", b.path, b.id)
    out = corral("state", b.id).stdout
    assert not out.endswith("\n") and out.startswith('{\n  "ociVersion"')
    state = json.loads(out)
    assert list(state) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created",
                           "annotations", "owner"]
    assert state["bundle"] == b.path and state["rootfs"] == b.rootfs
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z", state["created"])
    assert state["annotations"] == {"org.example": "x"} and state["owner"] == ""
    corral("delete", "--force", b.id)


def test_run_foreground_output_and_exit_codes(corral, make_bundle):
    b = make_bundle(["sh", "-c", "echo out; echo err >&2; exit 3"])
    proc = run_out(corral, b, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    assert not os.path.exists(os.path.join(corral.root, b.id))  # run removes it (no --keep)
    # Without a pid namespace (an init ignores SIGKILL sent from inside its namespace).
    b = make_bundle(["sh", "-c", "kill -9 $$"])
    b.config["linux"]["namespaces"].remove({"type": "pid"})
    b.write()
    assert run_out(corral, b, check=False).returncode == 137


def test_run_keep_leaves_a_stopped_container(corral, make_bundle):
    b = make_bundle(["true"])
    run_out(corral, b, "--keep")
    assert corral.state(b.id)["status"] == "stopped"
    corral("delete", b.id)


def test_run_forwards_signals(corral, make_bundle):
    b = make_bundle(["sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done"])
    proc = subprocess.Popen([*CORRAL, "--root", corral.root, "run", "-b", b.path, b.id],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 42


def test_run_detached(corral, make_bundle, tmp_path):
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "--pid-file", str(tmp_path / "p"), "-b", b.path, b.id)
    assert corral.state(b.id)["status"] == "running"
    pid = int((tmp_path / "p").read_text())
    corral("kill", b.id, "9")
    os.waitpid(pid, 0)
    corral("delete", b.id)


def test_kill_signal_forms(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    for sig in ("SIGCONT", "CONT", "cont", "18"):
        corral("kill", b.id, sig)
    bad = corral("kill", b.id, "NOPE", check=False)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "NOPE" in bad.stderr
    pid = corral.state(b.id)["pid"]
    corral("kill", "--all", b.id, "CONT")  # through the cgroup, to every process
    corral("kill", b.id)  # default TERM: sleep as pid 1 has no handler, so use KILL next
    corral("kill", b.id, "KILL")
    os.waitpid(pid, 0)
    assert corral.state(b.id)["status"] == "stopped"
    bad = corral("kill", b.id, "KILL", check=False)
    assert bad.returncode == 1 and "container not running" in bad.stderr
    assert corral("kill", "--all", b.id, "KILL").returncode == 0  # runc: --all on stopped is 0
    corral("delete", b.id)


def test_wrong_state_commands(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("start", b.id)
    again = corral("start", b.id, check=False)
    assert again.returncode == 1 and len(again.stderr.splitlines()) == 1
    busy = corral("delete", b.id, check=False)
    assert busy.returncode == 1
    assert f"cannot delete container {b.id} that is not stopped: running" in busy.stderr
    corral("delete", "--force", b.id)
    os.waitpid(pid, 0)
    assert corral("delete", "--force", "no-such-id").returncode == 0
    gone = corral("delete", "no-such-id", check=False)
    assert gone.returncode == 1 and "does not exist" in gone.stderr


def test_delete_force_of_created_container(corral, make_bundle):
    b = make_bundle(["true"])
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("delete", "--force", b.id)
    os.waitpid(pid, 0)


def test_list_formats(corral, make_bundle):
    assert corral("list").stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    b = make_bundle(["sleep", "30"])
    corral("create", "-b", b.path, b.id)
    assert corral("list", "-q").stdout == f"{b.id}\n"
    [entry] = json.loads(corral("list", "-f", "json").stdout)
    assert entry["id"] == b.id and entry["status"] == "created"
    table = corral("list").stdout.splitlines()
    assert table[1].split()[:3] == [b.id, str(entry["pid"]), "created"]
    pid = entry["pid"]
    corral("delete", "-f", b.id)
    os.waitpid(pid, 0)


def test_spec_and_version(corral, tmp_path):
    corral("spec", "--bundle", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"] and config["process"]["args"] == ["sh"]
    again = corral("spec", "--bundle", str(tmp_path), check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    rootless = tmp_path / "rl"
    rootless.mkdir()
    corral("spec", "--rootless", "--bundle", str(rootless))
    config = json.loads((rootless / "config.json").read_text())
    assert {"type": "user"} in config["linux"]["namespaces"] and config["linux"]["uidMappings"]
    version = corral("--version").stdout
    assert version.startswith("corral version ") and "spec: 1.0.2-dev" in version


def test_json_log_is_always_created(corral, tmp_path):
    log = tmp_path / "log.json"
    corral("--log", str(log), "--log-format", "json", "list")
    assert log.exists()
    bad = corral("--log", str(log), "--log-format", "json", "state", "nope", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == "container nope does not exist"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["time"])


def test_later_flags_are_refused_clearly(corral, make_bundle):
    b = make_bundle(["true"])
    proc = corral("checkpoint", b.id, check=False)
    assert proc.returncode == 1 and "not supported yet" in proc.stderr


def test_default_cgroup_is_under_corral_and_removed(corral, make_bundle):
    b = make_bundle(["cat", "/proc/self/cgroup"])
    del b.config["linux"]["cgroupsPath"]
    b.write()
    existed = os.path.exists("/sys/fs/cgroup/pids/corral")
    out = run_out(corral, b).stdout
    assert f"/corral/{b.id}\n" in out
    assert not os.path.exists(f"/sys/fs/cgroup/pids/corral/{b.id}")
    if not existed:
        assert not os.path.exists("/sys/fs/cgroup/pids/corral")


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def _wait_status(corral, cid, status, timeout=10):
    end = time.monotonic() + timeout
    while corral.state(cid)["status"] != status:
        assert time.monotonic() < end, f"{cid} never became {status}"
        time.sleep(0.05)


def test_delete_of_a_created_container_needs_no_force(corral, make_bundle):
    """As runc: a created (never started) container is killed and deleted."""
    b = make_bundle(["true"])
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("delete", b.id)
    os.waitpid(pid, 0)
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_delete_force_removes_a_state_dir_without_record(corral):
    """What a create that crashed before writing state.json leaves must not block the id."""
    os.makedirs(os.path.join(corral.root, "half-made"))
    assert corral("delete", "--force", "half-made").returncode == 0
    assert not os.path.exists(os.path.join(corral.root, "half-made"))


def test_a_populated_cgroup_that_is_not_ours_is_refused(corral, make_bundle):
    """cgroupsPath naming a cgroup that already holds processes: refused, and the cgroup
    and its processes are left alone (deleting the container would have killed them)."""
    outsider = subprocess.Popen(["sleep", "30"])
    path = f"/sys/fs/cgroup/pids/{CGROUP_PARENT}/occupied"
    os.makedirs(path)
    try:
        with open(f"{path}/cgroup.procs", "w") as f:
            f.write(str(outsider.pid))
        b = make_bundle(["true"])
        b.config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/occupied"
        b.write()
        proc = corral("create", "-b", b.path, b.id, check=False)
        assert proc.returncode == 1 and "not empty" in proc.stderr
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()
        os.rmdir(path)


def test_preserve_fds_must_be_open(corral, make_bundle):
    b = make_bundle(["true"])
    proc = corral("create", "--preserve-fds", "5", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and "--preserve-fds: fd 3 is not open" in proc.stderr


def test_start_of_a_container_whose_process_exited(corral, make_bundle):
    """runtime.md: start of a container that is not `created` is an error; a created
    container whose init died is `stopped`."""
    b = make_bundle(["true"])
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert corral.state(b.id)["status"] == "stopped"
    proc = corral("start", b.id, check=False)
    assert proc.returncode == 1 and "cannot start a container that has stopped" in proc.stderr
    corral("delete", b.id)
