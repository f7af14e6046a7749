"""Issue 14, as a tool written against runc 1.1.5 sees corral: the command line and its output,
cgroups and devices, terminals.  Real containers on the real kernel; where runc is installed
(`scripts/setup.sh --test` installs it), its own output on the same bundle is the reference."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from corral.cgroups import UNIFIED, detect
from corral.jsonlite import go_dumps
from tests.conftest import CGROUP_PARENT, cgroup_dirs, run_capturing
from tests.test_terminal import ConsoleListener, talk

REAL = detect()
RUNC = shutil.which("runc")
needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")
needs_v1_devices = pytest.mark.skipif(REAL.find("devices") is None or REAL.mode == "v2",
                                      reason="needs a v1 devices hierarchy (devices.list)")
not_pure_v2 = pytest.mark.skipif(REAL.mode == "v2", reason="a pure cgroup v2 host")
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def one_line_error(proc, status: int, *needles: str) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def make_cgroup(path: str) -> None:
    """mkdir, and a v1 cpuset's cpus and mems from its parent (a task cannot join an empty
    cpuset)."""
    os.mkdir(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if os.path.exists(f"{path}/{name}") and REAL.mode != "v2":
            with open(f"{os.path.dirname(path)}/{name}") as f:
                value = f.read().strip()
            with open(f"{path}/{name}", "w") as f:
                f.write(value)


def remove_cgroup(path: str) -> None:
    """rmdir, waiting out the moment a cgroup whose last task just exited stays busy."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.rmdir(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cgroup_paths(corral, cid: str) -> dict[str, str]:
    with open(os.path.join(corral.root, cid, "state.json")) as f:
        return json.load(f)["cgroup"]["paths"]


@pytest.fixture
def running(corral, make_bundle):
    b = make_bundle(["sleep", "300"])
    corral("run", "-d", "-b", b.path, b.id)
    yield b
    corral("delete", "--force", b.id)


# ---- Command line and output -----------------------------------------------------------------


def test_every_exec_failure_exits_255(corral, running, tmp_path):
    """runc's fatalWithCode(..., 255): a caller tells exec's own failures from the process's
    status; one line each.  A usage error of the flags stays 1, as runc's."""
    for argv, needle in (
            (["exec", "nosuch", "true"], "container nosuch does not exist"),
            (["exec", running.id, "/nonexist"], "/nonexist"),
            (["exec", "--pid-file", str(tmp_path / "no" / "pid"), running.id, "true"],
             "No such file"),
            (["exec", running.id], "command"),
            (["exec", "--cwd", "/nope", running.id, "true"], "/nope")):
        line = one_line_error(corral(*argv, check=False), 255, needle)
        assert line.startswith("corral: exec failed: "), line
    corral("pause", running.id)
    try:
        one_line_error(corral("exec", running.id, "true", check=False), 255,
                       "exec failed: cannot exec in a paused container")
    finally:
        corral("resume", running.id)
    assert corral("exec", running.id, "sh", "-c", "exit 7", check=False).returncode == 7
    one_line_error(corral("exec", "--bogus", running.id, "true", check=False), 1, "--bogus")
    # nothing was left running by the failures
    assert json.loads(corral("ps", "--format", "json", running.id).stdout) == [
        corral.state(running.id)["pid"]]


def test_kill_sends_signal_zero_and_any_number(corral, make_bundle):
    b = make_bundle(["sh", "-c", "trap 'touch /tmp/got40' 40; "
                                 "while :; do sleep 0.05; done"])
    corral("run", "-d", "-b", b.path, b.id)
    try:
        for sig in ("0", "+0"):
            corral("kill", b.id, sig)  # asks whether the init exists: it does
        corral("kill", "--all", b.id, "0")
        assert corral.state(b.id)["status"] == "running"
        marker = os.path.join(b.rootfs, "tmp", "got40")
        deadline = time.monotonic() + 20
        while not os.path.exists(marker):  # a real-time signal, by number (runc sends it)
            corral("kill", b.id, "40")
            assert time.monotonic() < deadline, "signal 40 never reached the trap"
            time.sleep(0.2)
        for sig in ("65", "-1", "99999999999"):  # numbers the kernel refuses (not flags)
            one_line_error(corral("kill", b.id, sig, check=False), 1,
                           "unable to signal init: invalid argument")
        one_line_error(corral("kill", b.id, "0x1", check=False), 1, "unknown signal")
        assert corral.state(b.id)["status"] == "running"
    finally:
        corral("delete", "--force", b.id)


