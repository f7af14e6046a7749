"""Bad input: one line naming the problem, exit 1, and nothing left behind (the corral
fixture fails a test that leaves a process, cgroup, mount or state directory)."""

import json
import os

import pytest


def assert_one_line_error(proc, *needles, status=1):
    assert proc.returncode == status, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def create(corral, b, *extra):
    return corral("create", "-b", b.path, *extra, b.id, check=False)


def test_malformed_json(corral, make_bundle):
    b = make_bundle()
    with open(os.path.join(b.path, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.0.2", ')
    assert_one_line_error(create(corral, b), "config.json", "invalid JSON")


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c.pop("ociVersion"), "ociVersion"),
    (lambda c: c.pop("root"), "root"),
    (lambda c: c.pop("process"), "process"),
    (lambda c: c["process"].update(args="sh"), "process.args"),
    (lambda c: c["process"].update(args=[]), "process.args"),
    (lambda c: c["process"]["user"].update(uid="0"), "process.user.uid"),
    (lambda c: c["process"].update(cwd="relative"), "process.cwd"),
    (lambda c: c["mounts"][0].update(destination=5), "mounts[0].destination"),
    (lambda c: c["linux"]["namespaces"].append({"type": "nope"}), "linux.namespaces[5].type"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 5}]),
     "process.rlimits[0].hard"),
    (lambda c: c.update(hostname=7), "hostname"),
])
def test_invalid_fields_are_named(corral, make_bundle, mutate, field):
    b = make_bundle()
    mutate(b.config)
    b.write()
    assert_one_line_error(create(corral, b), field)


def test_missing_rootfs(corral, make_bundle):
    b = make_bundle()
    b.config["root"]["path"] = "nowhere"
    b.write()
    assert_one_line_error(create(corral, b), "root.path", "does not exist")


def test_executable_not_found(corral, make_bundle):
    b = make_bundle(["no-such-program"])
    assert_one_line_error(create(corral, b), "executable file not found")
    b = make_bundle(["/bin/no-such-program"])
    assert_one_line_error(create(corral, b), "no such file or directory")


def test_executable_not_executable(corral, make_bundle):
    b = make_bundle(["/etc/passwd"])
    assert_one_line_error(create(corral, b), "permission denied")


@pytest.mark.parametrize("bad_id", ["has space", "slash/id", "..", "semi;colon", "ünï"])
def test_invalid_ids(corral, make_bundle, bad_id):
    b = make_bundle()
    proc = corral("create", "-b", b.path, bad_id, check=False)
    assert_one_line_error(proc, "container id")


def test_existing_id(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    other = make_bundle(["true"])
    proc = corral("create", "-b", other.path, b.id, check=False)
    assert_one_line_error(proc, "already exists")
    assert corral.state(b.id)["pid"] == pid  # the existing container is untouched
    corral("delete", "-f", b.id)
    os.waitpid(pid, 0)


def test_unsupported_feature_is_named(corral, make_bundle):
    b = make_bundle()
    b.config["linux"]["rdma"] = {"mlx5_1": {"hcaHandles": 1}}
    b.write()
    assert_one_line_error(create(corral, b), "linux.rdma: not supported yet")


def test_failing_mount_cleans_up(corral, make_bundle):
    b = make_bundle()
    b.config["mounts"].append({"destination": "/mnt", "type": "bind",
                               "source": "/no/such/source", "options": ["bind"]})
    b.write()
    assert_one_line_error(create(corral, b), "/no/such/source")


def test_proc_symlink_rootfs_is_refused(corral, make_bundle):
    b = make_bundle()
    os.rmdir(os.path.join(b.rootfs, "proc"))
    os.symlink("/proc", os.path.join(b.rootfs, "proc"))
    assert_one_line_error(create(corral, b), "symlink")


def test_usage_errors(corral):
    assert_one_line_error(corral("create", check=False), "id")
    assert_one_line_error(corral("kill", check=False))
    assert_one_line_error(corral("--log-format", "xml", "list", check=False), "log-format")
    assert_one_line_error(corral("frobnicate", check=False), "frobnicate")
    assert_one_line_error(corral("create", "--preserve-fds", "x", "id", check=False),
                          "preserve-fds")


def test_json_config_error_reaches_log(corral, make_bundle, tmp_path):
    b = make_bundle()
    b.config.pop("process")
    b.write()
    log = tmp_path / "log.json"
    proc = corral("--log", str(log), "--log-format", "json", "create", "-b", b.path, b.id,
                  check=False)
    assert proc.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "process" in entry["msg"]


def test_exec_user_is_numeric(corral, make_bundle):
    """exec --user takes UID[:GID] as runc does; a name is refused naming the flag, and no
    process is made."""
    b = make_bundle(["sleep", "300"])
    corral("run", "-d", "-b", b.path, b.id)
    try:
        for bad, needle in (("nobody", "numeric"), ("0:wheel", "numeric"),
                            ("1:2:3", "UID[:GID]")):
            proc = corral("exec", "--user", bad, b.id, "true", check=False)
            assert_one_line_error(proc, "--user", repr(bad), needle, status=255)
        assert len(json.loads(corral("ps", "--format", "json", b.id).stdout)) == 1
    finally:
        corral("delete", "--force", b.id)
