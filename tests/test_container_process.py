"""What the container's process gets: namespaces, user, capabilities, rlimits, fds, mounts,
devices, masked and readonly paths; and what the host keeps (its mounts, its /dev/null)."""

import os
import subprocess
import sys


from tests.conftest import CORRAL


def run(corral, make_bundle, script, edit=None, *extra, check=True):
    b = make_bundle(["sh", "-c", script])
    if edit:
        edit(b.config)
        b.write()
    return corral("run", "-b", b.path, *extra, b.id, check=check)


def test_namespaces_hostname_and_pid_one(corral, make_bundle):
    def edit(c):
        c["hostname"] = "box"
        c["domainname"] = "example.org"
    out = run(corral, make_bundle, "echo $$; hostname; cat /proc/sys/kernel/domainname", edit)
    assert out.stdout.split() == ["1", "box", "example.org"]
    host_ns = os.readlink("/proc/self/ns/net")
    out = run(corral, make_bundle, "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags")
    netns, flags = out.stdout.split()
    assert netns != host_ns
    assert int(flags, 16) & 1, "loopback is up (IFF_UP)"


def test_env_cwd_and_home(corral, make_bundle):
    def edit(c):
        c["process"]["env"] = ["PATH=/bin", "FOO=bar baz"]
        c["process"]["cwd"] = "/work/dir"
    out = run(corral, make_bundle, 'echo "$FOO|$HOME|$(pwd)"', edit).stdout
    assert out == "bar baz|/root|/work/dir\n"


def test_user_groups_and_umask(corral, make_bundle):
    def edit(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 6], "umask": 0o027}
    out = run(corral, make_bundle, "id -u; id -g; id -G; umask", edit).stdout.split()
    assert out[:2] == ["1000", "1001"]
    assert sorted(out[2:-1]) == ["1001", "5", "6"]
    assert out[-1] == "0027"