def test_exec_joins_an_existing_sub_cgroup(corral, running, tmp_path):
    """runc 1.1's exec --cgroup: PATH for every hierarchy, CONTROLLER:PATH per controller
    (v1); the sub-cgroup must exist; it stays under the container's."""
    paths = cgroup_paths(corral, running.id)
    for path in paths.values():
        make_cgroup(path + "/sub")
    pid_file = tmp_path / "pid"

    def cgroups_of_exec(*flags: str) -> dict[str, str]:
        corral("exec", "-d", "--pid-file", str(pid_file), *flags, running.id, "sleep", "300")
        pid = int(pid_file.read_text())
        found = {}
        for key, path in paths.items():
            with open(path + "/sub/cgroup.procs") as f:
                found[key] = "sub" if str(pid) in f.read().split() else "top"
        os.kill(pid, 9)
        os.waitpid(pid, 0)  # reparented to us, the subreaper
        return found

    assert set(cgroups_of_exec("--cgroup", "sub").values()) == {"sub"}
    if REAL.mode != "v2":
        where = cgroups_of_exec("--cgroup", "memory,pids:sub")
        assert {k for k, v in where.items() if v == "sub"} == {
            k for k in paths if {"memory", "pids"} & set(k.split(","))}
    for flags, needle in ((["--cgroup", "nosuch"], "no such cgroup"),
                          (["--cgroup", "../escape"], "is not a sub cgroup path"),
                          (["--cgroup", "bogus:sub"], "unknown controller 'bogus'"),
                          (["--cgroup", "a:b:c"], "invalid argument"),
                          (["--cgroup", "sub", "--cgroup", "sub"], "missing <controller>:")):
        one_line_error(corral("exec", *flags, running.id, "true", check=False), 255,
                       "--cgroup", needle)
    assert json.loads(corral("ps", "--format", "json", running.id).stdout) == [
        corral.state(running.id)["pid"]]


def test_go_string_escapes():
    """What Go 1.19's encoding/json writes (runc 1.1.5 is built with it)."""
    assert go_dumps({"a": 1, "b": [True, None, "x"]}) == '{"a":1,"b":[true,null,"x"]}'
    assert go_dumps("é<>&\"\\\n\r\t\b\f\x01\x7f\u2028\u2029") == (
        '"é\\u003c\\u003e\\u0026\\"\\\\\\n\\r\\t\\u0008\\u000c\\u0001\x7f\\u2028\\u2029"')
    assert go_dumps("bad \udcff byte") == '"bad \ufffd byte"'
    assert go_dumps({"k": [], "m": {}}, indent="  ") == '{\n  "k": [],\n  "m": {}\n}'


def _annotated(make_bundle):
    b = make_bundle(["sleep", "300"])
    b.config["annotations"] = {"org.z": "é<&>", "org.a": "1"}  # sorted, as Go's maps
    b.write()
    return b


def _state_text(state: dict, created_at: str, pid: int, owner: str = "") -> dict:
    return {"ociVersion": state["ociVersion"], "id": state["id"], "pid": pid,
            "status": "created", "bundle": state["bundle"], "rootfs": state["rootfs"],
            "created": created_at, "annotations": {"org.a": "1", "org.z": "é<&>"},
            "owner": owner}


def test_state_list_ps_are_written_as_runcs(corral, make_bundle):
    b = _annotated(make_bundle)
    corral("create", "-b", b.path, b.id)
    try:
        out = corral("state", b.id).stdout
        state = json.loads(out)
        pid = state["pid"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z",
                            state["created"])  # RFC3339Nano: no trailing zeros
        expect = _state_text(state, state["created"], pid)
        # json.MarshalIndent(state, "", "  "), no newline; UTF-8, <>& escaped
        assert out == go_dumps(expect, indent="  ")
        assert '"org.z": "é\\u003c\\u0026\\u003e"' in out
        listed = corral("list", "--format", "json").stdout
        assert listed == go_dumps([_state_text(state, state["created"], pid, "root")]) + "\n"
        assert corral("list").stdout.splitlines()[1].split()[-1] == "root"
        assert corral("ps", "--format", "json", b.id).stdout == f"[{pid}]\n"
    finally:
        corral("delete", "--force", b.id)
    assert corral("list", "--format", "json").stdout == "null\n"


