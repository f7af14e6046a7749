"""The spec's recursive mount options (rro, rnosuid, ...: mount_setattr(AT_RECURSIVE) after the
mount) and the idmap / ridmap options, against the real kernel.

The submount that the recursive options must reach is a tmpfs mounted under the host's
temp dir in a private mount namespace of the test's own (``unshare --mount --propagation
private``), in which the corral command runs: the host's mount table is never touched."""

from __future__ import annotations

import os

import pytest

from tests.conftest import CORRAL, run_capturing
from corral.plan.mounts import (
    MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_RDONLY, parse_mount_options,
)
from corral.errors import ConfigError
from corral.oci.config import parse_config
from corral.oci.spec import default_spec

PROBE = ("for f in /data/top /data/sub/file; do "
         "if touch $f 2>/dev/null; then echo $f rw; else echo $f ro; fi; done")


def run_with_submount(corral, b, source) -> str:
    """`corral run` in a private mount namespace where ``source/sub`` is a tmpfs."""
    script = f'mount -t tmpfs corral-test-sub "{source}/sub" && exec "$@"'
    out = run_capturing(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                         "sh", *CORRAL, "--root", corral.root, "run", "-b", b.path, b.id])
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("options, expected", [
    (["rbind", "rro"], "/data/top ro\n/data/sub/file ro\n"),
    # the non-recursive ro leaves the submount writable: what rro is for
    (["rbind", "ro"], "/data/top ro\n/data/sub/file rw\n"),
])
def test_rro_reaches_submounts(corral, make_bundle, tmp_path, options, expected):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    b = make_bundle(["sh", "-c", PROBE])
    b.config["mounts"].append({"destination": "/data", "type": "bind", "source": str(source),
                               "options": options})
    b.write()
    assert run_with_submount(corral, b, source) == expected
    # only the container's copy was made read-only
    (source / "top").write_text("host still writes")


def test_recursive_options_parse_to_mount_attributes():
    opts = parse_mount_options(["rbind", "rro", "rnoatime", "rw"])
    assert opts.rec_set == MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME
    assert opts.rec_clear == MOUNT_ATTR__ATIME  # how mount_setattr(2) takes an atime mode
    assert opts.recursive == ("rro", "rnoatime")
    assert "rro" not in opts.data  # never passed to mount(2) as data
    later = parse_mount_options(["rro", "rrw"])
    assert (later.rec_set, later.rec_clear) == (0, MOUNT_ATTR_RDONLY)  # later wins


def test_rnosuid_rnoexec_show_in_mountinfo(corral, make_bundle, tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    b = make_bundle(["sh", "-c", "grep ' /data' /proc/self/mountinfo"])
    b.config["mounts"].append({"destination": "/data", "type": "bind", "source": str(source),
                               "options": ["rbind", "rnosuid", "rnoexec", "rnodev"]})
    b.write()
    lines = run_with_submount(corral, b, source).splitlines()
    assert len(lines) == 2, lines  # /data and /data/sub
    for line in lines:
        per_mount = set(line.split()[5].split(","))
        assert {"nosuid", "noexec", "nodev"} <= per_mount, line


# ---- idmap / ridmap ---------------------------------------------------------------------------

USERNS = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
          "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}


def userns_bundle(make_bundle, script: str):
    b = make_bundle(["sh", "-c", script])
    b.config["linux"]["namespaces"].append({"type": "user"})
    b.config["linux"].update(USERNS)
    return b


@pytest.mark.parametrize("option, expected", [
    # the container's own maps (0 -> host 100000) on the mount: on-disk 5 -> host 100005 ->
    # container 5; the tmpfs under it is idmapped too with ridmap, and keeps its ids with
    # idmap (host 5: nobody in the container)
    ("idmap", "5:5\n65534:65534\n"),
    ("ridmap", "5:5\n5:5\n"),
])
def test_idmap_options_take_the_container_user_namespace(corral, make_bundle, tmp_path,
                                                           mapped_root_can_reach, option,
                                                           expected):
    source = tmp_path / "shared"
    (source / "sub").mkdir(parents=True)
    (source / "top").write_text("x")
    os.chown(source / "top", 5, 5)
    source.chmod(0o755)
    b = userns_bundle(make_bundle, "stat -c %u:%g /home/top /home/sub/file")
    b.config["mounts"].append({"destination": "/home", "type": "bind", "source": str(source),
                               "options": ["rbind", option]})
    b.write()
    # the submount's file is owned by on-disk 5 too: mapped by ridmap only
    script = (f'mount -t tmpfs -o mode=755 corral-test-sub "{source}/sub" && '
              f'touch "{source}/sub/file" && chown 5:5 "{source}/sub/file" && '
              f'exec "$@"')
    out = run_capturing(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                         "sh", *CORRAL, "--root", corral.root, "run", "-b", b.path, b.id])
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected
    st = os.stat(source / "top")
    assert (st.st_uid, st.st_gid) == (5, 5)  # the host's view is untouched


