"""config.json validation: every bad value is refused with the JSON path of the field."""

from __future__ import annotations

import copy
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import ConfigError, NotSupportedError
from corral.oci.capabilities import ALL_CAPS, CAPABILITIES, LAST_CAP, cap_number, caps_mask
from corral.oci.config import (
    Capabilities,
    Config,
    Device,
    DeviceRule,
    IdMapping,
    Mount,
    Namespace,
    Rlimit,
    User,
    load_bundle,
    parse_config,
)
from corral.oci.spec import default_spec


def minimal() -> dict:
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/"},
    }


def rich() -> dict:
    """Shaped like what containerd and podman write, minus the parts corral refuses."""
    return {
        "ociVersion": "1.1.0",
        "process": {
            "terminal": False,
            "consoleSize": {},
            "user": {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [10, 1000]},
            "args": ["/bin/app", "--flag"],
            "env": ["PATH=/usr/bin:/bin", "EMPTY=", "EQ=a=b"],
            "cwd": "/srv",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"]},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 0},
            ],
            "noNewPrivileges": True,
            "oomScoreAdj": -999,
            "apparmorProfile": "",
        },
        "root": {"path": "/var/lib/rootfs", "readonly": False},
        "hostname": "box",
        "domainname": "example.org",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/data",
                "type": "bind",
                "source": "/srv/data",
                "options": ["rbind", "ro"],
            },
            {"destination": "/tmp", "type": "", "source": ""},
        ],
        "hooks": {"prestart": [], "poststop": []},
        "annotations": {"io.kubernetes.cri.container-type": "container", "": ""},
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "sysctl": {},
            "resources": {
                "devices": [
                    {"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wr"},
                    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},
                    {"allow": True, "type": "b", "major": 8},
                ],
                "memory": {},
            },
            "cgroupsPath": "/corral/box",
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/box"},
                {"type": "ipc", "path": ""},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "user"},
                {"type": "cgroup"},
            ],
            "devices": [
                {
                    "path": "/dev/fuse",
                    "type": "c",
                    "major": 10,
                    "minor": 229,
                    "fileMode": 0o666,
                    "uid": 0,
                    "gid": 0,
                },
                {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
                {"path": "/dev/ttyU", "type": "u", "major": 4, "minor": 64},
                {"path": "/dev/fifo", "type": "p"},
            ],
            "seccomp": None,
            "rootfsPropagation": "rslave",
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            "mountLabel": "",
        },
        "someFutureField": {"anything": [1, 2]},
        "windows": {"layerFolders": ["C:\\x"]},
    }


def change(doc: dict, dotted: str, value: object = ...) -> dict:
    """Set (or with no value, delete) the field at ``a.b.0.c``; returns the doc."""
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    node = doc
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


def refused(doc: object) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    err = exc.value
    assert len(str(err).splitlines()) == 1
    return err


# --------------------------------------------------------------------------------- valid input


def test_minimal_config():
    config = parse_config(minimal())
    assert config == Config(oci_version="1.0.2", root_path="rootfs", process=config.process)
    assert config.process.args == ("sh",)
    assert config.process.user == User()
    assert config.process.capabilities is None
    assert config.linux.namespaces == ()