@needs_runc
def test_state_and_list_match_runcs_bytes(corral, make_bundle, tmp_path):
    """The same bundle under runc and corral: the same text, but for the values that are
    each container's own (pid, time, id)."""
    b = _annotated(make_bundle)
    runc_root = str(tmp_path / "runc-root")
    runc_id = b.id + "r"
    config = dict(b.config, linux=dict(b.config["linux"],
                                       cgroupsPath=f"/{CGROUP_PARENT}/{runc_id}"))
    with open(os.path.join(b.path, "config.json"), "w") as f:
        json.dump(config, f)
    runc = [RUNC, "--root", runc_root]
    made = run_capturing([*runc, "create", "-b", b.path, runc_id], stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr
    try:
        b.write()
        corral("create", "-b", b.path, b.id)
        try:
            ours = {"state": corral("state", b.id).stdout,
                    "list": corral("list", "--format", "json").stdout,
                    "ps": corral("ps", "--format", "json", b.id).stdout}
            theirs = {"state": run_capturing([*runc, "state", runc_id]).stdout,
                      "list": run_capturing([*runc, "list", "--format", "json"]).stdout,
                      "ps": run_capturing([*runc, "ps", "--format", "json", runc_id]).stdout}

            def neutral(text: str, cid: str) -> str:
                text = re.sub(r'"created": ?"[^"]*"', '"created":T', text)
                text = re.sub(r'"pid": ?\d+', '"pid":P', text)
                return re.sub(r"\[\d+\]", "[P]", text.replace(cid, "ID"))

            for key in ours:
                assert neutral(ours[key], b.id) == neutral(theirs[key], runc_id), key
        finally:
            corral("delete", "--force", b.id)
    finally:
        run_capturing([*runc, "delete", "--force", runc_id])


def test_events_features_and_log_lines_are_gos(corral, running, tmp_path):
    stats = corral("events", "--stats", running.id).stdout
    assert stats.endswith("}\n") and stats.count("\n") == 1
    assert go_dumps(json.loads(stats)) + "\n" == stats  # compact, in the order we built
    data = json.loads(stats)["data"]
    usage = list(data["cpu"]["usage"])
    order = ["total", "percpu", "percpu_kernel", "percpu_user", "kernel", "user"]
    assert usage == [k for k in order if k in usage] and usage[-2:] == ["kernel", "user"]
    if data["memory"].get("raw"):
        assert list(data["memory"]["raw"]) == sorted(data["memory"]["raw"])  # a Go map
    memory = list(data["memory"])
    assert memory == [k for k in ("cache", "usage", "swap", "kernel", "kernelTCP", "raw")
                      if k in memory]
    features = corral("features").stdout
    assert features == go_dumps(json.loads(features), indent="    ") + "\n"
    log = tmp_path / "log.json"
    proc = corral("--log", str(log), "--log-format", "json", "state", "no<such>", check=False)
    assert proc.returncode == 1
    [line] = log.read_text().splitlines()
    assert re.fullmatch(r'\{"level":"error","msg":"container id: invalid id \'no\\u003csuch'
                        r'\\u003e\': [^"]*","time":"' + RFC3339 + r'"\}', line), line


@needs_runc
def test_events_stats_have_runcs_shape(corral, running, tmp_path, make_bundle):
    """Every key runc prints, in runc's order (values and omitted zeros aside)."""
    b = make_bundle(["sleep", "300"])
    runc_id = b.id
    runc = [RUNC, "--root", str(tmp_path / "runc-root")]
    made = run_capturing([*runc, "run", "-d", "-b", b.path, runc_id], stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr
    try:
        theirs = json.loads(run_capturing([*runc, "events", "--stats", runc_id]).stdout)
    finally:
        run_capturing([*runc, "delete", "--force", runc_id])
    ours = json.loads(corral("events", "--stats", running.id).stdout)

    def keys(obj, path=""):
        out = []
        if isinstance(obj, dict):
            for k, v in obj.items():
                out += [path + "/" + k] + keys(v, path + "/" + k)
        return out

    mine, reference = keys(ours), keys(theirs)
    common = [k for k in reference if k in mine]
    assert [k for k in mine if k in reference] == common  # one order
    # what omitempty leaves out where a value is 0 (it differs between two containers)
    missing = set(reference) - set(mine)
    assert all(k.startswith(("/data/memory/cache", "/data/blkio/", "/data/cpu/throttling/"))
               for k in missing), missing


def test_update_resources_keys_match_as_gos_decoder(corral, running, tmp_path):
    """runc's update decodes --resources with Go's encoding/json: keys in any case, the
    exact name first; two spellings of one object merge."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"PIDS": {"Limit": 21}, "pids": {"limit": 20},
                                "Memory": {"LIMIT": 100 << 20}}))
    corral("update", "-r", str(path), running.id)
    paths = cgroup_paths(corral, running.id)
    if REAL.mode == "v2":
        assert open(paths[UNIFIED] + "/pids.max").read().strip() == "20"
        assert open(paths[UNIFIED] + "/memory.max").read().strip() == str(100 << 20)
    else:
        pids = next(p for k, p in paths.items() if "pids" in k.split(","))
        memory = next(p for k, p in paths.items() if "memory" in k.split(","))
        assert open(pids + "/pids.max").read().strip() == "20"
        assert open(memory + "/memory.limit_in_bytes").read().strip() == str(100 << 20)
    path.write_text(json.dumps({"CPU": {"Shares": 512}, "cpu": {"quota": 50000,
                                                                "period": 100000}}))
    corral("update", "-r", str(path), running.id)
    if REAL.find("cpu") and REAL.mode != "v2":
        cpu = next(p for k, p in paths.items() if "cpu" in k.split(","))
        assert open(cpu + "/cpu.shares").read().strip() == "512"
        assert open(cpu + "/cpu.cfs_quota_us").read().strip() == "50000"
    path.write_text(json.dumps({"Cpu": {"Bogus": 1}}))
    one_line_error(corral("update", "-r", str(path), running.id, check=False), 1,
                   "linux.resources.cpu.Bogus: unknown field")


def test_go_field_names_fold_as_go():
    from corral.runtime.update import _SCHEMA, go_field_names

    assert go_field_names({"\u212aernel": 1, "memory": {"\u017fWAP": 2}}, _SCHEMA) == {
        "\u212aernel": 1, "memory": {"swap": 2}}  # no top-level "kernel": stays, unknown
    assert go_field_names({"blockio": {"WeightDevice": [{"Major": 8}]}}, _SCHEMA) == {
        "blockIO": {"weightDevice": [{"major": 8}]}}
    assert go_field_names({"unified": {"Memory.Max": "1"}}, _SCHEMA) == {
        "unified": {"Memory.Max": "1"}}  # a map: its keys are the user's


# ---- Cgroups and devices ---------------------------------------------------------------------


@not_pure_v2
def test_unified_refused_before_anything_is_made(corral, make_bundle, running):
    b = make_bundle(["true"])
    b.config["linux"]["resources"] = {"pids": {"limit": 9}, "unified": {"pids.max": "10"}}
    b.write()
    one_line_error(corral("create", "-b", b.path, b.id, check=False), 1,
                   "linux.resources.unified: cannot use unified on cgroup v1")
    assert not os.path.exists(os.path.join(corral.root, b.id))
    assert not [d for d in cgroup_dirs() if os.path.basename(d) == b.id]
    # update refuses it before writing any field
    pids = next(p for k, p in cgroup_paths(corral, running.id).items()
                if k != UNIFIED and "pids" in k.split(","))
    before = open(pids + "/pids.max").read()
    path = os.path.join(b.path, "r.json")
    with open(path, "w") as f:
        json.dump({"pids": {"limit": 9}, "unified": {"pids.max": "10"}}, f)
    one_line_error(corral("update", "-r", path, running.id, check=False), 1,
                   "linux.resources.unified: cannot use unified on cgroup v1")
    assert open(pids + "/pids.max").read() == before


def _frozen_dirs(name: str) -> list[tuple[str, str, str]]:
    """(dir, file, thawed value) of a frozen cgroup ``name`` under our parent, in the
    freezer hierarchy and (where it is not pure v1) the unified one."""
    out = []
    key = REAL.find("freezer") if REAL.mode != "v2" else None
    if key is not None:
        out.append((f"{REAL.v1[key]}/{CGROUP_PARENT}/{name}", "freezer.state", "THAWED"))
    if REAL.unified is not None:
        out.append((f"{REAL.unified}/{CGROUP_PARENT}/{name}", "cgroup.freeze", "0"))
    return out


@pytest.mark.parametrize("which", [0, 1], ids=["freezer-or-unified", "unified"])
def test_an_existing_frozen_cgroup_is_refused_at_create(corral, make_bundle, which):
    """Not a hang: the container's process could never run (runc: "container's cgroup
    unexpectedly frozen"); nothing is made, the frozen cgroup is left as it was."""
    places = _frozen_dirs("frozen")
    if which >= len(places):
        pytest.skip("one freezer here")
    directory, name, thawed = places[which]
    os.makedirs(directory)
    try:
        with open(f"{directory}/{name}", "w") as f:
            f.write("FROZEN" if name == "freezer.state" else "1")
        b = make_bundle(["true"])
        b.config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/frozen"
        b.write()
        proc = corral("create", "-b", b.path, b.id, check=False, timeout=30)
        one_line_error(proc, 1, "linux.cgroupsPath: cgroup ", "already exists and is frozen")
        assert not os.path.exists(os.path.join(corral.root, b.id))
        assert [d for d in cgroup_dirs() if os.path.basename(d) == "frozen"] == [directory]
    finally:
        with open(f"{directory}/{name}", "w") as f:
            f.write(thawed)
        os.rmdir(directory)


def test_a_populated_cgroup_is_refused_before_anything_is_made(corral, make_bundle):
    """A cgroupsPath holding processes in every hierarchy: refused at once (it waited ~2 s
    per hierarchy trying to remove what was not its own), the processes left alone."""
    outsider = subprocess.Popen(["sleep", "300"])
    made = []
    try:
        for point in REAL.hierarchies().values():
            path = f"{point}/{CGROUP_PARENT}/occupied"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            make_cgroup(path)
            made.append(path)
            with open(f"{path}/cgroup.procs", "w") as f:
                f.write(str(outsider.pid))
        b = make_bundle(["true"])
        b.config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/occupied"
        b.write()
        proc = corral("create", "-b", b.path, b.id, check=False, timeout=15)
        one_line_error(proc, 1, "already exists and is not empty")
        assert outsider.poll() is None
        assert sorted(cgroup_dirs()) == sorted(made)
        assert not os.path.exists(os.path.join(corral.root, b.id))
    finally:
        outsider.kill()
        outsider.wait()
        for path in made:
            remove_cgroup(path)


def _device_bundle(make_bundle, rules: list[dict]):
    """A container with a /dev node the defaults do not allow (c 60:0, a major reserved for
    local use: no driver) behind a deny-all device cgroup; it opens the node for reading,
    then for writing.  The cgroup says EPERM; past it, the missing driver says ENXIO."""
    b = make_bundle(["sh", "-c", "(exec 3</dev/local0) 2>&1; (exec 4>/dev/local0) 2>&1; "
                                 "cat /sys/fs/cgroup/devices/devices.list 2>/dev/null; true"])
    b.config["linux"]["devices"] = [{"path": "/dev/local0", "type": "c", "major": 60,
                                     "minor": 0, "fileMode": 0o666}]
    b.config["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}, *rules]}
    b.write()
    return b


DENIED, NO_DRIVER = "Operation not permitted", "No such device or address"


def test_linux_devices_get_no_allow_rule_of_their_own(corral, make_bundle):
    b = _device_bundle(make_bundle, [])
    out = corral("run", "-b", b.path, b.id).stdout.splitlines()
    assert DENIED in out[0] and DENIED in out[1], out
    if REAL.find("devices") and REAL.mode != "v2":
        assert "c 60:0" not in "\n".join(out)  # devices.list: the defaults only
        assert "c 1:3 rwm" in out


def test_unknown_access_letters_are_ignored(corral, make_bundle):
    b = _device_bundle(make_bundle, [
        {"allow": True, "type": "c", "major": 60, "minor": 0, "access": "rxq"},
        {"allow": True, "type": "c", "major": 60, "minor": 1, "access": "xyz"}])  # no letter
    out = corral("run", "-b", b.path, b.id).stdout.splitlines()
    assert NO_DRIVER in out[0] and DENIED in out[1], out  # read allowed, write not
    if REAL.find("devices") and REAL.mode != "v2":
        assert "c 60:0 r" in out and "c 60:1" not in "\n".join(out)


def test_kernel_memory_limits_are_ignored_with_a_warning(corral, make_bundle, running):
    b = make_bundle(["true"])
    b.config["linux"]["resources"] = {"memory": {"kernel": 64 << 20, "kernelTCP": 32 << 20}}
    b.write()
    corral("create", "-b", b.path, b.id)
    try:
        line = one_line_error(corral("update", "--kernel-memory-tcp", "16m", "--kernel-memory",
                                     "8m", running.id, check=False), 0, "warning")
        assert "kernel memory settings" in line
        memory = REAL.find("memory") if REAL.mode != "v2" else None
        if memory is not None:
            for cid in (b.id, running.id):
                d = cgroup_paths(corral, cid)[memory]
                for name in ("memory.kmem.tcp.limit_in_bytes", "memory.kmem.limit_in_bytes"):
                    if os.path.exists(f"{d}/{name}"):  # untouched: the kernel's unlimited
                        assert int(open(f"{d}/{name}").read()) > 1 << 40, name
    finally:
        corral("delete", "--force", b.id)
    proc = corral("run", "-b", b.path, b.id)
    one_line_error(proc, 0, "warning: linux.resources: kernel memory settings")


# ---- Terminals -------------------------------------------------------------------------------


@pytest.mark.parametrize("devpts", ["gid=5", "no gid", "ro"])
def test_pty_slave_is_chowned_to_the_uid_only(corral, make_bundle, tmp_path, devpts):
    """run and exec: the slave's owner is the process's uid; its group stays what devpts
    gave it (its gid= option, 5 in runc's spec; else the opener's, root).  On a read-only
    devpts the owner stays root and the process runs, as with runc (EROFS is let go)."""
    b = make_bundle(["sh", "-c", "stat -c '%u:%g' $(tty); echo do''ne; sleep 300"])
    b.config["process"]["terminal"] = True
    b.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    for mount in b.config["mounts"]:
        if mount["destination"] == "/dev/pts" and devpts == "no gid":
            mount["options"] = [o for o in mount["options"] if not o.startswith("gid=")]
        elif mount["destination"] == "/dev/pts" and devpts == "ro":
            mount["options"].append("ro")
    b.write()
    group = "0" if devpts == "no gid" else "5"
    owner = {"run": "1000", "exec": "1001"} if devpts != "ro" else {"run": "0", "exec": "0"}
    listener = ConsoleListener(str(tmp_path / "run.sock"))
    try:
        corral("create", "--console-socket", listener.path, "-b", b.path, b.id)
        corral("start", b.id)
        out = talk(listener.wait(), b"", b"done")
        assert f"{owner['run']}:{group}".encode() in out, out
    finally:
        listener.close()
    listener = ConsoleListener(str(tmp_path / "exec.sock"))
    init = corral.state(b.id)["pid"]
    pid_file = tmp_path / "exec.pid"
    try:
        corral("exec", "-d", "-t", "--console-socket", listener.path, "--pid-file",
               str(pid_file), "-u", "1001:1002", b.id,
               "sh", "-c", "stat -c '%u:%g' $(tty); echo do''ne; sleep 300")
        out = talk(listener.wait(), b"", b"done")
        assert f"{owner['exec']}:{group}".encode() in out, out
    finally:
        listener.close()
        corral("delete", "--force", b.id)
        # ours (the subreaper's), reaped before the leak check: the exec'd one first, as
        # the init (pid 1 of their namespace) exits only once the others are reaped
        for pid in (int(pid_file.read_text()) if pid_file.exists() else 0, init):
            if pid:
                os.waitpid(pid, 0)
