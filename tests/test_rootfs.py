"""The container filesystem against the real kernel: a container's rootfs, mounts, /dev,
masked and read-only paths, as the plan's executor builds them; and mount options parsed.

Each real-kernel test runs a container (``corral run``) on a busybox rootfs whose shell prints
what it sees, section by section; the host's mount table must be unchanged afterwards (the
leak fixture checks it).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from corral.errors import NotSupportedError
from corral.plan.mounts import (
    MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT,
    MS_SHARED, MS_SLAVE, MS_STRICTATIME, MountOptions, parse_mount_options,
)
from corral.procfs import unescape
from tests.conftest import CORRAL, run_capturing


# --- option parsing ----------------------------------------------------------------------


def test_parse_flags_and_data():
    opts = parse_mount_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert opts == MountOptions(MS_NOSUID | MS_STRICTATIME, 0, (), ("mode=755", "size=65536k"))


def test_parse_later_option_wins():
    opts = parse_mount_options(["ro", "rw", "noatime", "atime", "nodev"])
    assert opts.flags == MS_NODEV
    assert opts.cleared == MS_RDONLY | 1024
    opts = parse_mount_options(["rw", "ro"])
    assert opts.flags == MS_RDONLY and opts.cleared == 0


def test_parse_bind_and_propagation():
    opts = parse_mount_options(["rbind", "ro", "rprivate", "shared", "slave"])
    assert opts.is_bind
    assert opts.flags == MS_BIND | MS_REC | MS_RDONLY
    assert opts.propagation == (MS_PRIVATE | MS_REC, MS_SHARED, MS_SLAVE)
    assert opts.data == ()


def test_parse_every_flag_option():
    names = ["ro", "nosuid", "nodev", "noexec", "sync", "dirsync", "remount", "mand",
             "noatime", "nodiratime", "relatime", "strictatime", "lazytime", "nosymfollow"]
    opts = parse_mount_options(names)
    assert opts.data == ()
    assert opts.flags & MS_REMOUNT and opts.flags & MS_RELATIME
    undo = ["rw", "suid", "dev", "exec", "async", "nomand", "atime", "diratime",
            "norelatime", "nostrictatime", "symfollow", "nolazytime"]
    assert parse_mount_options(names + undo).flags == \
        parse_mount_options(["dirsync", "remount"]).flags


def test_parse_devpts_data_and_x_options():
    opts = parse_mount_options(["nosuid", "newinstance", "ptmxmode=0666", "x-systemd.automount",
                                "mode=0620", "gid=5"])
    assert opts.data == ("newinstance", "ptmxmode=0666", "mode=0620", "gid=5")


@pytest.mark.parametrize("option", ["copy-symlink", "src-nofollow", "dest-nofollow"])
def test_parse_unsupported(option):
    with pytest.raises(NotSupportedError) as info:
        parse_mount_options(["ro", option], "mounts[2].options")
    assert "mounts[2].options" in str(info.value)


def test_mountinfounescape():
    assert unescape(r"/a\040b\134c") == "/a b\\c"
    assert unescape(r"/a\04") == r"/a\04"


# --- real kernel -------------------------------------------------------------------------

# Shell helpers of every probe: sections, and what a file operation gives (ok, or the error).
PROBE_PRELUDE = r"""
sec() { echo "@@$1"; }
try() { if out=$("$@" 2>&1); then echo ok; else echo "ERR $out"; fi; }
node() { if [ -e "$1" ] || [ -L "$1" ]; then stat -c '%F|%t|%T|%a|%u|%g' "$1"; else echo ENOENT; fi; }
"""

ERRORS = {"Read-only file system": "EROFS", "No such file or directory": "ENOENT",
          "Permission denied": "EACCES", "Operation not permitted": "EPERM",
          "nonexistent directory": "ENOENT"}

DEV_MOUNTS = [
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
]
PROC = {"destination": "/proc", "type": "proc", "source": "proc"}


def outcome(text: str) -> str:
    """"ok", or the errno name of a busybox error message."""
    text = text.strip()
    if text == "ok":
        return "ok"
    for message, name in ERRORS.items():
        if message in text:
            return name
    return text


def parse_mountinfo(text: str) -> dict:
    table = {}
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        table[unescape(fields[4])] = {
            "opts": fields[5].split(","), "optional": fields[6:sep], "fstype": fields[sep + 1],
            "super": fields[sep + 3].split(",")}
    return table


def node_of(line: str):
    if line.strip() == "ENOENT":
        return "ENOENT"
    kind, major, minor, mode, uid, gid = line.strip().split("|")
    short = {"character special file": "chr", "block special file": "blk", "fifo": "fifo",
             "symbolic link": "lnk", "directory": "dir"}.get(kind, "reg")
    return [short, int(major, 16), int(minor, 16), "0o" + mode.lstrip("0").rjust(3, "0"),
            int(uid), int(gid)]


class Box:
    """One container's config, changed as a test needs, then run with a probe script."""

    def __init__(self, corral, bundle) -> None:
        self.corral = corral
        self.bundle = bundle
        cfg = bundle.config
        cfg["mounts"] = [PROC]
        linux = cfg["linux"]
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        self.config = cfg

    def run(self, script: str, *, check: bool = True, outer: str = "",
            propagation: str = "private") -> dict | subprocess.CompletedProcess:
        """Runs ``script`` in the container; its sections by name (``check``) or the
        finished command.  ``outer``: shell run first in a private mount namespace of the
        test's own, in which corral then runs (its mounts are what the container inherits)."""
        self.config["process"]["args"] = ["sh", "-c", PROBE_PRELUDE + script]
        self.bundle.write()
        argv = [*CORRAL, "--root", self.corral.root, "run", "-b", self.bundle.path,
                self.bundle.id]
        if outer:
            argv = ["unshare", "--mount", "--propagation", propagation, "sh", "-ec",
                    outer + ' && exec "$@"', "sh", *argv]
        proc = run_capturing(argv)
        if not check:
            return proc
        assert proc.returncode == 0, proc.stderr
        sections, name = {}, None
        for line in proc.stdout.splitlines():
            if line.startswith("@@"):
                name = line[2:]
                sections[name] = ""
            elif name is not None:
                sections[name] += line + "\n"
        return sections

    def error(self, script: str = "true", **kw) -> str:
        proc = self.run(script, check=False, **kw)
        assert proc.returncode != 0, proc.stdout
        return proc.stderr.strip()