def test_rich_config_fills_every_field():
    config = parse_config(rich())
    p = config.process
    assert p.args == ("/bin/app", "--flag")
    assert p.cwd == "/srv"
    assert p.user == User(uid=1000, gid=1000, umask=0o22, additional_gids=(10, 1000))
    assert p.env == ("PATH=/usr/bin:/bin", "EMPTY=", "EQ=a=b")
    assert p.capabilities == Capabilities(
        bounding=("CAP_CHOWN", "CAP_KILL"), effective=("CAP_KILL",)
    )
    assert p.rlimits == (Rlimit("RLIMIT_NOFILE", 4096, 1024), Rlimit("RLIMIT_CORE", 2**64 - 1, 0))
    assert p.no_new_privileges and p.oom_score_adj == -999 and not p.terminal
    assert config.root_path == "/var/lib/rootfs" and not config.root_readonly
    assert (config.hostname, config.domainname) == ("box", "example.org")
    assert config.mounts == (
        Mount("/proc", "proc", "proc"),
        Mount("/data", "bind", "/srv/data", ("rbind", "ro")),
        Mount("/tmp"),
    )
    assert config.annotations == {"io.kubernetes.cri.container-type": "container", "": ""}
    linux = config.linux
    assert linux.uid_mappings == linux.gid_mappings == (IdMapping(0, 100000, 65536),)
    assert linux.device_rules == (
        DeviceRule(allow=False),
        DeviceRule(True, "c", 1, 3, "rw"),
        DeviceRule(True, "c", 136, None, "rwm"),
        DeviceRule(True, "b", 8, None, "rwm"),
    )
    assert linux.namespace("network") == Namespace("network", "/var/run/netns/box")
    assert linux.namespace("ipc") == Namespace("ipc")  # "" path means none, as in Go
    assert linux.namespace("time") is None
    assert linux.devices == (
        Device("/dev/fuse", "c", 10, 229, 0o666, 0, 0),
        Device("/dev/sda", "b", 8, 0),
        Device("/dev/ttyU", "c", 4, 64),  # u is a character device
        Device("/dev/fifo", "p"),
    )
    assert linux.cgroups_path == "/corral/box"
    assert linux.rootfs_propagation == "rslave"
    assert linux.masked_paths == ("/proc/kcore",) and linux.readonly_paths == ("/proc/sys",)


def test_sequences_are_tuples_and_input_is_untouched():
    doc = rich()
    before = copy.deepcopy(doc)
    config = parse_config(doc)
    assert doc == before
    for value in (
        config.mounts,
        config.mounts[1].options,
        config.process.env,
        config.linux.devices,
    ):
        assert type(value) is tuple
    assert config.annotations is not doc["annotations"]


def test_null_means_absent():
    doc = minimal()
    doc.update(hostname=None, mounts=None, linux=None, hooks=None, annotations=None)
    doc["process"].update(env=None, user=None, capabilities=None, terminal=None, oomScoreAdj=None)
    config = parse_config(doc)
    assert config.hostname is None and config.mounts == () and config.process.env == ()


def test_user_namespace_joined_by_path_needs_no_mappings():
    doc = change(minimal(), "linux", {"namespaces": [{"type": "user", "path": "/proc/1/ns/user"}]})
    assert parse_config(doc).linux.namespace("user").path == "/proc/1/ns/user"


def test_hostname_with_a_joined_uts_namespace_is_allowed_like_runc():
    doc = change(minimal(), "linux", {"namespaces": [{"type": "uts", "path": "/proc/1/ns/uts"}]})
    assert parse_config(change(doc, "hostname", "h")).hostname == "h"


def test_empty_hostname_needs_no_uts_namespace():
    assert parse_config(change(minimal(), "hostname", "")).hostname is None


# ------------------------------------------------------------------------------- bad values

USERNS = {
    "namespaces": [{"type": "user"}],
    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
    "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
}
RLIMIT = {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}
DEVICE = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}

