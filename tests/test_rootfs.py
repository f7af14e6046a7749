"""The container filesystem: path resolution inside a rootfs, mount options, and
``setup_rootfs`` on the real kernel.

Every real-kernel test runs ``setup_rootfs`` in a child started with
``unshare --mount --propagation private ...``: nothing is ever mounted in the test's own mount
namespace, and each test checks that the host's mount table is unchanged afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import NotSupportedError
from corral.init import paths
from corral.init.mounts import (
    MountOptions, mount_containing, MountInfo, parse_mount_options, _unescape,
)
from corral.nsenter import (
    MS_BIND, MS_NOATIME, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
    MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
)
from corral.images import build_rootfs

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- resolve_in_root ---------------------------------------------------------------------


@pytest.fixture
def root():
    d = tempfile.mkdtemp(prefix="corral-root-")
    yield os.path.realpath(d)
    shutil.rmtree(d)


def test_resolve_plain_and_missing(root):
    os.makedirs(f"{root}/a/b")
    assert paths.resolve_in_root(root, "/a/b") == f"{root}/a/b"
    assert paths.resolve_in_root(root, "a/b/") == f"{root}/a/b"
    assert paths.resolve_in_root(root, "/a/x/y") == f"{root}/a/x/y"
    assert paths.resolve_in_root(root, "/") == root
    assert paths.resolve_in_root(root, "") == root
    assert paths.resolve_in_root(root, "//a/./b") == f"{root}/a/b"


def test_resolve_clamps_dotdot(root):
    assert paths.resolve_in_root(root, "/../../etc") == f"{root}/etc"
    assert paths.resolve_in_root(root, "/a/../../../b") == f"{root}/b"


def test_resolve_absolute_symlink_stays_inside(root):
    os.symlink("/etc", f"{root}/evil")
    assert paths.resolve_in_root(root, "/evil") == f"{root}/etc"
    assert paths.resolve_in_root(root, "/evil/passwd") == f"{root}/etc/passwd"


def test_resolve_relative_symlink_escape(root):
    os.makedirs(f"{root}/a/b")
    os.symlink("../../../../../../tmp", f"{root}/a/b/up")
    assert paths.resolve_in_root(root, "/a/b/up/x") == f"{root}/tmp/x"


def test_resolve_symlink_then_dotdot_is_physical(root):
    # "link/.." is the parent of the link's target, as the kernel sees it, not "/".
    os.makedirs(f"{root}/x/y")
    os.symlink("/x/y", f"{root}/link")
    assert paths.resolve_in_root(root, "/link/..") == f"{root}/x"


def test_resolve_chained_symlinks(root):
    os.makedirs(f"{root}/real")
    os.symlink("l2", f"{root}/l1")
    os.symlink("/l3/", f"{root}/l2")
    os.symlink("real", f"{root}/l3")
    assert paths.resolve_in_root(root, "/l1/f") == f"{root}/real/f"


def test_resolve_loop(root):
    os.symlink("b", f"{root}/a")
    os.symlink("a", f"{root}/b")
    with pytest.raises(OSError) as info:
        paths.resolve_in_root(root, "/a")
    assert info.value.errno == errno.ELOOP
    os.symlink("self/x", f"{root}/self")
    with pytest.raises(OSError):
        paths.resolve_in_root(root, "/self")


def test_resolve_root_slash():
    assert paths.resolve_in_root("/", "/a/../b") == "/b"
    assert paths.resolve_in_root("/", "..") == "/"


def test_mkdir_in_root_follows_links_inside(root):
    os.symlink("/etc", f"{root}/evil")
    made = paths.mkdir_in_root(root, "/evil/sub/dir")
    assert made == f"{root}/etc/sub/dir"
    assert os.path.isdir(made)


def test_create_file_in_root(root):
    os.symlink("../../../tmp/nope", f"{root}/f")
    made = paths.create_file_in_root(root, "/f")
    assert made == f"{root}/tmp/nope"
    assert os.path.isfile(made) and os.path.getsize(made) == 0
    with open(made, "w") as f:
        f.write("keep")
    assert paths.create_file_in_root(root, "/f") == made
    assert open(made).read() == "keep"


def test_open_in_root_refuses_outside(root):
    with pytest.raises(OSError) as info:
        paths.open_in_root(root, "/etc")
    assert info.value.errno == errno.EXDEV
    fd = paths.open_in_root(root, root)
    os.close(fd)


def test_clean_path():
    assert paths.clean_path("/dev/../etc/x") == "/etc/x"
    assert paths.clean_path("//dev//null") == "/dev/null"
    assert paths.clean_path("dev/null") == "/dev/null"


_NAMES = st.sampled_from(["a", "b", "c", "..", ".", "", "l1", "l2", "l3", "l4"])
_TARGETS = st.lists(_NAMES, min_size=0, max_size=5).map("/".join)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    links=st.lists(st.tuples(st.booleans(), _TARGETS), min_size=4, max_size=4),
    path=st.lists(_NAMES, max_size=8).map("/".join),
    absolute=st.booleans(),
)
def test_resolve_never_leaves_root(links, path, absolute):
    """Whatever symlinks the rootfs holds, the result and what it really names stay inside."""
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.realpath(tmp)
        root = base + "/root"
        os.makedirs(root + "/a/b")
        os.makedirs(base + "/outside")  # a tempting target next to the root
        for i, (is_abs, target) in enumerate(links, start=1):
            os.symlink(("/" if is_abs else "../../") + target, f"{root}/a/l{i}")
        try:
            result = paths.resolve_in_root(root, ("/" if absolute else "") + "a/" + path)
        except OSError as err:
            assert err.errno == errno.ELOOP
            return
        assert result == root or result.startswith(root + "/")
        assert os.path.realpath(result) == result or not os.path.lexists(result)
        real = os.path.realpath(result)
        assert real == root or real.startswith(root + "/")


# --- option parsing ----------------------------------------------------------------------


def test_parse_flags_and_data():
    opts = parse_mount_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert opts == MountOptions(MS_NOSUID | MS_STRICTATIME, 0, (), "mode=755,size=65536k")


def test_parse_later_option_wins():
    opts = parse_mount_options(["ro", "rw", "noatime", "atime", "nodev"])
    assert opts.flags == MS_NODEV
    assert opts.cleared == MS_RDONLY | MS_NOATIME
    opts = parse_mount_options(["rw", "ro"])
    assert opts.flags == MS_RDONLY and opts.cleared == 0


def test_parse_bind_and_propagation():
    opts = parse_mount_options(["rbind", "ro", "rprivate", "shared", "slave"])
    assert opts.is_bind
    assert opts.flags == MS_BIND | MS_REC | MS_RDONLY
    assert opts.propagation == (MS_PRIVATE | MS_REC, MS_SHARED, MS_SLAVE)
    assert opts.data == ""


def test_parse_every_flag_option():
    names = ["ro", "nosuid", "nodev", "noexec", "sync", "dirsync", "remount", "mand",
             "noatime", "nodiratime", "relatime", "strictatime", "lazytime", "nosymfollow"]
    opts = parse_mount_options(names)
    assert opts.data == ""
    assert opts.flags & MS_REMOUNT and opts.flags & MS_RELATIME
    undo = ["rw", "suid", "dev", "exec", "async", "nomand", "atime", "diratime",
            "norelatime", "nostrictatime", "symfollow", "nolazytime"]
    assert parse_mount_options(names + undo).flags == \
        parse_mount_options(["dirsync", "remount"]).flags


def test_parse_devpts_data_and_x_options():
    opts = parse_mount_options(["nosuid", "newinstance", "ptmxmode=0666", "x-systemd.automount",
                                "mode=0620", "gid=5"])
    assert opts.data == "newinstance,ptmxmode=0666,mode=0620,gid=5"


@pytest.mark.parametrize("option", ["copy-symlink", "src-nofollow", "dest-nofollow"])
def test_parse_unsupported(option):
    with pytest.raises(NotSupportedError) as info:
        parse_mount_options(["ro", option], "mounts[2].options")
    assert "mounts[2].options" in str(info.value)


def test_mountinfo_helpers():
    assert _unescape(r"/a\040b\134c") == "/a b\\c"
    assert _unescape(r"/a\04") == r"/a\04"
    infos = [MountInfo("/", "/", "ext4", ()), MountInfo("/tmp", "/", "tmpfs", ("shared:3",)),
             MountInfo("/tmpx", "/", "tmpfs", ())]
    assert mount_containing("/tmp/r/rootfs", infos).mount_point == "/tmp"
    assert mount_containing("/tmpx", infos).mount_point == "/tmpx"
    assert mount_containing("/var", infos).mount_point == "/"


# --- real kernel -------------------------------------------------------------------------

PRELUDE = r'''
import errno, json, os, stat, sys
from corral.oci.config import Config, Device, Linux, Mount, Process
from corral.init.rootfs import setup_rootfs
from corral.errors import CorralError

ROOTFS, BUNDLE = sys.argv[1], sys.argv[2]
os.chdir(BUNDLE)
out = {}

def mountinfo():
    table = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            table[fields[4]] = {"opts": fields[5].split(","), "optional": fields[6:sep],
                                "fstype": fields[sep + 1], "super": fields[sep + 3].split(",")}
    return table

def outcome(fn):
    try:
        result = fn()
    except OSError as err:
        return errno.errorcode[err.errno]
    return "ok" if result is None else result

def write(path, data="x"):
    def go():
        with open(path, "w") as f:
            f.write(data)
    return outcome(go)

def read(path):
    def go():
        with open(path) as f:
            return f.read()
    return outcome(go)

def mkfile(path):
    return outcome(lambda: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)))

def node(path):
    try:
        st = os.lstat(path)
    except OSError as err:
        return errno.errorcode[err.errno]
    kind = ("chr" if stat.S_ISCHR(st.st_mode) else "blk" if stat.S_ISBLK(st.st_mode) else
            "fifo" if stat.S_ISFIFO(st.st_mode) else "lnk" if stat.S_ISLNK(st.st_mode) else
            "dir" if stat.S_ISDIR(st.st_mode) else "reg")
    return [kind, os.major(st.st_rdev), os.minor(st.st_rdev), oct(stat.S_IMODE(st.st_mode)),
            st.st_uid, st.st_gid]

def run(argv):
    pid = os.posix_spawn(argv[0], argv, {"PATH": "/bin"})
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def setup(config, **kw):
    try:
        setup_rootfs(config, ROOTFS, **kw)
    except CorralError as err:
        print(json.dumps({"error": str(err), "type": type(err).__name__}))
        sys.exit(0)

def done():
    print(json.dumps(out))

def proc_mount():
    return Mount("/proc", "proc", "proc")

def dev_mounts():
    return (
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    )

def config(mounts=(), **linux):
    root_readonly = linux.pop("root_readonly", False)
    return Config(oci_version="1.0.2", root_path="rootfs",
                  process=Process(args=("sh",), cwd="/"), root_readonly=root_readonly,
                  mounts=tuple(mounts), linux=Linux(**linux))
'''


def host_mountinfo() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


@pytest.fixture(scope="session")
def template():
    d = tempfile.mkdtemp(prefix="corral-bb-")
    yield build_rootfs(d + "/rootfs")
    shutil.rmtree(d)


@pytest.fixture
def bundle(template):
    """A fresh bundle directory with a copy of the busybox rootfs; the host's mount table
    must be the same after the test as before it."""
    before = host_mountinfo()
    d = os.path.realpath(tempfile.mkdtemp(prefix="corral-bundle-"))
    shutil.copytree(template, d + "/rootfs", symlinks=True)
    yield d
    after = host_mountinfo()
    shutil.rmtree(d)
    assert after == before, "the host's mount table changed"


def run_container(bundle: str, body: str, *, userns: bool = False, net: bool = True,
                  outer: str = "", propagation: str = "private") -> dict:
    """Run PRELUDE + body in new mount/uts/ipc/net/pid namespaces (and a user namespace when
    asked); return the JSON it printed last.  ``outer`` is shell run first inside a private
    mount namespace of its own (to prepare mounts the container then inherits); only with
    ``outer`` may ``propagation`` be other than private (the outer namespace is private to
    the host, so whatever the inner one shares goes no further)."""
    assert propagation == "private" or outer
    script = PRELUDE + textwrap.dedent(body)
    inner = ["unshare", "--mount", "--propagation", propagation, "--uts", "--ipc",
             "--pid", "--fork", "--kill-child"] + (["--net"] if net else [])
    if userns:
        inner[1:1] = ["--user", "--map-root-user"]
    argv = inner + [PYTHON, "-c", script, bundle + "/rootfs", bundle]
    if outer:
        shell = outer + ' && exec "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", shell, "sh",
                *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    return json.loads(lines[-1])


def test_default_mounts(bundle):
    """The runc default spec's mounts, with the flags asked for, and a working rootfs."""
    res = run_container(bundle, """
        mounts = [proc_mount(), *dev_mounts(),
                  Mount("/dev/shm", "tmpfs", "shm",
                        ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
                  Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
                  Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
                  Mount("/run", "tmpfs", "tmpfs", ("noatime", "mode=700", "shared"))]
        setup(config(mounts))
        info = mountinfo()
        out["mounts"] = {k: info.get(k) for k in
                         ("/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                          "/run")}
        out["cwd"] = os.getcwd()
        out["true"] = run(["/bin/true"])
        out["sys_write"] = mkfile("/sys/x")
        out["listing"] = sorted(os.listdir("/"))
        out["shm_mode"] = oct(stat.S_IMODE(os.stat("/dev/shm").st_mode))
        done()
    """)
    m = res["mounts"]
    assert m["/proc"]["fstype"] == "proc"
    assert m["/dev"]["fstype"] == "tmpfs"
    assert {"nosuid"} <= set(m["/dev"]["opts"]) and "relatime" not in m["/dev"]["opts"]
    assert "mode=755" in m["/dev"]["super"] and "size=65536k" in m["/dev"]["super"]
    assert m["/dev/pts"]["fstype"] == "devpts"
    assert {"ptmxmode=666", "mode=620", "gid=5"} <= set(m["/dev/pts"]["super"])
    assert {"nosuid", "nodev", "noexec"} <= set(m["/dev/shm"]["opts"])
    assert m["/dev/mqueue"]["fstype"] == "mqueue"
    assert m["/sys"]["fstype"] == "sysfs" and "ro" in m["/sys"]["opts"]
    assert "noatime" in m["/run"]["opts"]
    assert any(o.startswith("shared:") for o in m["/run"]["optional"])
    assert not m["/proc"]["optional"]  # private by default
    assert res["shm_mode"] == "0o1777"
    assert res["cwd"] == "/" and res["true"] == 0
    assert res["sys_write"] == "EROFS"
    assert "busybox" not in res["listing"] and "bin" in res["listing"]