def test_idmap_option_without_a_user_namespace_is_refused():
    config = default_spec()
    config["mounts"].append({"destination": "/d", "type": "bind", "source": "/tmp",
                             "options": ["rbind", "idmap"]})
    with pytest.raises(ConfigError, match=r"mounts\[\d+\]\.options: idmap without "
                                          r"uidMappings/gidMappings needs the container's "
                                          r"user namespace"):
        parse_config(config)


def test_idmap_and_ridmap_together_are_refused():
    config = default_spec()
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"].update(USERNS)
    config["mounts"].append({"destination": "/d", "type": "bind", "source": "/tmp",
                             "options": ["idmap", "ridmap"]})
    with pytest.raises(ConfigError, match=r"idmap and ridmap exclude each other"):
        parse_config(config)


def test_idmap_option_on_a_tmpfs_is_refused():
    config = default_spec()
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"].update(USERNS)
    config["mounts"].append({"destination": "/d", "type": "tmpfs", "source": "tmpfs",
                             "options": ["idmap"]})
    with pytest.raises(ConfigError, match=r"options: only bind mounts can be idmapped"):
        parse_config(config)


def test_tmpcopyup_starts_a_tmpfs_with_a_copy_of_what_it_covers(corral, make_bundle):
    """podman's --read-only asks for it on /tmp, /var/tmp and /run (runc and crun have it):
    the files, directories, symlinks, modes and owners of the covered directory are copied
    into the new tmpfs, which is writable while the rootfs under it is not touched."""
    b = make_bundle(["sh", "-c", "ls -ln /etc/skel; readlink /etc/skel/link; cat /etc/skel/sub/f; "
                                 "echo new > /etc/skel/sub/f && cat /etc/skel/sub/f"])
    skel = os.path.join(b.rootfs, "etc", "skel")
    os.makedirs(os.path.join(skel, "sub"))
    with open(os.path.join(skel, "sub", "f"), "w") as f:
        f.write("old\n")
    os.symlink("/nowhere", os.path.join(skel, "link"))
    b.config["root"]["readonly"] = True
    b.config["mounts"].append({"destination": "/etc/skel", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "tmpcopyup"]})
    b.write()
    out = corral("run", "--bundle", b.path, b.id).stdout.splitlines()
    assert any(line.split()[0] == "lrwxrwxrwx" and line.endswith("link -> /nowhere") for line in out)
    assert out[-3:] == ["/nowhere", "old", "new"]
    with open(os.path.join(skel, "sub", "f")) as f:
        assert f.read() == "old\n"  # the rootfs's own copy is untouched


def test_tmpcopyup_keeps_owner_and_mode(corral, make_bundle):
    b = make_bundle(["stat", "-c", "%u:%g %a", "/etc/skel/f"])
    skel = os.path.join(b.rootfs, "etc", "skel")
    os.makedirs(skel)
    with open(os.path.join(skel, "f"), "w") as f:
        f.write("x")
    os.chown(os.path.join(skel, "f"), 1234, 5678)
    os.chmod(os.path.join(skel, "f"), 0o640)
    b.config["mounts"].append({"destination": "/etc/skel", "type": "tmpfs", "source": "tmpfs",
                               "options": ["tmpcopyup"]})
    b.write()
    assert corral("run", "--bundle", b.path, b.id).stdout.strip() == "1234:5678 640"