def test_capabilities_all_five_sets_and_no_new_privs(corral, make_bundle):
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]

    def edit(c):
        c["process"]["capabilities"] = {"bounding": caps + ["CAP_CHOWN"], "effective": caps,
                                        "permitted": caps, "inheritable": caps,
                                        "ambient": ["CAP_KILL"]}
        c["process"]["noNewPrivileges"] = True
    out = run(corral, make_bundle, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status", edit).stdout
    status = dict(line.split(":\t") for line in out.splitlines())
    kill, nbs, chown = 1 << 5, 1 << 10, 1 << 0
    assert int(status["CapBnd"], 16) == kill | nbs | chown
    assert int(status["CapEff"], 16) == kill | nbs
    assert int(status["CapPrm"], 16) == kill | nbs
    assert int(status["CapInh"], 16) == kill | nbs
    assert int(status["CapAmb"], 16) == kill
    assert status["NoNewPrivs"] == "1"


def test_rlimits_and_oom_score(corral, make_bundle):
    def edit(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
        c["process"]["oomScoreAdj"] = 123
    out = run(corral, make_bundle, "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj", edit)
    assert out.stdout.split() == ["321", "654", "123"]


def test_no_host_fds_cross_exec_but_preserved_ones_do(corral, make_bundle, tmp_path):
    leak = os.open(str(tmp_path), os.O_RDONLY)  # inheritable by corral, not preserved
    os.set_inheritable(leak, True)
    try:
        b = make_bundle(["ls", "/proc/self/fd"])
        out = corral("run", "-b", b.path, b.id, pass_fds=(leak,)).stdout.split()
        assert out == ["0", "1", "2", "3"]  # 3 is ls's own directory handle
    finally:
        os.close(leak)
    # --preserve-fds 1: our fd 3 reaches the container as fd 3.
    b = make_bundle(["sh", "-c", "cat <&3"])
    assert _with_fd3(corral, b, b"through fd 3\n", "--preserve-fds", "1") == "through fd 3\n"


def test_listen_fds_pass_through(corral, make_bundle):
    b = make_bundle(["sh", "-c", 'echo "$LISTEN_FDS"; cat <&3'])
    assert _with_fd3(corral, b, b"activated\n", listen=True) == "1\nactivated\n"


def _with_fd3(corral, b, data, *flags, listen=False):
    """Runs `corral run` with a pipe holding `data` as its fd 3 (and, for socket
    activation, LISTEN_FDS=1 for corral's own pid, as systemd sets it)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    wrapper = ("import os, sys\n"
               f"os.dup2({r}, 3)\n"
               "if sys.argv[1] == 'listen':\n"
               "    os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
               "os.execv(sys.argv[2], sys.argv[2:])\n")
    args = [*CORRAL, "--root", corral.root, "run", *flags, "-b", b.path, b.id]
    proc = subprocess.run([sys.executable, "-c", wrapper, "listen" if listen else "-", *args],
                          pass_fds=(r,), capture_output=True, text=True, timeout=60)
    os.close(r)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_readonly_root_masked_and_readonly_paths(corral, make_bundle):
    script = ("touch /x 2>/dev/null && echo root-rw || echo root-ro; "
              "cat /proc/kcore 2>/dev/null | head -c1 | wc -c; "
              "ls /proc/acpi | wc -l; "
              "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo sys-rw || echo sys-ro")
    def readonly(c):
        c["root"]["readonly"] = True
    out = run(corral, make_bundle, script, readonly).stdout.split()
    assert out == ["root-ro", "0", "0", "sys-ro"]

    def writable(c):
        c["root"]["readonly"] = False
    assert run(corral, make_bundle, "touch /x && echo ok", writable).stdout == "ok\n"


def test_mounts_and_devices(corral, make_bundle):
    def edit(c):
        c["mounts"].append({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "noexec", "size=1m"]})
        c["linux"]["devices"] = [{"path": "/dev/fuse-like", "type": "c", "major": 1,
                                  "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0}]
    script = ("grep ' /data ' /proc/self/mounts; ls -l /dev/fuse-like; "
              "echo hi > /dev/null && head -c 4 /dev/zero | wc -c; readlink /dev/fd; "
              "readlink /dev/ptmx")
    out = run(corral, make_bundle, script, edit).stdout.splitlines()
    assert out[0].startswith("tmpfs /data tmpfs") and "nosuid" in out[0] and "noexec" in out[0]
    assert out[1].startswith("crw-------") and "1,   3" in out[1]
    assert out[2:] == ["4", "/proc/self/fd", "pts/ptmx"]


def test_bind_mount_through_symlink_stays_in_rootfs(corral, make_bundle, tmp_path):
    """A destination that is a symlink out of the rootfs is resolved inside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("from the host\n")
    b = make_bundle(["cat", "/escape/file"])
    os.symlink(str(outside), os.path.join(b.rootfs, "escape"))
    b.config["mounts"].append({"destination": "/escape", "type": "bind", "source": str(src),
                               "options": ["rbind", "ro"]})
    b.write()
    assert corral("run", "-b", b.path, b.id).stdout == "from the host\n"
    assert os.listdir(outside) == []


def test_no_pivot(corral, make_bundle):
    b = make_bundle(["sh", "-c", "ls /bin/busybox && cat /proc/self/mountinfo | wc -l"])
    out = corral("run", "--no-pivot", "-b", b.path, b.id).stdout.split()
    assert out[0] == "/bin/busybox" and int(out[1]) > 3


def test_init_is_not_dumpable_until_exec(corral, make_bundle):
    """While init waits on the exec fifo as uid 1000, its /proc files stay root's: it is
    non-dumpable, so nothing in the container can open the runtime's files through it."""
    b = make_bundle(["sleep", "30"])
    b.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    assert os.stat(f"/proc/{pid}/status").st_uid == 0
    with open(f"/proc/{pid}/status") as f:
        assert "Uid:\t1000" in f.read()
    corral("start", b.id)
    assert os.stat(f"/proc/{pid}/status").st_uid == 1000  # exec made it dumpable again
    corral("delete", "-f", b.id)
    os.waitpid(pid, 0)


def test_host_dev_null_is_not_chowned(corral, make_bundle):
    """runc#3674: stdio that is the host's /dev/null must not be handed to the user."""
    before = os.stat("/dev/null")
    b = make_bundle(["true"])
    b.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    b.write()
    with open("/dev/null") as devnull:
        corral("run", "-b", b.path, b.id, stdin=devnull)
    after = os.stat("/dev/null")
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid,
                                                           before.st_mode)


def test_without_subreaper_run_still_reports_status(corral, make_bundle):
    b = make_bundle(["sh", "-c", "exit 7"])
    assert corral("run", "--no-subreaper", "-b", b.path, b.id, check=False).returncode == 7


def test_orphans_without_pid_namespace_are_reaped(corral, make_bundle):
    """Without its own pid namespace a container's orphans come to `run` (a subreaper) and
    are killed and reaped with the container."""
    b = make_bundle(["sh", "-c", "(sleep 30 &) ; exit 0"])
    b.config["linux"]["namespaces"].remove({"type": "pid"})
    b.write()
    assert corral("run", "-b", b.path, b.id).returncode == 0


def test_rootfs_propagation(corral, make_bundle):
    """Private (no propagation to or from the host) unless the config asks otherwise."""
    show = "awk '$5 == \"/\"' /proc/self/mountinfo"
    out = run(corral, make_bundle, show).stdout
    assert "shared:" not in out and "master:" not in out

    def edit(c):
        c["linux"]["rootfsPropagation"] = "rshared"
    assert "shared:" in run(corral, make_bundle, show, edit).stdout


def test_user_namespace_with_maps_written_by_the_parent(corral, make_bundle,
                                                        mapped_root_can_reach):
    """Root in the container is host uid 100000: the parent wrote the maps; devices are
    bind-mounted from the host since mknod is not allowed in a user namespace."""

    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; echo x > /dev/null && echo ok"
    out = run(corral, make_bundle, script, edit).stdout.split()
    assert out == ["0", "100000", "65536", "0", "100000", "65536", "0", "ok"]


def test_joining_a_namespace_by_path(corral, make_bundle):
    """A second container joins the first one's network and uts namespaces by path."""
    first = make_bundle(["sleep", "30"])
    first.config["hostname"] = "first"
    first.write()
    corral("run", "-d", "-b", first.path, first.id)
    pid = corral.state(first.id)["pid"]
    second = make_bundle(["sh", "-c", "hostname; readlink /proc/self/ns/net"])
    del second.config["hostname"]  # it would rename the joined namespace, as in runc
    for ns in second.config["linux"]["namespaces"]:
        if ns["type"] in ("network", "uts"):
            ns["path"] = f"/proc/{pid}/ns/{'net' if ns['type'] == 'network' else 'uts'}"
    second.write()
    out = corral("run", "-b", second.path, second.id).stdout.split()
    assert out == ["first", os.readlink(f"/proc/{pid}/ns/net")]
    corral("delete", "-f", first.id)
    os.waitpid(pid, 0)


def test_joining_a_path_of_the_wrong_type_is_refused(corral, make_bundle):
    b = make_bundle()
    for ns in b.config["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = "/proc/self/ns/uts"
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and "not a network namespace" in proc.stderr


def test_session_keyring_of_its_own(corral, make_bundle):
    """runc's default: the container joins a new session keyring named after it, unless
    --no-new-keyring.  Seen from the host while init waits on the exec fifo."""
    for flags, expected in (((), True), (("--no-new-keyring",), False)):
        b = make_bundle(["true"])
        corral("create", *flags, "-b", b.path, b.id)
        pid = corral.state(b.id)["pid"]
        with open("/proc/keys") as f:
            assert (f"_ses.{b.id}" in f.read()) is expected
        corral("delete", "-f", b.id)
        os.waitpid(pid, 0)


def test_no_capabilities_field_means_none(corral, make_bundle):
    """As in runc: a process without `capabilities` gets none, even as root."""
    def edit(c):
        del c["process"]["capabilities"]
    out = run(corral, make_bundle, "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status", edit).stdout
    assert [line.split()[1] for line in out.splitlines()] == ["0" * 16] * 3


def test_init_leads_its_own_session(corral, make_bundle):
    """setsid: the caller's terminal and process group signals are not the container's."""
    out = run(corral, make_bundle, "cut -d' ' -f6 /proc/1/stat; cut -d' ' -f5 /proc/1/stat")
    assert out.stdout.split() == ["1", "1"]  # session and process group are pid 1's own


def test_oom_score_with_a_user_namespace(corral, make_bundle, mapped_root_can_reach):

    def edit(c):
        c["process"]["oomScoreAdj"] = 17
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert run(corral, make_bundle, "cat /proc/self/oom_score_adj", edit).stdout == "17\n"


def test_user_namespace_rootfs_owned_by_the_mapped_ids(corral, make_bundle,
                                                       mapped_root_can_reach):
    """The container's root is host uid 100000 and its rootfs belongs to 100000: inside,
    everything is root's and writable; on the host, what it writes belongs to 100000."""
    b = make_bundle(["sh", "-c", "stat -c '%u:%g' /bin/busybox /etc/passwd; touch /made-here"])
    for dirpath, dirnames, filenames in os.walk(b.rootfs):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), 100000, 100000)
    os.lchown(b.rootfs, 100000, 100000)
    b.config["root"]["readonly"] = False
    b.config["linux"]["namespaces"].append({"type": "user"})
    b.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b.write()
    out = corral("run", "-b", b.path, b.id).stdout.split()
    assert out == ["0:0", "0:0"]
    st = os.stat(os.path.join(b.rootfs, "made-here"))
    assert (st.st_uid, st.st_gid) == (100000, 100000)
