"""``default_spec`` is runc's ``runc spec`` output, and corral accepts it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from corral.oci.config import parse_config
from corral.oci.spec import default_spec

RUNC = shutil.which("runc") or ("/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else None)


def runc_spec(tmp_path, *flags: str) -> str:
    subprocess.run([RUNC, "spec", *flags], cwd=tmp_path, check=True)
    return (tmp_path / "config.json").read_text()


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
@pytest.mark.parametrize("rootless", [False, True])
def test_same_bytes_as_runc_spec(tmp_path, rootless):
    written = runc_spec(tmp_path, *(["--rootless"] if rootless else []))
    # runc writes with a tab indent and no trailing newline: compare the very text.
    assert json.dumps(default_spec(rootless), indent="\t") == written


def test_plain_spec_shape():
    spec = default_spec()
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["process"]["args"] == ["sh"]
    assert spec["process"]["terminal"] is True
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == [
        "pid",
        "network",
        "ipc",
        "uts",
        "mount",
    ]
    assert spec["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}


def test_rootless_maps_the_callers_ids(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    monkeypatch.setattr(os, "getegid", lambda: 567)
    spec = default_spec(rootless=True)
    linux = spec["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1234, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 567, "size": 1}]
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "user"]
    assert "resources" not in linux
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sys_mount == {
        "destination": "/sys",
        "type": "none",
        "source": "/sys",
        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
    }
    assert not any(
        o.startswith(("uid=", "gid=")) for m in spec["mounts"] for o in m.get("options", [])
    )


def test_each_call_is_a_fresh_dict():
    first = default_spec()
    first["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    first["mounts"][4]["options"].append("ro")
    fresh = default_spec()
    assert fresh["process"]["capabilities"]["bounding"] == [
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
    ]
    assert fresh["mounts"][4]["options"] == ["nosuid", "noexec", "nodev"]
    assert (
        default_spec(True)["mounts"][5]["options"] is not default_spec(True)["mounts"][5]["options"]
    )


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_parses(rootless):
    spec = default_spec(rootless)
    assert parse_config(spec).process.terminal  # runc's default: a terminal
    spec["process"]["terminal"] = False
    config = parse_config(spec)
    assert config.process.args == ("sh",)
    assert config.hostname == "runc"
    assert config.root_readonly
    assert (config.linux.namespace("user") is not None) == rootless
    if rootless:
        assert config.linux.uid_mappings[0].host_id == os.geteuid()
        assert config.linux.device_rules == ()
    else:
        assert config.linux.device_rules[0].allow is False
