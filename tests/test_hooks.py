"""OCI hooks: each kind at its moment, in its namespaces, with the state on stdin."""

import json
import os
import time

HOST_HOOK = """#!/bin/sh
{{ echo "$1 $(cat /proc/sys/kernel/hostname) $FOO"; cat; echo; }} >> {log}
exit ${{2:-0}}
"""


def host_hook(tmp_path, kind, log, **extra):
    path = tmp_path / "hook.sh"
    if not path.exists():
        path.write_text(HOST_HOOK.format(log=log))
        path.chmod(0o755)
    return {"path": str(path), "args": ["hook.sh", kind, *extra.pop("argv", [])], **extra}


def entries(log):
    """[(kind, hostname, FOO, state)] from a log the hook scripts appended to."""
    out = []
    lines = open(log).read().splitlines() if os.path.exists(log) else []
    for head, body in zip(lines[::2], lines[1::2]):
        kind, host, *foo = head.split(" ")
        out.append((kind, host, " ".join(foo), json.loads(body)))
    return out


def wait_gone(pid):
    os.waitpid(pid, 0)


def test_every_hook_at_its_moment(corral, make_bundle, tmp_path):
    log = str(tmp_path / "hooks.log")
    b = make_bundle()
    b.config["hostname"] = "inside"
    b.config["process"]["args"] = ["sh", "-c", "echo process >> /hook.log"]
    in_container = os.path.join(b.rootfs, "hook.sh")
    with open(in_container, "w") as f:
        f.write('#!/bin/sh\n{ echo "$1 $(hostname) $FOO"; cat; echo; } >> /hook.log\n')
    os.chmod(in_container, 0o755)
    b.config["hooks"] = {
        "prestart": [host_hook(tmp_path, "prestart", log)],
        "createRuntime": [host_hook(tmp_path, "createRuntime", log, env=["FOO=bar"])],
        "createContainer": [host_hook(tmp_path, "createContainer", log)],
        "startContainer": [{"path": "/hook.sh", "args": ["hook.sh", "startContainer"]}],
        "poststart": [host_hook(tmp_path, "poststart", log)],
        "poststop": [host_hook(tmp_path, "poststop", log, timeout=5)],
    }
    b.config["annotations"] = {"a": "b"}
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    got = entries(log)
    assert [e[0] for e in got] == ["prestart", "createRuntime", "createContainer"]
    host = open("/proc/sys/kernel/hostname").read().strip()
    assert [e[1] for e in got] == [host, host, "inside"]  # createContainer: the container's
    assert got[1][2] == "bar" and got[0][2] == ""
    expected = {"ociVersion": b.config["ociVersion"], "id": b.id, "status": "created",
                "pid": pid, "bundle": b.path, "annotations": {"a": "b"}}
    for _, _, _, state in got:
        assert state == expected
    # runc's bytes: Go's compact encoding, in the spec's field order
    assert open(log).read().splitlines()[1] == json.dumps(expected, separators=(",", ":"))
    assert not os.path.exists(os.path.join(b.rootfs, "hook.log"))  # not started yet

    corral("start", b.id)
    wait_gone(pid)
    inside = open(os.path.join(b.rootfs, "hook.log")).read().splitlines()
    assert inside[0].startswith("startContainer inside")
    assert json.loads(inside[1])["status"] == "created" and json.loads(inside[1])["pid"] == pid
    assert inside[2] == "process"  # after the hook, as its exec
    kind, _, _, state = entries(log)[3]
    assert kind == "poststart" and state["status"] == "running" and state["pid"] == pid

    corral("delete", b.id)
    kind, _, _, state = entries(log)[4]
    assert kind == "poststop" and state["status"] == "stopped" and state["id"] == b.id


def test_failing_create_runtime_hook_leaves_nothing(corral, make_bundle, tmp_path):
    log = str(tmp_path / "hooks.log")
    b = make_bundle()
    b.config["hooks"] = {
        "createRuntime": [host_hook(tmp_path, "createRuntime", log, argv=["3"])],
        "createContainer": [host_hook(tmp_path, "createContainer", log)],
        "poststop": [host_hook(tmp_path, "poststop", log)]}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert "error running createRuntime hook #0" in proc.stderr and "exit status 3" in proc.stderr
    assert [e[0] for e in entries(log)] == ["createRuntime"]  # and nothing after it
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_failing_create_container_hook_fails_create(corral, make_bundle, tmp_path):
    log = str(tmp_path / "hooks.log")
    b = make_bundle()
    b.config["hooks"] = {"createContainer": [host_hook(tmp_path, "cc", log, argv=["4"])]}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and "createContainer hook #0" in proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_hook_timeout_kills_it(corral, make_bundle, tmp_path):
    b = make_bundle()
    b.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {tmp_path}/pid; exec sleep 30"],
         "timeout": 1}]}
    b.write()
    start = time.monotonic()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert time.monotonic() - start < 10
    assert proc.returncode == 1 and "timed out after 1s" in proc.stderr
    hook_pid = int((tmp_path / "pid").read_text())
    assert not os.path.exists(f"/proc/{hook_pid}")
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_failing_start_container_hook_keeps_the_process_from_running(corral, make_bundle):
    b = make_bundle()
    b.config["process"]["args"] = ["sh", "-c", "echo process > /ran"]
    b.config["hooks"] = {"startContainer": [{"path": "/bin/false"}]}
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    corral("start", b.id)
    wait_gone(pid)
    assert not os.path.exists(os.path.join(b.rootfs, "ran"))
    corral("delete", b.id)