BAD = [
    # (field to set, or delete with ..., value, field named in the error, words in the message)
    ("ociVersion", ..., "ociVersion", "is required"),
    ("ociVersion", 1, "ociVersion", "expected a string, got an integer"),
    ("ociVersion", "2.0.0", "ociVersion", "unsupported version"),
    ("root", ..., "root", "is required"),
    ("root", "rootfs", "root", "expected an object, got a string"),
    ("root.path", ..., "root.path", "is required"),
    ("root.path", "", "root.path", "must not be empty"),
    ("root.readonly", "yes", "root.readonly", "expected a boolean"),
    ("process", ..., "process", "is required"),
    ("process", [], "process", "expected an object, got an array"),
    ("process.args", ..., "process.args", "is required"),
    ("process.args", [], "process.args", "is required"),
    ("process.args", "sh", "process.args", "expected an array"),
    ("process.args", ["sh", 1], "process.args[1]", "expected a string, got an integer"),
    ("process.args", [""], "process.args[0]", "must not be empty"),
    ("process.args", ["a\0b"], "process.args[0]", "NUL"),
    ("process.args", ["\ud800"], "process.args[0]", "surrogate"),
    ("process.cwd", ..., "process.cwd", "is required"),
    ("process.cwd", "srv", "process.cwd", "must be an absolute path, got 'srv'"),
    ("process.env", ["A=1", "FOO"], "process.env[1]", "NAME=value"),
    ("process.env", ["=x"], "process.env[0]", "NAME=value"),
    ("process.env", [None], "process.env[0]", "expected a string, got null"),
    ("process.terminal", "yes", "process.terminal", "expected a boolean"),
    ("process.user", {}, "process.user.uid", "is required"),
    ("process.user", {"uid": 0}, "process.user.gid", "is required"),
    (
        "process.user",
        {"uid": True, "gid": 0},
        "process.user.uid",
        "expected an integer, got a boolean",
    ),
    ("process.user", {"uid": 1.0, "gid": 0}, "process.user.uid", "got the number 1.0"),
    ("process.user", {"uid": -1, "gid": 0}, "process.user.uid", "between 0 and 4294967295"),
    ("process.user", {"uid": 0, "gid": 2**32}, "process.user.gid", "between 0 and 4294967295"),
    (
        "process.user",
        {"uid": 0, "gid": 0, "umask": 0o1000},
        "process.user.umask",
        "between 0 and 511",
    ),
    (
        "process.user",
        {"uid": 0, "gid": 0, "additionalGids": [1, "2"]},
        "process.user.additionalGids[1]",
        "integer",
    ),
    ("process.capabilities", ["CAP_KILL"], "process.capabilities", "expected an object"),
    (
        "process.capabilities",
        {"bounding": ["CAP_KILL", "CAP_NOPE"]},
        "process.capabilities.bounding[1]",
        "unknown capability 'CAP_NOPE'",
    ),
    (
        "process.capabilities",
        {"ambient": ["kill"]},
        "process.capabilities.ambient[0]",
        "unknown capability",
    ),
    (
        "process.capabilities",
        {"permitted": [29]},
        "process.capabilities.permitted[0]",
        "expected a string",
    ),
    ("process.rlimits", {}, "process.rlimits", "expected an array"),
    ("process.rlimits", ["x"], "process.rlimits[0]", "expected an object"),
    (
        "process.rlimits",
        [{**RLIMIT, "type": "RLIMIT_FOO"}],
        "process.rlimits[0].type",
        "unknown resource limit",
    ),
    (
        "process.rlimits",
        [{**RLIMIT, "type": "NOFILE"}],
        "process.rlimits[0].type",
        "unknown resource limit",
    ),
    (
        "process.rlimits",
        [{**RLIMIT, "soft": 11}],
        "process.rlimits[0].soft",
        "above the hard limit",
    ),
    (
        "process.rlimits",
        [{"type": "RLIMIT_CPU", "soft": 1}],
        "process.rlimits[0].hard",
        "is required",
    ),
    ("process.rlimits", [{**RLIMIT, "hard": True}], "process.rlimits[0].hard", "got a boolean"),
    ("process.rlimits", [{**RLIMIT, "hard": 2**64}], "process.rlimits[0].hard", "between 0 and"),
    ("process.rlimits", [{**RLIMIT, "soft": -1}], "process.rlimits[0].soft", "between 0 and"),
    (
        "process.rlimits",
        [RLIMIT, {**RLIMIT, "type": "RLIMIT_CPU"}, RLIMIT],
        "process.rlimits[2].type",
        "duplicate",
    ),
    ("process.noNewPrivileges", 1, "process.noNewPrivileges", "expected a boolean, got an integer"),
    ("process.oomScoreAdj", 1001, "process.oomScoreAdj", "between -1000 and 1000"),
    ("process.oomScoreAdj", "5", "process.oomScoreAdj", "expected an integer"),
    ("mounts", {}, "mounts", "expected an array"),
    ("mounts", [{"destination": "/a"}, "x"], "mounts[1]", "expected an object"),
    ("mounts", [{"destination": "proc"}], "mounts[0].destination", "must be an absolute path"),
    ("mounts", [{"type": "proc"}], "mounts[0].destination", "is required"),
    (
        "mounts",
        [{"destination": "/a", "options": ["ro", 1]}],
        "mounts[0].options[1]",
        "expected a string",
    ),
    ("mounts", [{"destination": "/a", "source": 5}], "mounts[0].source", "expected a string"),
    ("hostname", "box", "hostname", "unable to set hostname without a private UTS namespace"),
    ("domainname", "ex", "domainname", "unable to set domainname without a private UTS namespace"),
    ("hostname", 5, "hostname", "expected a string"),
    ("annotations", [], "annotations", "expected an object"),
    ("annotations", {"a": "1", "b.c": 2}, 'annotations["b.c"]', "expected a string"),
    ("hooks", [], "hooks", "expected an object"),
    ("linux", [], "linux", "expected an object"),
    ("linux", {"namespaces": {"type": "pid"}}, "linux.namespaces", "expected an array"),
    (
        "linux",
        {"namespaces": [{"type": "pid"}, {"type": "net"}]},
        "linux.namespaces[1].type",
        "unknown namespace",
    ),
    ("linux", {"namespaces": [{}]}, "linux.namespaces[0].type", "is required"),
    (
        "linux",
        {
            "namespaces": [
                {"type": "pid"},
                {"type": "uts"},
                {"type": "pid", "path": "/proc/1/ns/pid"},
            ]
        },
        "linux.namespaces[2].type",
        "duplicate namespace type pid",
    ),
    (
        "linux",
        {"namespaces": [{"type": "pid", "path": "proc/1/ns/pid"}]},
        "linux.namespaces[0].path",
        "absolute",
    ),
    (
        "linux",
        {"namespaces": [{"type": "user"}]},
        "linux.uidMappings",
        "needs at least one mapping",
    ),
    ("linux", {**USERNS, "gidMappings": []}, "linux.gidMappings", "needs at least one mapping"),
    ("linux", {**USERNS, "namespaces": []}, "linux.uidMappings", "without a user namespace"),
    (
        "linux",
        {**USERNS, "namespaces": [], "uidMappings": []},
        "linux.gidMappings",
        "without a user namespace",
    ),
    (
        "linux",
        {**USERNS, "uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}]},
        "linux.uidMappings[0].size",
        "between 1 and",
    ),
    (
        "linux",
        {**USERNS, "uidMappings": [{"containerID": 0, "hostID": 1, "size": True}]},
        "linux.uidMappings[0].size",
        "got a boolean",
    ),
    (
        "linux",
        {**USERNS, "uidMappings": [{"containerID": 0, "hostID": 2**32 - 1, "size": 2}]},
        "linux.uidMappings[0].size",
        "32-bit",
    ),
    (
        "linux",
        {**USERNS, "gidMappings": [{"hostID": 1, "size": 1}]},
        "linux.gidMappings[0].containerID",
        "is required",
    ),
    (
        "linux",
        {"devices": [{**DEVICE, "type": "x"}]},
        "linux.devices[0].type",
        "unknown device type",
    ),
    ("linux", {"devices": [{**DEVICE, "path": "dev/null"}]}, "linux.devices[0].path", "absolute"),
    (
        "linux",
        {"devices": [DEVICE, {"path": "/dev/x", "type": "b", "minor": 1}]},
        "linux.devices[1].major",
        "is required",
    ),
    (
        "linux",
        {"devices": [{**DEVICE, "fileMode": 0o10000}]},
        "linux.devices[0].fileMode",
        "between 0 and 4095",
    ),
    ("linux", {"devices": [{**DEVICE, "uid": -1}]}, "linux.devices[0].uid", "between 0 and"),
    (
        "linux",
        {"resources": {"devices": [{"access": "rwm"}]}},
        "linux.resources.devices[0].allow",
        "is required",
    ),
    (
        "linux",
        {"resources": {"devices": [{"allow": "yes"}]}},
        "linux.resources.devices[0].allow",
        "boolean",
    ),
    (
        "linux",
        {"resources": {"devices": [{"allow": True, "access": ""}]}},
        "linux.resources.devices[0].access",
        "must not be empty",
    ),
    (
        "linux",
        {"resources": {"devices": [{"allow": True, "type": "u"}]}},
        "linux.resources.devices[0].type",
        "unknown device rule type",
    ),
    (
        "linux",
        {"resources": {"devices": [{"allow": True, "major": -2}]}},
        "linux.resources.devices[0].major",
        "between -1 and",
    ),
    (
        "linux",
        {"resources": {"devices": [{"allow": True, "minor": 1.5}]}},
        "linux.resources.devices[0].minor",
        "integer",
    ),
    ("linux", {"resources": []}, "linux.resources", "expected an object"),
    ("linux", {"rootfsPropagation": "bogus"}, "linux.rootfsPropagation", "unknown propagation"),
    ("linux", {"maskedPaths": ["/ok", "proc/kcore"]}, "linux.maskedPaths[1]", "absolute"),
    ("linux", {"readonlyPaths": [1]}, "linux.readonlyPaths[0]", "expected a string"),
    ("linux", {"cgroupsPath": 5}, "linux.cgroupsPath", "expected a string"),
]


@pytest.mark.parametrize(
    ("where", "value", "field", "words"), BAD, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD]
)
def test_bad_value_names_the_field(where, value, field, words):
    err = refused(change(minimal(), where, value))
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith(f"{field}: ")