@pytest.fixture
def box(corral, make_bundle):
    return Box(corral, make_bundle())


def test_default_mounts(box):
    """The runc default spec's mounts, with the flags asked for, and a working rootfs."""
    box.config["mounts"] = [
        PROC, *DEV_MOUNTS,
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["noatime", "mode=700", "shared"]}]
    res = box.run("sec mounts; cat /proc/self/mountinfo; sec cwd; pwd; sec true; try /bin/true;"
                  "sec sys; try touch /sys/x; sec listing; ls /; sec shm; stat -c %a /dev/shm")
    m = parse_mountinfo(res["mounts"])
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
    assert res["shm"].strip() == "1777"
    assert res["cwd"].strip() == "/" and outcome(res["true"]) == "ok"
    assert outcome(res["sys"]) == "EROFS"
    listing = res["listing"].split()
    assert "bin" in listing and "rootfs" not in listing


def test_bind_mounts(box):
    b = box.bundle.path
    os.makedirs(b + "/data/sub")
    with open(b + "/data/file", "w") as f:
        f.write("hello")
    with open(b + "/single", "w") as f:
        f.write("one file")
    box.config["mounts"] = [
        PROC,
        {"destination": "/mnt/data", "type": "bind", "source": "data",
         "options": ["rbind", "ro", "nosuid", "nodev"]},
        {"destination": "/mnt/rw", "source": b + "/data", "options": ["bind"]},
        {"destination": "/etc/single", "type": "none", "source": "single",
         "options": ["bind", "ro", "rprivate"]},
        {"destination": "/mnt/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]}]
    res = box.run("sec mounts; cat /proc/self/mountinfo; sec read; cat /mnt/data/file; echo;"
                  "sec write_ro; try sh -c 'echo x > /mnt/data/file'; sec single; cat /etc/single;"
                  "echo; sec single_write; try sh -c 'echo x > /etc/single';"
                  "sec write_rw; try sh -c 'echo from container > /mnt/rw/new';"
                  "sec tmp_write; try touch /mnt/tmp/x")
    m = parse_mountinfo(res["mounts"])
    assert {"ro", "nosuid", "nodev"} <= set(m["/mnt/data"]["opts"])
    assert "rw" in m["/mnt/rw"]["opts"]
    assert "ro" in m["/etc/single"]["opts"]
    assert "ro" in m["/mnt/tmp"]["opts"] and m["/mnt/tmp"]["fstype"] == "tmpfs"
    assert res["read"].strip() == "hello" and outcome(res["write_ro"]) == "EROFS"
    assert res["single"].strip() == "one file" and outcome(res["single_write"]) == "EROFS"
    assert outcome(res["write_rw"]) == "ok" and outcome(res["tmp_write"]) == "EROFS"
    with open(b + "/data/new") as f:
        assert f.read() == "from container\n"
    # the mount points were made inside the rootfs: an empty file for the file bind
    assert os.path.isfile(b + "/rootfs/etc/single")
    assert os.path.getsize(b + "/rootfs/etc/single") == 0


def test_symlink_destinations_stay_in_rootfs(box):
    rootfs = box.bundle.rootfs
    marker = "corral-test-escape-" + box.bundle.id
    os.symlink("/etc", rootfs + "/evil")
    os.symlink("../../../../../../../tmp/" + marker, rootfs + "/evil2")
    box.config["mounts"] = [PROC,
                            {"destination": f"/evil/{marker}", "type": "tmpfs", "source": "tmpfs"},
                            {"destination": "/evil2", "type": "tmpfs", "source": "tmpfs"}]
    res = box.run("sec mounts; cat /proc/self/mountinfo")
    m = parse_mountinfo(res["mounts"])
    assert m[f"/etc/{marker}"]["fstype"] == "tmpfs" and m[f"/tmp/{marker}"]["fstype"] == "tmpfs"
    assert not os.path.exists("/etc/" + marker) and not os.path.exists("/tmp/" + marker)
    assert os.path.isdir(rootfs + "/etc/" + marker) and os.path.isdir(rootfs + "/tmp/" + marker)


def test_dangling_symlinks_are_made_inside(box):
    """A missing mount point behind a dangling symlink is made where it points, in the
    rootfs: a directory through an absolute link, an empty file for a file bind."""
    rootfs, b = box.bundle.rootfs, box.bundle.path
    marker = "corral-test-dangling-" + box.bundle.id
    os.symlink(f"/{marker}/d", rootfs + "/dlink")
    os.symlink(f"../../../{marker}-f", rootfs + "/flink")
    with open(b + "/f", "w") as f:
        f.write("file")
    box.config["mounts"] = [PROC,
                            {"destination": "/dlink/sub", "type": "tmpfs", "source": "tmpfs"},
                            {"destination": "/flink", "type": "bind", "source": b + "/f",
                             "options": ["bind"]}]
    res = box.run(f"sec f; cat /{marker}-f")
    assert res["f"] == "file\n"
    assert os.path.isdir(f"{rootfs}/{marker}/d/sub") and os.path.isfile(f"{rootfs}/{marker}-f")
    assert not os.path.exists(f"/{marker}") and not os.path.exists(f"/{marker}-f")


def test_devices(box):
    box.config["mounts"] = [PROC, *DEV_MOUNTS]
    box.config["linux"]["devices"] = [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640,
         "uid": 1000, "gid": 1001},
        {"path": "/dev/sub/fifo", "type": "p"},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}]
    names = ["null", "zero", "full", "random", "urandom", "tty", "mynull", "sub/fifo", "fd",
             "stdin", "stdout", "stderr", "ptmx", "core"]
    script = "".join(f"sec node:{n}; node /dev/{n}; " for n in names)
    script += "".join(f"sec link:{n}; readlink /dev/{n}; " for n in ("fd", "stderr", "ptmx", "core"))
    script += ("sec zero; head -c 4 /dev/zero | od -An -tx1 | tr -d ' \\n'; echo;"
               "sec null; try sh -c 'echo gone > /dev/null'")
    res = box.run(script)
    n = {name: node_of(res[f"node:{name}"]) for name in names}
    for name, major, minor in (("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):
        assert n[name] == ["chr", major, minor, "0o666", 0, 0], name
    assert n["null"] == ["chr", 1, 3, "0o600", 0, 0]  # linux.devices wins over the default
    assert n["mynull"] == ["chr", 1, 3, "0o640", 1000, 1001]
    assert n["sub/fifo"][0] == "fifo"
    assert res["link:fd"].strip() == "/proc/self/fd"
    assert res["link:stderr"].strip() == "/proc/self/fd/2"
    assert res["link:ptmx"].strip() == "pts/ptmx"
    if os.path.exists("/proc/kcore"):
        assert res["link:core"].strip() == "/proc/kcore"
    else:
        assert n["core"] == "ENOENT"
    assert res["zero"].strip() == "00000000" and outcome(res["null"]) == "ok"


@pytest.mark.parametrize("path", ["/etc/evil", "/dev/../etc/evil", "dev/relative"])
def test_device_outside_dev_refused(box, path):
    box.config["mounts"] = [PROC, *DEV_MOUNTS]
    box.config["linux"]["devices"] = [{"path": path, "type": "c", "major": 1, "minor": 3}]
    assert box.error().startswith("corral: linux.devices[0].path: ")
    assert not os.path.exists(box.bundle.rootfs + "/etc/evil")


def test_device_through_a_symlink_out_of_dev_refused(box):
    """A rootfs link /dev/sub -> /etc must not let a device node land in /etc."""
    box.config["mounts"] = [PROC]  # the rootfs's own /dev, with the link in it
    os.symlink("/etc", box.bundle.rootfs + "/dev/sub")
    box.config["linux"]["devices"] = [{"path": "/dev/sub/evil", "type": "c", "major": 1,
                                       "minor": 3}]
    err = box.error()
    assert "linux.devices[0]" in err and "outside /dev" in err
    assert not os.path.exists(box.bundle.rootfs + "/etc/evil")


def test_masked_and_readonly_paths(box):
    rootfs = box.bundle.rootfs
    os.makedirs(rootfs + "/secretdir")
    with open(rootfs + "/secretdir/key", "w") as f:
        f.write("key")
    with open(rootfs + "/secret", "w") as f:
        f.write("secret")
    os.makedirs(rootfs + "/rodir")
    box.config["mounts"] = [PROC, *DEV_MOUNTS,
                            {"destination": "/rodir/tmp", "type": "tmpfs", "source": "tmpfs"}]
    linux = box.config["linux"]
    linux["maskedPaths"] = ["/secret", "/secretdir", "/proc/kcore", "/no/such/path",
                            "/proc/timer_list"]
    linux["readonlyPaths"] = ["/proc/sys", "/proc/sysrq-trigger", "/rodir", "/not/there"]
    res = box.run(
        "sec mounts; cat /proc/self/mountinfo; sec secret; cat /secret; sec secretdir;"
        "ls /secretdir; sec secretdir_write; try touch /secretdir/x;"
        "sec secret_write; try sh -c 'echo x > /secret'; sec timer_list; cat /proc/timer_list;"
        "sec sys_write; try sh -c 'echo x > /proc/sys/kernel/hostname';"
        "sec sysrq; try sh -c 'echo h > /proc/sysrq-trigger'; sec rodir; try touch /rodir/x;"
        "sec rodir_sub; try touch /rodir/tmp/x")
    assert res["secret"] == "" and res["secretdir"] == ""
    assert outcome(res["secretdir_write"]) == "EROFS"
    assert outcome(res["secret_write"]) == "ok"  # it is /dev/null now
    with open(rootfs + "/secret") as f:
        assert f.read() == "secret"
    assert res["timer_list"] == ""
    assert outcome(res["sys_write"]) == "EROFS"
    assert outcome(res["sysrq"]) == ("EROFS" if os.path.exists("/proc/sysrq-trigger")
                                     else "ENOENT")
    assert outcome(res["rodir"]) == "EROFS" and outcome(res["rodir_sub"]) == "ok"
    opts = parse_mountinfo(res["mounts"])["/rodir"]["opts"]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts)


def test_masked_paths_refuse_fake_dev_null(box):
    """A rootfs whose /dev/null is a symlink must not get that target bound over a masked
    path (runc CVE-2025-31133)."""
    rootfs = box.bundle.rootfs
    os.unlink(rootfs + "/dev/null") if os.path.lexists(rootfs + "/dev/null") else None
    os.symlink("/proc/sys/kernel/core_pattern", rootfs + "/dev/null")
    with open(rootfs + "/masked", "w") as f:
        f.write("x")
    box.config["linux"]["maskedPaths"] = ["/masked"]
    err = box.error()
    assert err.startswith("corral: linux.maskedPaths[0]: ") and "null device" in err


def test_root_readonly(box):
    box.config["root"]["readonly"] = True
    box.config["mounts"] = [PROC, {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}]
    res = box.run("sec mounts; cat /proc/self/mountinfo; sec write; try touch /newfile;"
                  "sec tmp; try touch /tmp/ok")
    assert "ro" in parse_mountinfo(res["mounts"])["/"]["opts"]
    assert outcome(res["write"]) == "EROFS" and outcome(res["tmp"]) == "ok"


def test_no_pivot(box):
    box.config["mounts"] = [PROC, *DEV_MOUNTS,
                            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                             "options": ["ro"]}]
    box.config["process"]["args"] = ["sh", "-c", PROBE_PRELUDE +
                                     "sec listing; ls /; sec up; ls /..; sec true; try /bin/true;"
                                     "sec mounts; cat /proc/self/mountinfo"]
    box.bundle.write()
    proc = box.corral("run", "--no-pivot", "-b", box.bundle.path, box.bundle.id)
    sections, name = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            name = line[2:]
            sections[name] = ""
        else:
            sections[name] += line + "\n"
    assert "bin" in sections["listing"].split() and sections["up"] == sections["listing"]
    assert outcome(sections["true"]) == "ok"
    types = sorted(v["fstype"] for v in parse_mountinfo(sections["mounts"]).values()
                   if v["fstype"] in ("proc", "sysfs"))
    assert types == ["proc", "sysfs"]  # the host's were detached