def test_bind_mounts(bundle):
    os.makedirs(bundle + "/data/sub")
    with open(bundle + "/data/file", "w") as f:
        f.write("hello")
    with open(bundle + "/single", "w") as f:
        f.write("one file")
    res = run_container(bundle, """
        mounts = [proc_mount(),
                  Mount("/mnt/data", "bind", "data", ("rbind", "ro", "nosuid", "nodev")),
                  Mount("/mnt/rw", None, BUNDLE + "/data", ("bind",)),
                  Mount("/etc/single", "none", "single", ("bind", "ro", "rprivate")),
                  Mount("/mnt/tmp", "tmpfs", "tmpfs", ("ro",))]
        setup(config(mounts))
        info = mountinfo()
        out["mounts"] = {k: info.get(k) for k in ("/mnt/data", "/mnt/rw", "/etc/single",
                                                   "/mnt/tmp")}
        out["read"] = read("/mnt/data/file")
        out["write_ro"] = write("/mnt/data/file")
        out["single"] = read("/etc/single")
        out["single_write"] = write("/etc/single")
        out["write_rw"] = write("/mnt/rw/new", "from container")
        out["tmp_write"] = mkfile("/mnt/tmp/x")
        done()
    """)
    m = res["mounts"]
    assert {"ro", "nosuid", "nodev"} <= set(m["/mnt/data"]["opts"])
    assert "rw" in m["/mnt/rw"]["opts"]
    assert "ro" in m["/etc/single"]["opts"]
    assert "ro" in m["/mnt/tmp"]["opts"] and m["/mnt/tmp"]["fstype"] == "tmpfs"
    assert res["read"] == "hello" and res["write_ro"] == "EROFS"
    assert res["single"] == "one file" and res["single_write"] == "EROFS"
    assert res["write_rw"] == "ok" and res["tmp_write"] == "EROFS"
    with open(bundle + "/data/new") as f:
        assert f.read() == "from container"
    # the mount points were made inside the rootfs: an empty file for the file bind
    assert os.path.isfile(bundle + "/rootfs/etc/single")
    assert os.path.getsize(bundle + "/rootfs/etc/single") == 0