def test_failing_poststart_and_poststop_hooks_are_only_logged(corral, make_bundle, tmp_path):
    log = str(tmp_path / "hooks.log")
    b = make_bundle(["true"])
    b.config["hooks"] = {
        "poststart": [host_hook(tmp_path, "poststart", log, argv=["1"])],
        "poststop": [{"path": "/no/such/hook"}, host_hook(tmp_path, "poststop", log)]}
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    start = corral("start", b.id)
    assert "warning: error running poststart hook #0" in start.stderr
    wait_gone(pid)
    delete = corral("delete", b.id)
    assert "poststop hook #0 /no/such/hook" in delete.stderr
    assert [e[0] for e in entries(log)] == ["poststart", "poststop"]  # the second still ran


CWD_HOOK = """#!/bin/sh
echo "$1 $(pwd -P) $(cat | tr -d '\\n')" >> {log}
"""


def test_hooks_run_in_order_with_the_right_state_and_cwd(corral, make_bundle, tmp_path):
    """Every hook the runtime runs has the bundle as its working directory (runc and crun
    chdir there), whatever the caller's, but createContainer the rootfs (runc's); and
    startContainer, inside, the process's cwd.  The create-time hooks read the status
    "created" (crun's, which the OCI validation suite checks)."""
    log = tmp_path / "cwd.log"
    script = tmp_path / "cwd-hook.sh"
    script.write_text(CWD_HOOK.format(log=log))
    script.chmod(0o755)
    b = make_bundle(["true"])
    b.config["process"]["cwd"] = "/tmp"
    with open(os.path.join(b.rootfs, "cwd-hook.sh"), "w") as f:
        f.write(CWD_HOOK.format(log="/cwd.log"))
    os.chmod(os.path.join(b.rootfs, "cwd-hook.sh"), 0o755)
    kinds = ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    b.config["hooks"] = {kind: [{"path": str(script), "args": ["cwd-hook.sh", kind]}]
                         for kind in kinds}
    b.config["hooks"]["startContainer"] = [{"path": "/cwd-hook.sh",
                                            "args": ["cwd-hook.sh", "startContainer"]}]
    b.write()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    corral("create", "-b", b.path, b.id, cwd=str(elsewhere))
    pid = corral.state(b.id)["pid"]
    corral("start", b.id, cwd=str(elsewhere))
    wait_gone(pid)
    corral("delete", b.id, cwd=str(elsewhere))

    lines = log.read_text().splitlines()
    assert [line.split(" ")[0] for line in lines] == kinds
    statuses = {"prestart": "created", "createRuntime": "created",
                "createContainer": "created", "poststart": "running", "poststop": "stopped"}
    for line in lines:
        kind, cwd, state = line.split(" ", 2)
        where = b.rootfs if kind == "createContainer" else b.path
        assert cwd == os.path.realpath(where), line
        state = json.loads(state)
        assert (state["id"], state["bundle"], state["status"]) == (b.id, b.path, statuses[kind])
    inside = open(os.path.join(b.rootfs, "cwd.log")).read().split(" ", 2)
    assert inside[:2] == ["startContainer", "/tmp"]
    assert json.loads(inside[2])["status"] == "created"


def test_a_hook_whose_bundle_is_gone_is_a_clear_warning(corral, make_bundle, tmp_path):
    """poststop after the bundle was removed: the hook cannot run in it; delete still
    succeeds with a warning naming why."""
    import shutil

    b = make_bundle(["true"])
    b.config["hooks"] = {"poststop": [{"path": "/bin/true"}]}
    b.write()
    corral("create", "-b", b.path, b.id)
    shutil.rmtree(b.path)
    out = corral("delete", "--force", b.id)
    assert (f"warning: error running poststop hook #0 /bin/true: cannot run in the bundle "
            f"directory {b.path}: no such file or directory") in out.stderr