@pytest.mark.parametrize("name", ["proc", "sys"])
def test_proc_or_sys_symlink_refused(box, name):
    rootfs = box.bundle.rootfs
    os.rmdir(f"{rootfs}/{name}")
    os.symlink("/tmp", f"{rootfs}/{name}")
    err = box.error()
    assert err.startswith("corral: root.path: ") and f"/{name} is a symlink" in err


def test_mount_error_names_the_mount(box):
    box.config["mounts"] = [PROC, {"destination": "/x", "type": "no-such-fs", "source": "src"}]
    assert box.error() == "corral: mounts[1]: mount src on /x: no such device"


def test_filesystem_refusal_is_told(box):
    """The filesystem's own message (fsconfig's log) comes with the error."""
    box.config["mounts"] = [PROC, {"destination": "/x", "type": "tmpfs", "source": "tmpfs",
                                   "options": ["size=lots"]}]
    err = box.error()
    assert err.startswith("corral: mounts[1]: mount tmpfs on /x") and "size" in err


def test_missing_bind_source(box):
    box.config["mounts"] = [{"destination": "/x", "type": "bind", "source": "/no/such/source",
                             "options": ["rbind"]}]
    assert box.error() == ("corral: mounts[0]: mount /no/such/source on /x: "
                           "no such file or directory")