def test_hostname_longer_than_the_kernel_allows():
    doc = change(minimal(), "linux", {"namespaces": [{"type": "uts"}]})
    assert parse_config(change(doc, "hostname", "h" * 64)).hostname == "h" * 64
    assert refused(change(doc, "hostname", "h" * 65)).field == "hostname"


@pytest.mark.parametrize("doc", [None, [], "config", 3, True])
def test_document_must_be_an_object(doc):
    assert "must hold a JSON object" in str(refused(doc))


def test_terminal_and_console_size_are_parsed():
    doc = minimal()
    doc["process"].update(terminal=True, consoleSize={"height": 24, "width": 80})
    p = parse_config(doc).process
    assert p.terminal and p.console_size == (24, 80)
    doc["process"]["consoleSize"] = {"height": -1, "width": 80}
    assert "process.consoleSize.height" in str(refused(doc))


# --------------------------------------------------------------------------- not supported yet

UNSUPPORTED = [
    ("process.commandLine", "app.exe", "process.commandLine"),
    ("linux", {"resources": {"rdma": {"mlx5_1": {"hcaHandles": 1}}}}, "linux.resources.rdma"),
    ("linux", {"rdma": {"mlx5_1": {}}}, "linux.rdma"),
]


@pytest.mark.parametrize(("where", "value", "what"), UNSUPPORTED, ids=[u[2] for u in UNSUPPORTED])
def test_unimplemented_features_are_refused_not_ignored(where, value, what):
    with pytest.raises(NotSupportedError) as exc:
        parse_config(change(minimal(), where, value))
    assert exc.value.what == what
    assert str(exc.value) == f"{what}: not supported yet"


