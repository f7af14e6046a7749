"""The plan's executor (corral-exec) step by step, against the real kernel: plans built by
hand and run without any namespace, so single steps can be tested fast; and the wire format
shared with the compiler."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.plan import format as f
from corral.plan.compiler import CREATE_DIR, CREATE_FILE, NO_REG, PlanOptions, compile_plan
from corral.runtime import protocol as p


def run_plan(steps, *, exec_true: bool = True, raw: bytes | None = None) -> list:
    """Runs the steps in a launcher of its own (no clone: the launcher runs them all) and
    returns the messages it sent until it exec'd /bin/true or failed."""
    template = f.Template()
    for op, *args in steps:
        template.add(op, *args)
    if exec_true:
        template.add("EXEC", ["/bin/true"], [])
    frame = raw if raw is not None else template.fill({})
    ours, theirs = socket.socketpair()
    os.set_inheritable(theirs.fileno(), True)
    pid = os.posix_spawn(f.EXECUTOR, [f.EXECUTOR, "launch", str(theirs.fileno())], {})
    theirs.close()
    ours.sendall(frame)
    decoder, out = p.FrameDecoder(), []
    while chunk := ours.recv(65536):
        out += decoder.feed(chunk)
    ours.close()
    _, status = os.waitpid(pid, 0)
    if not out:
        assert os.waitstatus_to_exitcode(status) == 0
    return out


def test_the_op_table_is_the_executors():
    """The compiler encodes from plan_ops.h; the executor was built from it too."""
    listed = subprocess.run([f.EXECUTOR, "ops"], capture_output=True, text=True, check=True)
    rows = [line.split(" ", 1) for line in listed.stdout.splitlines()]
    assert [(name, args.strip()) for name, args in rows] == \
        [(name, args) for name, (_code, args) in sorted(f.OPS.items(), key=lambda i: i[1][0])]


