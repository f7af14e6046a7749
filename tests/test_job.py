"""``corral.Job`` on the real kernel, through ``corral run --bundle``: the host-root default
(read-only all the way down, private /tmp), limits in the cgroup, binds, network, a
directory root with a per-job overlay, an OCI bundle root, and bad input for every field."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid

import pytest

from corral.errors import ConfigError
from corral.jobs.job import Bind, Job, Limits, parse_duration, parse_size
from tests.conftest import CGROUP_PARENT, CORRAL, host_mounts, run_capturing


def new_id() -> str:
    return f"j{uuid.uuid4().hex[:10]}"


def run_job(corral, tmp_path, job: Job, cid: str | None = None, timeout: float = 60):
    """Bundle ``job``, ``corral run`` it, clean the bundle up; (process, bundle)."""
    cid = cid or new_id()
    bundle = job.bundle(str(tmp_path / "work" / cid), cid, CGROUP_PARENT)
    try:
        proc = corral("run", "--bundle", bundle.path, cid, check=False, timeout=timeout)
    finally:
        bundle.cleanup()
    return proc, bundle


def sh(script: str, **kwargs) -> Job:
    return Job(["/bin/sh", "-c", script], **kwargs)


# --- the host's root, read-only ------------------------------------------------------------


def test_host_root_runs_python_and_sh(corral, tmp_path):
    proc, bundle = run_job(corral, tmp_path, Job(["python3", "-c", "print(6 * 7)"]))
    assert (proc.returncode, proc.stdout) == (0, "42\n"), proc.stderr
    assert not os.path.exists(bundle.path)  # cleaned up
    proc, _ = run_job(corral, tmp_path, sh("echo $PATH; hostname; id -u"))
    assert proc.stdout.split() == ["/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                   "corral", "0"], proc.stderr


def test_host_root_cannot_write_host_files(corral, tmp_path):
    host_dir = tempfile.mkdtemp(prefix="corral-job-", dir="/var/tmp")
    try:
        with open(f"{host_dir}/file", "w") as f:
            f.write("host\n")
        marker = f"corral-job-{uuid.uuid4().hex}"
        script = "; ".join(
            f"if {attempt} 2>/dev/null; then echo WROTE {what}; fi"
            for what, attempt in [
                ("etc", f"touch /etc/{marker}"),
                ("usr", f"touch /usr/{marker}"),
                ("root", f"touch /root/{marker}"),
                ("new-top", f"mkdir /{marker}"),
                ("file", f"echo job > {host_dir}/file"),
                ("rm", f"rm {host_dir}/file"),
                ("newfile", f"touch {host_dir}/new"),
            ])
        proc, _ = run_job(corral, tmp_path, sh(script + f"; cat {host_dir}/file"))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "host\n"  # readable, and nothing was written
        assert os.listdir(host_dir) == ["file"]
        for place in ("/etc", "/usr", "/root", "/"):
            assert not os.path.exists(f"{place}/{marker}")
    finally:
        shutil.rmtree(host_dir)


def test_host_root_submounts_are_read_only_too(corral, tmp_path):
    """A writable mount below a host directory stays read-only in the job (rro): the job
    runs in a private mount namespace of the test holding such a tmpfs."""
    host_dir = tempfile.mkdtemp(prefix="corral-job-", dir="/var/tmp")
    cid = new_id()
    bundle = sh(f"touch {host_dir}/sub/x && echo WROTE; cat {host_dir}/sub/seen").bundle(
        str(tmp_path / "work"), cid, CGROUP_PARENT)
    try:
        script = (f"mount -t tmpfs tmpfs {host_dir}/sub && echo ok > {host_dir}/sub/seen && "
                  f"exec {' '.join(CORRAL)} --root {corral.root} run --bundle {bundle.path} {cid}")
        os.mkdir(f"{host_dir}/sub")
        proc = run_capturing(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              script])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "ok\n"
        assert "Read-only file system" in proc.stderr
    finally:
        bundle.cleanup()
        shutil.rmtree(host_dir)


def test_tmp_and_run_are_private(corral, tmp_path):
    (tmp_path / "host-marker").write_text("x")
    name = f"corral-job-{uuid.uuid4().hex}"
    proc, _ = run_job(corral, tmp_path, sh(
        f"test -e {tmp_path}/host-marker && echo SEEN; {{ ls -A /tmp; ls -A /run; }} | grep -c . ; "
        f"echo job > /tmp/{name} && cat /tmp/{name}; touch /run/{name} && echo run-ok; "
        "stat -c %a /tmp"))
    assert proc.stdout.split() == ["0", "job", "run-ok", "1777"], proc.stderr
    assert not os.path.exists(f"/tmp/{name}") and not os.path.exists(f"/run/{name}")


def test_network_none_and_host(corral, tmp_path):
    host_netns = os.readlink("/proc/self/ns/net")
    proc, _ = run_job(corral, tmp_path,
                      sh("readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate"))
    netns, lo_state = proc.stdout.split()
    assert netns != host_netns and lo_state in ("up", "unknown"), proc.stderr
    proc, _ = run_job(corral, tmp_path, sh("readlink /proc/self/ns/net", network="host"))
    assert proc.stdout.strip() == host_netns, proc.stderr


def test_user_cwd_env_hostname(corral, tmp_path):
    job = sh('echo "$(id -u):$(id -g) $(pwd) $GREETING $(hostname)"', user="1000:2000",
             cwd="/usr", env={"GREETING": "hi"}, hostname="worker-1")
    proc, _ = run_job(corral, tmp_path, job)
    assert proc.stdout == "1000:2000 /usr hi worker-1\n", proc.stderr
    proc, _ = run_job(corral, tmp_path, sh('echo "$(id -u):$(id -g)"', user=1234))
    assert proc.stdout == "1234:1234\n", proc.stderr


# --- limits --------------------------------------------------------------------------------


READ_LIMITS = """
c=/sys/fs/cgroup
if [ -e $c/cgroup.controllers ]; then
  cat $c/memory.max $c/pids.max; cat $c/cpu.max