def test_proc_destinations_checked(box):
    box.config["mounts"] = [PROC, {"destination": "/proc/sys", "type": "tmpfs",
                                   "source": "tmpfs"}]
    assert box.error().startswith("corral: mounts[1]: /proc/sys is under /proc")
    box.config["mounts"] = [{"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}]
    assert box.error().startswith("corral: mounts[0]: /proc can only be a proc mount")


def test_proc_destination_through_a_symlink_checked(box):
    """A destination that is a rootfs link into /proc is checked where it lands."""
    os.symlink("/proc/sys", box.bundle.rootfs + "/sneaky")
    box.config["mounts"] = [PROC, {"destination": "/sneaky", "type": "tmpfs", "source": "tmpfs"}]
    assert box.error() == "corral: mounts[1]: /sneaky is under /proc: refused"


def test_cgroup_view(box):
    """cgroup mounts: a tmpfs with the container's cgroup of every hierarchy bound under it,
    read-only as asked."""
    box.config["mounts"] = [PROC, {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                                   "options": ["ro"]},
                            {"destination": "/sys/fs/cgroup", "type": "cgroup",
                             "source": "cgroup",
                             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}]
    res = box.run("sec mounts; cat /proc/self/mountinfo; sec listing; ls /sys/fs/cgroup;"
                  "sec write; try touch /sys/fs/cgroup/x")
    m = parse_mountinfo(res["mounts"])
    hosts = sorted(os.listdir("/sys/fs/cgroup"))
    assert m["/sys/fs/cgroup"]["fstype"] == "tmpfs" and "ro" in m["/sys/fs/cgroup"]["opts"]
    assert set(hosts) <= set(res["listing"].split())
    for d in hosts:
        sub = m["/sys/fs/cgroup/" + d]
        assert sub["fstype"] in ("cgroup", "cgroup2")
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(sub["opts"])
    assert outcome(res["write"]) == "EROFS"


def test_rootfs_propagation_values(box):
    """Every value of the spec, with read-only and masked paths (binds of mounts in the
    tree: an unbindable / is applied once they are made) and a bind mount."""
    box.config["linux"]["readonlyPaths"] = ["/proc/sys", "/etc"]
    box.config["linux"]["maskedPaths"] = ["/proc/kcore", "/proc/scsi", "/etc/passwd"]
    os.makedirs(box.bundle.path + "/src")
    box.config["mounts"] = [PROC, DEV_MOUNTS[0],
                            {"destination": "/mnt", "type": "bind",
                             "source": box.bundle.path + "/src", "options": ["rbind"]}]
    for value in ("rslave", "slave", "private", "rprivate", "shared", "rshared", "unbindable",
                  "runbindable"):
        box.config["linux"]["rootfsPropagation"] = value
        res = box.run("sec mounts; cat /proc/self/mountinfo; sec etc; try touch /etc/x;"
                      "sec passwd; wc -c < /etc/passwd")
        table = parse_mountinfo(res["mounts"])
        root = table["/"]
        if "shared" in value:
            assert any(o.startswith("shared:") for o in root["optional"]), value
        else:
            assert not any(o.startswith("shared:") for o in root["optional"]), value
        if "unbindable" in value:
            assert "unbindable" in root["optional"], value
        if value == "runbindable":
            assert "unbindable" in table["/mnt"]["optional"] and "/proc/sys" in table
        assert outcome(res["etc"]) == "EROFS" and res["passwd"].strip() == "0", value
    box.config["linux"]["rootfsPropagation"] = "bogus"
    assert "rootfsPropagation" in box.error()


def test_user_namespace(box, mapped_root_can_reach):
    """In a user namespace: devices are the host's nodes bound in, sysfs falls back to the
    host's /sys when mounting fails (no network namespace of our own), and binds of mounts
    with flags locked by the outer namespace (nosuid, nodev, noexec) can still be made
    read-only."""
    src = box.bundle.path + "/locked"
    os.makedirs(src)
    linux = box.config["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    box.config["linux"]["readonlyPaths"] = ["/proc/sys"]
    box.config["linux"]["maskedPaths"] = ["/proc/kcore"]
    # no gid=5 for devpts: only root is mapped in this user namespace (EINVAL)
    box.config["mounts"] = [PROC, DEV_MOUNTS[0],
                            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                             "options": ["newinstance", "ptmxmode=0666"]},
                            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                             "options": ["nosuid", "noexec", "nodev", "ro"]},
                            {"destination": "/mnt/locked", "type": "bind", "source": src,
                             "options": ["rbind", "ro"]}]
    res = box.run("sec mounts; cat /proc/self/mountinfo; sec null; node /dev/null;"
                  "sec null_write; try sh -c 'echo x > /dev/null'; sec locked_write;"
                  "try touch /mnt/locked/x; sec sys_write; try touch /sys/x",
                  outer=f"mount -t tmpfs -o nosuid,nodev,noexec tmpfs {src}")
    m = parse_mountinfo(res["mounts"])
    assert node_of(res["null"])[:3] == ["chr", 1, 3] and "/dev/null" in m
    assert outcome(res["null_write"]) == "ok"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(m["/mnt/locked"]["opts"])
    assert outcome(res["locked_write"]) == "EROFS"
    assert m["/sys"]["fstype"] == "sysfs" and "/sys/fs/cgroup" in m  # host's, recursively
    assert outcome(res["sys_write"]) == "EROFS"
    # the host's /dev/null was bound, not chmod-ed or chown-ed
    st = os.stat("/dev/null")
    assert oct(st.st_mode & 0o777) == "0o666" and st.st_uid == 0


def test_shared_parent_mount(box):
    """rootfsPropagation rshared on a tree whose mounts are shared: the rootfs's parent
    mount is made private first (pivot_root refuses a shared parent), the new / is shared."""
    box.config["linux"]["rootfsPropagation"] = "rshared"
    res = box.run("sec mounts; cat /proc/self/mountinfo", outer="mount --make-rshared /",
                  propagation="unchanged")
    assert any(o.startswith("shared:") for o in parse_mountinfo(res["mounts"])["/"]["optional"])


def test_tmpfs_mode_and_readonly_dev(box):
    """A tmpfs without mode= keeps the mode of the directory it covers (runc); a read-only
    tmpfs gets that mode before it turns read-only; a read-only /dev still gets its nodes;
    a tmpfs on a directory that had to be made keeps tmpfs's own 1777."""
    rootfs = box.bundle.rootfs
    os.mkdir(rootfs + "/ro", 0o750)
    os.chmod(rootfs + "/ro", 0o750)
    os.chmod(rootfs + "/tmp", 0o1777)
    box.config["mounts"] = [PROC,
                            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "mode=755", "ro"]},
                            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
                            {"destination": "/ro", "type": "tmpfs", "source": "tmpfs",
                             "options": ["ro", "nodev"]},
                            {"destination": "/made", "type": "tmpfs", "source": "tmpfs"}]
    res = box.run("sec mounts; cat /proc/self/mountinfo; sec tmp; stat -c %a /tmp; sec ro;"
                  "stat -c %a /ro; sec made; stat -c %a /made; sec ro_write; try touch /ro/x;"
                  "sec dev_write; try touch /dev/x; sec null; node /dev/null;"
                  "sec null_write; try sh -c 'echo x > /dev/null'")
    m = parse_mountinfo(res["mounts"])
    assert res["tmp"].strip() == "1777" and res["ro"].strip() == "750"
    assert res["made"].strip() == "1777"
    assert {"ro", "nodev"} <= set(m["/ro"]["opts"]) and outcome(res["ro_write"]) == "EROFS"
    assert {"ro", "nosuid"} <= set(m["/dev"]["opts"]) and outcome(res["dev_write"]) == "EROFS"
    assert node_of(res["null"])[:3] == ["chr", 1, 3] and outcome(res["null_write"]) == "ok"


def test_bind_source_only_root_reaches_with_a_user_namespace(box, mapped_root_can_reach):
    """Bind sources are opened before the user namespace: a 0700 directory of the host's
    root is bound for a container whose root is a mapped uid."""
    secret = box.bundle.path + "/private"
    os.makedirs(secret + "/inner")
    os.chmod(secret, 0o700)
    with open(secret + "/inner/f", "w") as f:
        f.write("reached")
    linux = box.config["linux"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    os.makedirs(box.bundle.rootfs + "/mnt", exist_ok=True)  # its root may not make it
    box.config["mounts"] = [PROC, {"destination": "/mnt", "type": "bind",
                                   "source": secret + "/inner", "options": ["rbind", "ro"]}]
    res = box.run("sec f; cat /mnt/f")
    assert res["f"] == "reached\n"