def test_usage_and_unknown_mode():
    proc = subprocess.run([f.EXECUTOR], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: corral-exec" in proc.stderr


def test_a_plan_of_another_version_is_refused():
    frame = f.frame(f.MSG_PLAN, f._pack_I(f.MAGIC) + f._pack_I(f.VERSION + 1))
    [error] = run_plan([], raw=frame)
    assert isinstance(error, p.Error) and "not version" in error.message


def test_arguments_of_the_wrong_kind_are_refused():
    """A step whose arguments do not match its table entry fails naming the step."""
    bad = f.frame(f.MSG_PLAN, f._pack_I(f.MAGIC) + f._pack_I(f.VERSION) +
                  f._pack_step(f.OPS["UMASK"][0], 0, 6) + f.enc_str("x"))
    [error] = run_plan([], raw=bad)
    assert error.message == "step UMASK: arguments are not i: protocol error"


def test_a_plan_without_exec_fails():
    [error] = run_plan([("UMASK", 0o22)], exec_true=False)
    assert "without exec" in error.message


def test_step_errors_name_what_failed():
    [error] = run_plan([("WRITE", "/no/such/dir/file", 0, b"x", "process.oomScoreAdj")])
    assert error.message == ("process.oomScoreAdj: write /no/such/dir/file: no such file or "
                             "directory")
    assert error.errno == errno.ENOENT and error.stage == "write"


def test_connect_reaches_a_socket_longer_than_sun_path(tmp_path):
    """The seccomp agent's socket is reached through its directory when sun_path cannot
    hold its path."""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    path = deep / "agent.sock"
    assert len(str(path)) > 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(deep)  # bind by its relative name, then leave
    try:
        server.bind("agent.sock")
    finally:
        os.chdir(cwd)
    server.listen(1)
    assert run_plan([("CONNECT", 0, str(path), "linux.seccomp.listenerPath"),
                     ("WRITE_FD", 0, b"x", "write to the agent")]) == []
    conn, _ = server.accept()
    assert conn.recv(1) == b"x"
    conn.close()
    server.close()


def test_resolve_makes_directories_and_files_inside(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root + "/etc")
    os.symlink("/etc", root + "/evil")
    os.symlink("../../../tmp/nope", root + "/f")
    assert run_plan([("ROOT_OPEN", 0, root, "root"),
                     ("RESOLVE", 1, 0, "/evil/sub/dir", CREATE_DIR, NO_REG, 0, "", [], "dir"),
                     ("RESOLVE", 2, 0, "/f", CREATE_FILE, NO_REG, 0, "", [], "file")]) == []
    assert os.path.isdir(root + "/etc/sub/dir")
    assert os.path.isfile(root + "/tmp/nope") and not os.path.exists("/tmp/nope")


def test_resolve_loop_is_an_error(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    os.symlink("b", root + "/a")
    os.symlink("a", root + "/b")
    [error] = run_plan([("ROOT_OPEN", 0, root, "root"),
                        ("RESOLVE", 1, 0, "/a/x", CREATE_DIR, NO_REG, 0, "", [], "mounts[0]")])
    assert error.errno == errno.ELOOP and error.message.startswith("mounts[0]: ")


_NAMES = st.sampled_from(["a", "b", "c", "..", ".", "", "l1", "l2", "l3", "l4"])
_TARGETS = st.lists(_NAMES, min_size=0, max_size=5).map("/".join)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.lists(st.tuples(st.booleans(), _TARGETS), min_size=4, max_size=4),
       path=st.lists(_NAMES, max_size=8).map("/".join),
       kind=st.sampled_from([CREATE_DIR, CREATE_FILE]))
def test_resolve_never_makes_anything_outside_the_root(links, path, kind):
    """Whatever symlinks the rootfs holds, what RESOLVE makes is inside it."""
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.realpath(tmp)
        root = base + "/root"
        os.makedirs(root + "/a/b")
        os.makedirs(base + "/outside")  # a tempting target next to the root
        for i, (is_abs, target) in enumerate(links, start=1):
            os.symlink(("/" if is_abs else "../../") + target, f"{root}/a/l{i}")
        out = run_plan([("ROOT_OPEN", 0, root, "root"),
                        ("RESOLVE", 1, 0, "/a/" + path, kind, NO_REG, 0, "", [], "x")])
        for msg in out:
            assert isinstance(msg, p.Error) and msg.errno in (
                errno.ELOOP, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOENT,
                errno.EINVAL), msg
        assert sorted(os.listdir(base)) == ["outside", "root"]
        assert os.listdir(base + "/outside") == []


def test_resolve_retries_when_a_rename_races_a_dotdot_step(tmp_path):
    """openat2 with RESOLVE_IN_ROOT fails (EAGAIN) a walk that took a ".." step while any
    rename or mount happened on the system; RESOLVE retries it.  A rename loop elsewhere
    makes that race nearly every time (without the retry a fifth of these failed)."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "churn" / "x").mkdir(parents=True)
    churn = str(tmp_path / "churn")
    renamer = subprocess.Popen([sys.executable, "-c", f"""
import os
while True:
    os.rename({churn!r} + "/x", {churn!r} + "/y")
    os.rename({churn!r} + "/y", {churn!r} + "/x")
"""])
    try:
        for i in range(100):
            path = "/a/b/" + "../b/" * 10 + f"d{i}"
            assert run_plan([("ROOT_OPEN", 0, str(root), "root"),
                             ("RESOLVE", 1, 0, path, CREATE_DIR, NO_REG, 0, "", [], "x")]) == []
    finally:
        renamer.kill()  # our own child, by its pid
        renamer.wait()
    assert len(os.listdir(root / "a" / "b")) == 100


def test_compiled_plans_fill_their_slots():
    from corral.oci.config import parse_config
    from corral.oci.spec import default_spec

    raw = default_spec()
    raw["process"]["terminal"] = False
    plan = compile_plan(parse_config(raw), PlanOptions(bundle="/b"))
    assert {"fifo", "keyring", "rootfs", "env", "hostname"} <= plan.template.slots
    assert plan.template.names[0] == "DUMPABLE" and plan.template.names[-1] == "EXEC"
    with pytest.raises(KeyError):
        plan.template.fill({})
    values = {"fifo": "/f", "keyring": "_ses.x", "rootfs": "/r", "env": ["A=1"],
              "hostname": "h", "console": ""}
    frame = plan.template.fill(values)
    assert frame[4:6] == f.MSG_PLAN.to_bytes(2, "little")
    assert b"_ses.x\0" in frame and b"A=1\0" in frame