else
  cat $c/memory/memory.limit_in_bytes $c/pids/pids.max
  echo "$(cat $c/cpu/cpu.cfs_quota_us) $(cat $c/cpu/cpu.cfs_period_us)"
fi
"""


def test_limits_land_in_the_cgroup(corral, tmp_path):
    job = sh(READ_LIMITS, limits={"memory": "96M", "pids": 33, "cpus": 1.5, "time": "5m"})
    assert job.limits == Limits(memory=96 << 20, cpus=1.5, pids=33, time=300.0)
    proc, _ = run_job(corral, tmp_path, job)
    assert proc.stdout.split() == [str(96 << 20), "33", "150000", "100000"], proc.stderr


FORK_TEN = """
import os, time
pids = []
try:
    for _ in range(10):
        pid = os.fork()
        if pid == 0:
            time.sleep(10)
            os._exit(0)
        pids.append(pid)
except OSError as err:
    print("refused after", len(pids), err.errno)
for pid in pids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def test_pids_and_memory_limits_are_enforced(corral, tmp_path):
    proc, _ = run_job(corral, tmp_path, Job(["python3", "-c", FORK_TEN], limits={"pids": 4}))
    assert proc.stdout == "refused after 3 11\n", proc.stderr
    proc, _ = run_job(corral, tmp_path, Job(
        ["python3", "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"],
        limits={"memory": "48M"}))
    assert proc.returncode == 137, (proc.returncode, proc.stderr)


# --- bind mounts ---------------------------------------------------------------------------