def test_empty_unimplemented_features_are_accepted():
    """podman and runc write empty objects for features they leave off."""
    doc = minimal()
    doc["hooks"] = {name: [] for name in ("prestart", "createRuntime", "poststart", "poststop")}
    doc["process"].update(
        terminal=False,
        consoleSize={},
        apparmorProfile="",
        selinuxLabel="",
        scheduler={},
        ioPriority=None,
        execCPUAffinity={},
        commandLine="",
    )
    doc["linux"] = {
        "seccomp": {},
        "sysctl": {},
        "intelRdt": None,
        "personality": {},
        "timeOffsets": {},
        "mountLabel": "",
        "memoryPolicy": {},
        "netDevices": {},
        "resources": {
            "memory": {},
            "cpu": {},
            "pids": None,
            "blockIO": {},
            "hugepageLimits": [],
            "unified": {},
            "devices": [],
        },
    }
    doc["mounts"] = [{"destination": "/a", "uidMappings": [], "gidMappings": []}]
    parse_config(doc)


def test_unknown_keys_are_ignored():
    doc = minimal()
    doc["x-vendor"] = {"whatever": [1]}
    doc["process"]["futureKnob"] = True
    doc["root"]["extra"] = None
    doc["linux"] = {"futureThing": {"a": 1}, "resources": {"futureController": {"max": 1}}}
    assert parse_config(doc) == parse_config(minimal())


# ------------------------------------------------------------------------------- capabilities