def test_symlink_destinations_stay_in_rootfs(bundle):
    rootfs = bundle + "/rootfs"
    marker = "corral-test-escape-" + os.path.basename(bundle)
    os.symlink("/etc", rootfs + "/evil")
    os.symlink("../../../../../../../tmp/" + marker, rootfs + "/evil2")
    res = run_container(bundle, f"""
        mounts = [proc_mount(),
                  Mount("/evil/{marker}", "tmpfs", "tmpfs"),
                  Mount("/evil2", "tmpfs", "tmpfs")]
        setup(config(mounts))
        info = mountinfo()
        out["etc"] = info.get("/etc/{marker}")
        out["tmp"] = info.get("/tmp/{marker}")
        done()
    """)
    assert res["etc"]["fstype"] == "tmpfs" and res["tmp"]["fstype"] == "tmpfs"
    assert not os.path.exists("/etc/" + marker) and not os.path.exists("/tmp/" + marker)
    assert os.path.isdir(rootfs + "/etc/" + marker) and os.path.isdir(rootfs + "/tmp/" + marker)


def test_devices(bundle):
    res = run_container(bundle, """
        devices = (Device("/dev/mynull", "c", 1, 3, file_mode=0o640, uid=1000, gid=1001),
                   Device("/dev/sub/fifo", "p"),
                   Device("/dev/null", "c", 1, 3, file_mode=0o600))
        setup(config([proc_mount(), *dev_mounts()], devices=devices))
        names = ["null", "zero", "full", "random", "urandom", "tty", "mynull", "sub/fifo",
                 "fd", "stdin", "stdout", "stderr", "ptmx", "core"]
        out["nodes"] = {n: node("/dev/" + n) for n in names}
        out["links"] = {n: os.readlink("/dev/" + n) for n in names
                        if out["nodes"][n][0] == "lnk"}
        out["zero"] = outcome(lambda: open("/dev/zero", "rb").read(4).hex())
        out["null"] = write("/dev/null", "gone")
        out["ptmx"] = outcome(lambda: os.close(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)))
        done()
    """)
    n = res["nodes"]
    for name, major, minor in (("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):
        assert n[name] == ["chr", major, minor, "0o666", 0, 0], name
    assert n["null"] == ["chr", 1, 3, "0o600", 0, 0]  # linux.devices wins over the default
    assert n["mynull"] == ["chr", 1, 3, "0o640", 1000, 1001]
    assert n["sub/fifo"][0] == "fifo"
    assert res["links"]["fd"] == "/proc/self/fd"
    assert res["links"]["stderr"] == "/proc/self/fd/2"
    assert res["links"]["ptmx"] == "pts/ptmx"
    if os.path.exists("/proc/kcore"):
        assert res["links"]["core"] == "/proc/kcore"
    else:
        assert n["core"] == "ENOENT"
    assert res["zero"] == "00000000" and res["null"] == "ok" and res["ptmx"] == "ok"


@pytest.mark.parametrize("path", ["/etc/evil", "/dev/../etc/evil", "dev/relative"])
def test_device_outside_dev_refused(bundle, path):
    res = run_container(bundle, f"""
        setup(config([proc_mount(), *dev_mounts()], devices=(Device({path!r}, "c", 1, 3),)))
        done()
    """)
    assert res["type"] == "ConfigError"
    assert res["error"].startswith("linux.devices[0].path: ")
    assert not os.path.exists(bundle + "/rootfs/etc/evil")


def test_masked_and_readonly_paths(bundle):
    rootfs = bundle + "/rootfs"
    os.makedirs(rootfs + "/secretdir")
    with open(rootfs + "/secretdir/key", "w") as f:
        f.write("key")
    with open(rootfs + "/secret", "w") as f:
        f.write("secret")
    os.makedirs(rootfs + "/rodir")
    res = run_container(bundle, """
        setup(config([proc_mount(), *dev_mounts(), Mount("/rodir/tmp", "tmpfs", "tmpfs")],
                     masked_paths=("/secret", "/secretdir", "/proc/kcore", "/no/such/path",
                                   "/proc/timer_list"),
                     readonly_paths=("/proc/sys", "/proc/sysrq-trigger", "/rodir",
                                     "/not/there")))
        info = mountinfo()
        out["secret"] = read("/secret")
        out["secretdir"] = sorted(os.listdir("/secretdir"))
        out["secretdir_write"] = mkfile("/secretdir/x")
        out["secret_write"] = write("/secret")
        out["timer_list"] = read("/proc/timer_list")
        out["sys_write"] = write("/proc/sys/kernel/hostname", "x")
        out["sysrq"] = write("/proc/sysrq-trigger", "h")
        out["rodir"] = mkfile("/rodir/x")
        out["rodir_sub"] = mkfile("/rodir/tmp/x")  # a submount keeps its own flags
        out["rodir_opts"] = info["/rodir"]["opts"]
        done()
    """)
    assert res["secret"] == "" and res["secretdir"] == []
    assert res["secretdir_write"] == "EROFS"
    assert res["secret_write"] == "ok"  # it is /dev/null now
    with open(rootfs + "/secret") as f:
        assert f.read() == "secret"
    assert res["timer_list"] in ("", "ENOENT")
    assert res["sys_write"] == "EROFS"
    assert res["sysrq"] == ("EROFS" if os.path.exists("/proc/sysrq-trigger") else "ENOENT")
    assert res["rodir"] == "EROFS" and res["rodir_sub"] == "ok"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(res["rodir_opts"])


def test_masked_paths_refuse_fake_dev_null(bundle):
    """A rootfs whose /dev/null is a symlink must not get that target bound over a masked
    path (runc CVE-2025-31133)."""
    rootfs = bundle + "/rootfs"
    os.symlink("/proc/sys/kernel/core_pattern", rootfs + "/dev/null")
    with open(rootfs + "/masked", "w") as f:
        f.write("x")
    res = run_container(bundle, """
        setup(config([proc_mount()], masked_paths=("/masked",)))
        done()
    """)
    assert res["type"] == "ConfigError"
    assert res["error"].startswith("linux.maskedPaths[0]: ")


def test_root_readonly(bundle):
    res = run_container(bundle, """
        setup(config([proc_mount(), Mount("/tmp", "tmpfs", "tmpfs")], root_readonly=True))
        info = mountinfo()
        out["root"] = info["/"]["opts"]
        out["write"] = mkfile("/newfile")
        out["tmp"] = mkfile("/tmp/ok")
        done()
    """)
    assert "ro" in res["root"]
    assert res["write"] == "EROFS" and res["tmp"] == "ok"


def test_no_pivot(bundle):
    res = run_container(bundle, """
        setup(config([proc_mount(), *dev_mounts(), Mount("/sys", "sysfs", "sysfs", ("ro",))]),
              no_pivot=True)
        info = mountinfo()
        out["listing"] = sorted(os.listdir("/"))
        out["up"] = sorted(os.listdir("/.."))
        out["true"] = run(["/bin/true"])
        out["proc_types"] = sorted(v["fstype"] for v in info.values()
                                   if v["fstype"] in ("proc", "sysfs"))
        done()
    """)
    assert "bin" in res["listing"] and res["up"] == res["listing"]
    assert res["true"] == 0
    assert res["proc_types"] == ["proc", "sysfs"]  # the host's were detached


@pytest.mark.parametrize("name", ["proc", "sys"])
def test_proc_or_sys_symlink_refused(bundle, name):
    rootfs = bundle + "/rootfs"
    os.rmdir(f"{rootfs}/{name}")
    os.symlink("/tmp", f"{rootfs}/{name}")
    res = run_container(bundle, """
        setup(config([proc_mount()]))
        done()
    """)
    assert res["type"] == "ConfigError"
    assert res["error"].startswith("root.path: ") and f"/{name} is a symlink" in res["error"]


def test_mount_error_names_the_mount(bundle):
    res = run_container(bundle, """
        setup(config([proc_mount(), Mount("/x", "no-such-fs", "src")]))
        done()
    """)
    assert res == {"error": "mounts[1]: mount src on /x: No such device",
                   "type": "ConfigError"}


def test_missing_bind_source(bundle):
    res = run_container(bundle, """
        setup(config([Mount("/x", "bind", "/no/such/source", ("rbind",))]))
        done()
    """)
    assert res["error"] == ("mounts[0]: mount /no/such/source on /x: "
                            "No such file or directory")


def test_proc_destinations_checked(bundle):
    res = run_container(bundle, """
        setup(config([proc_mount(), Mount("/proc/sys", "tmpfs", "tmpfs")]))
        done()
    """)
    assert res["error"].startswith("mounts[1]: /proc/sys is under /proc")
    res = run_container(bundle, """
        setup(config([Mount("/proc", "tmpfs", "tmpfs")]))
        done()
    """)
    assert res["error"].startswith("mounts[0]: /proc can only be a proc mount")


def test_cgroup_view(bundle):
    """cgroup mounts: a tmpfs with host hierarchies bound under it, read-only as asked."""
    hosts = [d for d in ("cpu", "memory", "unified") if os.path.isdir(f"/sys/fs/cgroup/{d}")]
    if not hosts:
        pytest.skip("no cgroup hierarchies under /sys/fs/cgroup")
    pairs = [(d, f"/sys/fs/cgroup/{d}") for d in hosts]
    res = run_container(bundle, f"""
        mounts = [proc_mount(), Mount("/sys", "sysfs", "sysfs", ("ro",)),
                  Mount("/sys/fs/cgroup", "cgroup", "cgroup",
                        ("nosuid", "noexec", "nodev", "relatime", "ro"))]
        setup(config(mounts), cgroup_mounts={pairs!r})
        info = mountinfo()
        out["top"] = info["/sys/fs/cgroup"]
        out["subs"] = {{d: info.get("/sys/fs/cgroup/" + d) for d in {hosts!r}}}
        out["listing"] = sorted(os.listdir("/sys/fs/cgroup"))
        out["write"] = mkfile("/sys/fs/cgroup/x")
        done()
    """)
    assert res["top"]["fstype"] == "tmpfs" and "ro" in res["top"]["opts"]
    assert res["listing"] == sorted(hosts)
    for d in hosts:
        assert res["subs"][d]["fstype"] in ("cgroup", "cgroup2")
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(res["subs"][d]["opts"])
    assert res["write"] == "EROFS"


def test_cgroup_single_bind(bundle):
    if not os.path.isdir("/sys/fs/cgroup/unified"):
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    res = run_container(bundle, """
        mounts = [proc_mount(), Mount("/sys/fs/cgroup", "cgroup2", "cgroup", ("ro",))]
        setup(config(mounts), cgroup_mounts=[("", "/sys/fs/cgroup/unified")])
        info = mountinfo()
        out["top"] = info["/sys/fs/cgroup"]
        out["controllers"] = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        done()
    """)
    assert res["top"]["fstype"] == "cgroup2" and "ro" in res["top"]["opts"]
    assert res["controllers"]


def test_rootfs_propagation_slave(bundle):
    res = run_container(bundle, """
        setup(config([proc_mount()], rootfs_propagation="rslave"))
        done()
    """)
    assert res == {}
    res = run_container(bundle, """
        setup(config([proc_mount()], rootfs_propagation="bogus"))
        done()
    """)
    assert res["error"].startswith("linux.rootfsPropagation: ")


def test_user_namespace(bundle):
    """In a user namespace: devices are the host's nodes bound in, sysfs falls back to the
    host's /sys when mounting fails (no network namespace of our own), and binds of mounts
    with flags locked by the outer namespace (nosuid, nodev, noexec) can still be made
    read-only."""
    src = bundle + "/locked"
    os.makedirs(src)
    res = run_container(bundle, f"""
        # no gid=5 for devpts: only root is mapped in this user namespace (EINVAL)
        mounts = [proc_mount(), dev_mounts()[0],
                  Mount("/dev/pts", "devpts", "devpts", ("newinstance", "ptmxmode=0666")),
                  Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
                  Mount("/mnt/locked", "bind", {src!r}, ("rbind", "ro"))]
        setup(config(mounts, readonly_paths=("/proc/sys",), masked_paths=("/proc/kcore",)),
              in_userns=True)
        info = mountinfo()
        out["null"] = node("/dev/null")
        out["null_mount"] = "/dev/null" in info
        out["null_write"] = write("/dev/null")
        out["locked"] = info["/mnt/locked"]["opts"]
        out["locked_write"] = mkfile("/mnt/locked/x")
        out["sys"] = info["/sys"]["fstype"]
        out["sys_children"] = "/sys/fs/cgroup" in info
        out["sys_write"] = mkfile("/sys/x")
        done()
    """, userns=True, net=False, outer=f"mount -t tmpfs -o nosuid,nodev,noexec tmpfs {src}")
    assert res["null"][:3] == ["chr", 1, 3] and res["null_mount"]
    assert res["null_write"] == "ok"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(res["locked"])
    assert res["locked_write"] == "EROFS"
    assert res["sys"] == "sysfs" and res["sys_children"]  # host's /sys, recursively
    assert res["sys_write"] == "EROFS"
    # the host's /dev/null was bound, not chmod-ed or chown-ed
    st = os.stat("/dev/null")
    assert oct(st.st_mode & 0o777) == "0o666" and st.st_uid == 0


def test_shared_parent_mount(bundle):
    """rootfsPropagation rshared on a tree whose mounts are shared: the rootfs's parent
    mount is made private first (pivot_root refuses a shared parent), the new / is shared."""
    res = run_container(bundle, """
        setup(config([proc_mount()], rootfs_propagation="rshared"))
        out["root"] = mountinfo()["/"]["optional"]
        done()
    """, outer="mount --make-rshared /", propagation="unchanged")
    assert any(o.startswith("shared:") for o in res["root"])


def test_no_pivot_in_user_namespace(bundle):
    """Host procfs/sysfs mounts are locked in a user namespace: covered, not unmounted."""
    res = run_container(bundle, """
        setup(config([proc_mount(), Mount("/sys", "sysfs", "sysfs", ("ro",))]),
              no_pivot=True, in_userns=True)
        out["listing"] = sorted(os.listdir("/"))
        out["true"] = run(["/bin/true"])
        done()
    """, userns=True)
    assert "bin" in res["listing"] and res["true"] == 0


def test_tmpfs_mode_and_readonly_dev(bundle):
    """A tmpfs without mode= keeps the mode of the directory it covers (runc); a read-only
    tmpfs gets that mode before it turns read-only; a read-only /dev still gets its nodes."""
    os.mkdir(bundle + "/rootfs/ro", 0o750)
    os.chmod(bundle + "/rootfs/ro", 0o750)
    res = run_container(bundle, """
        setup(config([proc_mount(),
                      Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "mode=755", "ro")),
                      Mount("/tmp", "tmpfs", "tmpfs"),
                      Mount("/ro", "tmpfs", "tmpfs", ("ro", "nodev"))]))
        info = mountinfo()
        out["tmp"] = oct(stat.S_IMODE(os.stat("/tmp").st_mode))
        out["ro"] = oct(stat.S_IMODE(os.stat("/ro").st_mode))
        out["ro_opts"] = info["/ro"]["opts"]
        out["ro_write"] = mkfile("/ro/x")
        out["dev_write"] = mkfile("/dev/x")
        out["dev_opts"] = info["/dev"]["opts"]
        out["null"] = node("/dev/null")
        out["null_write"] = write("/dev/null")
        done()
    """)
    assert res["tmp"] == "0o1777" and res["ro"] == "0o750"
    assert {"ro", "nodev"} <= set(res["ro_opts"]) and res["ro_write"] == "EROFS"
    assert {"ro", "nosuid"} <= set(res["dev_opts"]) and res["dev_write"] == "EROFS"
    assert res["null"][:3] == ["chr", 1, 3] and res["null_write"] == "ok"