def test_read_only_and_read_write_binds(corral, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in").write_text("data\n")
    job = sh("cat /in/in; touch /in/x 2>/dev/null && echo WROTE-RO; echo out > /out/result",
             mounts=[Bind(str(ro), "/in"), f"{rw}:/out:rw"])
    proc, _ = run_job(corral, tmp_path, job)
    assert (proc.returncode, proc.stdout) == (0, "data\n"), proc.stderr
    assert os.listdir(ro) == ["in"]
    assert (rw / "result").read_text() == "out\n"


def test_bind_destination_defaults_to_source(corral, tmp_path):
    src = tmp_path / "same"
    src.mkdir()
    (src / "f").write_text("here\n")
    proc, _ = run_job(corral, tmp_path, sh(f"cat {src}/f", mounts=[{"source": str(src)}]))
    assert proc.stdout == "here\n", proc.stderr


def test_bind_destination_in_the_read_only_host_tree_must_exist(corral, tmp_path):
    dest = f"/usr/corral-job-{uuid.uuid4().hex}"
    proc, _ = run_job(corral, tmp_path, sh("true", mounts=[f"{tmp_path}:{dest}"]))
    assert proc.returncode != 0 and f"on {dest}: " in proc.stderr, proc.stderr
    assert "read-only file system" in proc.stderr
    assert not os.path.exists(dest)


# --- a directory root: one overlay per job --------------------------------------------------


@pytest.fixture
def lower(tmp_path, rootfs_template):
    path = tmp_path / "lower"
    shutil.copytree(rootfs_template, path, symlinks=True)
    return str(path)


def tree(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), path)
                  for d, dirs, files in os.walk(path) for n in dirs + files)


def test_overlay_isolates_jobs_and_the_lower_dir(corral, tmp_path, lower):
    before = tree(lower)
    a_id, b_id = new_id(), new_id()
    a = sh("echo A > /etc/who; rm /bin/true; sleep 30", root=lower).bundle(
        str(tmp_path / "work-a"), a_id, CGROUP_PARENT)
    try:
        corral("create", "--bundle", a.path, a_id)
        corral("start", a_id)
        deadline = time.monotonic() + 10
        while not os.path.exists(f"{a.upper}/etc/who"):
            assert time.monotonic() < deadline, "job A did not write"
            time.sleep(0.02)
        # The overlay lives in the container's mount namespace only.
        assert not [m for m in host_mounts() if a.path in m]
        proc, b = run_job(corral, tmp_path, sh(
            "cat /etc/who 2>/dev/null || echo none; test -e /bin/true && echo true-here; "
            "echo B > /etc/who; cat /etc/who", root=lower), b_id)
        assert proc.stdout.split() == ["none", "true-here", "B"], proc.stderr
        assert open(f"{a.upper}/etc/who").read() == "A\n"
    finally:
        corral("delete", "--force", a_id, check=False)
        a.cleanup()
    assert tree(lower) == before
    assert not os.path.exists(a.path) and not os.path.exists(b.path)


def test_overlay_kept_with_keep(corral, tmp_path, lower):
    proc, bundle = run_job(corral, tmp_path, sh("echo kept > /result", root=lower, keep=True))
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(bundle.path) == ["upper"]
    assert open(f"{bundle.upper}/result").read() == "kept\n"
    assert not os.path.exists(f"{lower}/result")
    shutil.rmtree(bundle.path)


def test_overlay_root_must_be_the_first_mount(corral, tmp_path, lower):
    cid = new_id()
    bundle = sh("true", root=lower).bundle(str(tmp_path / "work"), cid, CGROUP_PARENT)
    try:
        config = bundle.config
        config["mounts"].append(config["mounts"].pop(0))
        with open(f"{bundle.path}/config.json", "w") as f:
            json.dump(config, f)
        proc = corral("run", "--bundle", bundle.path, cid, check=False)
        last = len(config["mounts"]) - 1
        assert proc.returncode != 0
        assert f"mounts[{last}]: an overlay on / (the root filesystem) must be the first " \
               "mount" in proc.stderr
    finally:
        bundle.cleanup()


def test_overlay_root_errors_name_the_mount(corral, tmp_path, lower):
    for change, message in [
        (lambda m: m["options"].__setitem__(0, f"lowerdir={tmp_path}/gone"),
         "mounts[0]: mount overlay on /: "),
        (lambda m: m["options"].append("rprivate"),
         "mounts[0].options: an overlay on / takes no bind, propagation or recursive options"),
    ]:
        cid = new_id()
        bundle = sh("true", root=lower).bundle(str(tmp_path / cid), cid, CGROUP_PARENT)
        try:
            change(bundle.config["mounts"][0])
            with open(f"{bundle.path}/config.json", "w") as f:
                json.dump(bundle.config, f)
            proc = corral("run", "--bundle", bundle.path, cid, check=False)
            assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        finally:
            bundle.cleanup()