def test_capability_table():
    assert len(ALL_CAPS) == 41 and LAST_CAP == 40
    assert ALL_CAPS[0] == "CAP_CHOWN" and ALL_CAPS[-1] == "CAP_CHECKPOINT_RESTORE"
    assert [CAPABILITIES[name] for name in ALL_CAPS] == list(range(41))
    assert cap_number("CAP_SYS_ADMIN") == 21 and cap_number("CAP_BPF") == 39


def test_caps_mask():
    assert caps_mask([]) == 0
    assert caps_mask(["CAP_CHOWN", "CAP_KILL", "CAP_KILL"]) == 0b100001
    assert caps_mask(ALL_CAPS) == (1 << 41) - 1
    assert caps_mask(ALL_CAPS) < 1 << 64


@pytest.mark.parametrize("name", ["CAP_NOPE", "cap_kill", "KILL", "", None, 5, ["CAP_KILL"]])
def test_unknown_capability_is_a_value_error(name):
    with pytest.raises(ValueError):
        cap_number(name)
    with pytest.raises(ValueError):
        caps_mask(["CAP_KILL", name])


# -------------------------------------------------------------------------------- load_bundle


def write_bundle(tmp_path, text: str | bytes, rootfs: bool = True):
    data = text.encode() if isinstance(text, str) else text
    (tmp_path / "config.json").write_bytes(data)
    if rootfs:
        (tmp_path / "rootfs").mkdir()
    return str(tmp_path)


def bundle_error(bundle: str) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_bundle(bundle)
    assert len(str(exc.value).splitlines()) == 1
    return exc.value


def test_load_bundle_returns_config_and_raw(tmp_path):
    raw = rich()
    raw["root"]["path"] = "rootfs"
    config, got = load_bundle(write_bundle(tmp_path, json.dumps(raw)))
    assert got == raw
    assert config == parse_config(raw)


@pytest.mark.parametrize("annotated", [False, True], ids=["plain", "annotation-named-so"])
def test_load_bundle_configs_differing_in_cgroup_path(tmp_path, annotated):
    """Configs parsed once per content but their cgroup path still get their own path, and
    a "cgroupsPath" string elsewhere in the document is not taken for it."""
    loaded = []
    for n in range(3):
        raw = minimal()
        if annotated:
            raw["annotations"] = {"cgroupsPath": f"note{n}"}
        else:
            raw["linux"] = {"cgroupsPath": f"/corral-test/c{n}"}
        (tmp_path / str(n)).mkdir()
        config, got = load_bundle(write_bundle(tmp_path / str(n), json.dumps(raw)))
        assert got == raw
        loaded.append(config)
    if annotated:
        assert [c.linux.cgroups_path for c in loaded] == [None] * 3
        assert [c.annotations["cgroupsPath"] for c in loaded] == ["note0", "note1", "note2"]
    else:
        paths = [c.linux.cgroups_path for c in loaded]
        assert paths == ["/corral-test/c0", "/corral-test/c1", "/corral-test/c2"]


def test_load_bundle_relative_path_and_absolute_root(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    raw = change(minimal(), "root.path", str(tmp_path / "elsewhere"))
    (tmp_path / "b").mkdir()
    write_bundle(tmp_path / "b", json.dumps(raw), rootfs=False)
    monkeypatch.chdir(tmp_path)
    config, _ = load_bundle("b")
    assert config.root_path == str(tmp_path / "elsewhere")


def test_load_bundle_without_config(tmp_path):
    err = bundle_error(str(tmp_path))
    assert err.field == "config.json"
    assert str(tmp_path / "config.json") in str(err) and "does not exist" in str(err)


def test_load_bundle_config_is_a_directory(tmp_path):
    (tmp_path / "config.json").mkdir()
    err = bundle_error(str(tmp_path))
    assert err.field == "config.json" and "cannot read" in str(err)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{\n  "ociVersion": "1.0.2",\n  oops\n}', "invalid JSON at line 3 column 3: "),
        ("", "invalid JSON at line 1 column 1: "),
        ('{"a": 1} trailing', "invalid JSON at line 1 column 10: Extra data"),
        ('{"a": NaN}', "NaN is not a JSON value"),
        ('{"a": -Infinity}', "-Infinity is not a JSON value"),
        (b'{"a": "\xff"}', "invalid UTF-8 at byte 7"),
        ('{"a": ' + "9" * 5000 + "}", "invalid JSON: "),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON"),
    ],
    ids=["syntax", "empty", "trailing", "nan", "infinity", "utf8", "huge-int", "deep"],
)
def test_load_bundle_bad_json(tmp_path, text, words):
    err = bundle_error(write_bundle(tmp_path, text))
    assert err.field == "config.json"
    assert words in str(err)