# --- an OCI bundle as the root -------------------------------------------------------------


def test_bundle_root_with_overrides(corral, tmp_path, make_bundle):
    b = make_bundle(["sh", "-c", "echo bundle-args"])
    b.config["process"]["env"].append("FROM_BUNDLE=yes")
    b.write()
    proc, _ = run_job(corral, tmp_path, Job(bundle=b.path))
    assert proc.stdout == "bundle-args\n", proc.stderr
    job = Job(["sh", "-c", "echo $FROM_BUNDLE $X; hostname"], bundle=b.path, env={"X": "1"},
              hostname="over")
    proc, made = run_job(corral, tmp_path, job)
    assert proc.stdout.split() == ["yes", "1", "over"], proc.stderr
    assert made.config["root"]["path"] == b.rootfs
    assert made.config["linux"]["cgroupsPath"].startswith(f"/{CGROUP_PARENT}/")
    assert os.path.exists(f"{b.path}/config.json")  # the bundle itself is left as it was


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"limits": {"memory": "12Q"}},
     "job.limits.memory: '12Q' is not a size (use 512M, 1G or bytes)"),
    ({"limits": {"memory": -5}}, "job.limits.memory: -5 must be more than 0 bytes"),
    ({"limits": {"cpus": "two"}}, "job.limits.cpus: 'two' is not a number of CPUs"),
    ({"limits": {"cpus": 0.001}}, "job.limits.cpus: 0.001 is below the kernel's minimum"),
    ({"limits": {"pids": 0}}, "job.limits.pids: 0 is not a positive integer"),
    ({"limits": {"time": "5 weeks"}}, "job.limits.time: '5 weeks' is not a duration"),
    ({"limits": {"time": 0}}, "job.limits.time: 0 must be more than 0 seconds"),
    ({"limits": {"disk": "1G"}}, "job.limits.disk: unknown limit"),
    ({"limits": "1G"}, "job.limits: '1G' is not a table of limits"),
    ({"env": {"A": ["x"]}}, "job.env.A: ['x'] is not a string"),
    ({"env": ["NOEQUALS"]}, "job.env[0]: 'NOEQUALS' is not NAME=value"),
    ({"env": {"A=B": "x"}}, "job.env: 'A=B' is not a variable name"),
    ({"cwd": "relative"}, "job.cwd: 'relative' is not an absolute path"),
    ({"user": "alice"}, "job.user: 'alice' is not uid or uid:gid"),
    ({"user": "1:2:3"}, "job.user: '1:2:3' is not uid or uid:gid"),
    ({"user": -1}, "job.user: -1: ids go from 0"),
    ({"hostname": "bad host"}, "job.hostname: 'bad host' is not a host name"),
    ({"mounts": ["/no/such/dir:/x"]}, "job.mounts[0].source: /no/such/dir does not exist"),
    ({"mounts": [{"source": "/etc", "destination": "rel"}]},
     "job.mounts[0].destination: 'rel' is not an absolute path"),
    ({"mounts": ["/etc:/x:rx"]}, "job.mounts[0]: '/etc:/x:rx' is not SRC[:DST[:ro|rw]]"),
    ({"mounts": ["/etc:/"]}, "job.mounts[0].destination: cannot bind over /"),
    ({"mounts": [{"source": "/etc", "readonly": "yes"}]},
     "job.mounts[0].readonly: 'yes' is not true or false"),
    ({"mounts": "/etc"}, "job.mounts: '/etc' is not a list of bind mounts"),
    ({"network": "wifi"}, "job.network: 'wifi' is not 'none', 'host', 'bridge'"),
    ({"root": "/no/such/root"}, "job.root: /no/such/root does not exist"),
    ({"root": "/etc/hostname"}, "job.root: /etc/hostname is not a directory"),
    ({"bundle": "/etc"}, "job.bundle: /etc is not an OCI bundle (no config.json)"),
    ({"root": "/etc", "bundle": "/etc"}, "job.bundle: give root or bundle, not both"),
    ({"keep": True}, "job.keep: only a directory root has a layer to keep"),
    ({"retries": -1}, "job.retries: -1 is not a count"),
])
def test_bad_input_names_the_field(kwargs, message):
    with pytest.raises(ConfigError) as err:
        Job(["true"], **kwargs)
    assert str(err.value).startswith(message), str(err.value)