def test_load_bundle_validates(tmp_path):
    err = bundle_error(write_bundle(tmp_path, json.dumps(change(minimal(), "process.cwd", "x"))))
    assert err.field == "process.cwd"


def test_load_bundle_missing_rootfs(tmp_path):
    err = bundle_error(write_bundle(tmp_path, json.dumps(minimal()), rootfs=False))
    assert err.field == "root.path"
    assert str(err) == f"root.path: rootfs {tmp_path / 'rootfs'} does not exist"


def test_load_bundle_rootfs_is_a_file(tmp_path):
    bundle = write_bundle(tmp_path, json.dumps(minimal()), rootfs=False)
    (tmp_path / "rootfs").write_text("")
    err = bundle_error(bundle)
    assert str(err) == f"root.path: rootfs {tmp_path / 'rootfs'} is not a directory"


def test_load_bundle_rootfs_symlink_to_directory(tmp_path):
    (tmp_path / "real").mkdir()
    bundle = write_bundle(tmp_path, json.dumps(minimal()), rootfs=False)
    os.symlink("real", tmp_path / "rootfs")
    assert load_bundle(bundle)[0].root_path == "rootfs"


def test_load_runc_spec_bundle(tmp_path):
    spec = default_spec()
    spec["process"]["terminal"] = False
    config, raw = load_bundle(write_bundle(tmp_path, json.dumps(spec, indent="\t")))
    assert raw == spec and config.hostname == "runc"


# ------------------------------------------------------------------------------ properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

TOP_KEYS = [
    "ociVersion",
    "root",
    "process",
    "hostname",
    "domainname",
    "mounts",
    "hooks",
    "linux",
    "annotations",
]


def assert_parses_or_refuses(doc: object) -> None:
    before = copy.deepcopy(doc)
    try:
        config = parse_config(doc)
    except (ConfigError, NotSupportedError) as err:
        assert len(str(err).splitlines()) == 1, str(err)
    else:
        assert isinstance(config, Config)
    assert doc == before or doc != doc  # never mutated (NaN never equals itself)


@given(json_values)
def test_arbitrary_json_never_crashes(doc):
    assert_parses_or_refuses(doc)


@given(st.dictionaries(st.sampled_from(TOP_KEYS), json_values))
def test_arbitrary_top_level_fields_never_crash(doc):
    assert_parses_or_refuses(doc)


def valid_doc() -> dict:
    doc = rich()
    doc["process"]["terminal"] = False
    doc["linux"]["resources"].pop("memory")
    return doc


def field_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += field_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths += field_paths(value, (*prefix, i))
    return paths


def valid_spec(rootless: bool) -> dict:
    spec = default_spec(rootless)
    spec["process"]["terminal"] = False
    return spec


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.data())
def test_mutated_valid_configs_never_crash(data):
    doc = valid_doc() if data.draw(st.booleans()) else valid_spec(data.draw(st.booleans()))
    for _ in range(data.draw(st.integers(1, 3))):
        candidates = field_paths(doc)
        if not candidates:
            break
        *parents, last = data.draw(st.sampled_from(candidates))
        node = doc
        for p in parents:
            node = node[p]
        if data.draw(st.booleans()):
            node[last] = data.draw(json_values)
        elif isinstance(node, dict):
            del node[last]
        else:
            node.pop(last)
    assert_parses_or_refuses(doc)


def test_valid_doc_really_is_valid():
    """The mutation test starts from configs that parse."""
    for doc in (valid_doc(), valid_spec(False), valid_spec(True)):
        parse_config(doc)


def test_annotation_keys_are_quoted_in_the_field_name():
    err = refused(change(minimal(), "annotations", {'we"ird\nkey': 1}))
    assert err.field == 'annotations["we\\"ird\\nkey"]'
    assert refused(change(minimal(), "annotations", {1: "x"})).field == "annotations"