def test_bad_args_and_bridge():
    for args, message in [(None, "job.args: a command is needed"),
                          ([], "job.args: [] is not a non-empty list"),
                          ("echo hi", "job.args: 'echo hi' is not a non-empty list"),
                          ([""], "job.args[0]: the command must not be empty")]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            Job(args)
    with pytest.raises(ConfigError, match="job.ports: only a bridge network"):
        Job(["true"], network="host", ports=["80:80"])


def test_bundle_refusals_leave_nothing(tmp_path):
    job = Job(["true"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(ConfigError, match="workdir: .* is not empty"):
        job.bundle(str(tmp_path / "busy"), "c1", CGROUP_PARENT)
    with pytest.raises(ConfigError, match="container id"):
        job.bundle(str(tmp_path / "w1"), "bad/id", CGROUP_PARENT)
    with pytest.raises(ConfigError, match="cgroup_parent"):
        job.bundle(str(tmp_path / "w2"), "c1", "../escape")
    with pytest.raises(ConfigError, match="workdir: .*overlayfs options"):
        Job(["true"], root="/usr").bundle(str(tmp_path / "a:b"), "c1", CGROUP_PARENT)
    assert sorted(os.listdir(tmp_path)) == ["busy"]


def test_a_missing_command_is_a_clear_error(corral, tmp_path):
    proc, _ = run_job(corral, tmp_path, Job(["no-such-command-xyz"]))
    assert proc.returncode != 0 and "no-such-command-xyz" in proc.stderr


def test_cleanup_refuses_while_mounted(tmp_path):
    bundle = Job(["true"]).bundle(str(tmp_path / "w"), "c1", CGROUP_PARENT)
    script = (f"mount --bind /usr {bundle.path}/rootfs/usr && {sys.executable} -c "
              "'import sys; from corral.jobs.job import JobBundle; "
              f"JobBundle(sys.argv[1], {{}}, None).cleanup()' {bundle.path}")
    proc = run_capturing(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    assert proc.returncode != 0 and "still mounted below it" in proc.stderr
    assert os.path.isdir("/usr/bin")
    bundle.cleanup()
    assert not os.path.exists(bundle.path)


def test_json_form_round_trips(tmp_path):
    job = Job(["a", "b"], env=["X=1"], cwd="/tmp", user="5", hostname="h",
              limits={"memory": "1G", "cpus": 2, "pids": 10, "time": "2m"},
              mounts=[f"{tmp_path}:/data:rw"], network="host", retries=3)
    data = job.to_dict()
    assert data["limits"] == {"memory": 1 << 30, "cpus": 2.0, "pids": 10, "time": 120.0}
    assert data["user"] == "5:5"
    assert Job.from_dict(json.loads(json.dumps(data))) == job
    assert job.replace(args=["c"]).args == ["c"] and job.args == ["a", "b"]
    with pytest.raises(AttributeError):
        job.args = ["x"]
    with pytest.raises(ConfigError, match="job.colour: unknown field"):
        Job.from_dict({"args": ["x"], "colour": "red"})


def test_units():
    assert parse_size("512M", "f") == 512 << 20
    assert parse_size("1g", "f") == 1 << 30
    assert parse_size("1.5GiB", "f") == 3 << 29
    assert parse_size("64k", "f") == 64 << 10
    assert parse_size("100", "f") == parse_size("100b", "f") == 100
    assert parse_duration("30s", "f") == 30 and parse_duration("5m", "f") == 300
    assert parse_duration("1.5h", "f") == 5400 and parse_duration("250ms", "f") == 0.25
    assert parse_duration(2, "f") == 2.0
