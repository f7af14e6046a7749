"""`corral features`: every claimed feature is one the code accepts, and host-dependent
entries are what the host really has."""

from __future__ import annotations

import copy
import json
import os

import pytest

from corral.plan.mounts import parse_mount_options
from corral.plan.seccomp import compile_filter
from corral.oci import host
from corral.oci.capabilities import cap_number
from corral.oci.config import parse_config
from corral.oci.spec import default_spec


@pytest.fixture(scope="module")
def features():
    from tests.conftest import CORRAL
    import subprocess

    out = subprocess.run([*CORRAL, "features"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def base() -> dict:
    config = default_spec()
    config["process"]["terminal"] = False
    del config["hostname"]  # needs a uts namespace: the namespace test leaves it out
    return config


def test_shape(features):
    assert features["ociVersionMin"] == "1.0.0"
    assert set(features["linux"]) >= {"namespaces", "capabilities", "cgroup", "seccomp",
                                      "apparmor", "selinux", "intelRdt", "mountExtensions"}
    assert features["linux"]["cgroup"] == {"v1": True, "v2": True, "systemd": True,
                                           "systemdUser": False, "rdma": False}


def test_every_listed_namespace_is_accepted(features):
    for kind in features["linux"]["namespaces"]:
        config = base()
        config["linux"]["namespaces"] = [{"type": "mount"}, {"type": kind}]
        if kind == "user":
            config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = [
                {"containerID": 0, "hostID": 100000, "size": 1}]
        if kind == "mount":
            config["linux"]["namespaces"] = [{"type": "mount"}]
        parse_config(config)
    assert "time" in features["linux"]["namespaces"] or not os.path.exists("/proc/self/ns/time")


def test_every_listed_mount_option_is_parsed(features):
    for option in features["mountOptions"]:
        opts = parse_mount_options([option])
        assert not opts.data, option  # a real flag, not passed on as filesystem data


def test_every_listed_capability_is_known(features):
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    assert [cap_number(c) for c in features["linux"]["capabilities"]] == list(range(last + 1))


def test_hooks_are_all_accepted(features):
    config = base()
    config["hooks"] = {kind: [{"path": "/bin/true"}] for kind in features["hooks"]}
    hooks = parse_config(config).hooks
    assert all(getattr(hooks, name) for name in hooks._fields)


def test_seccomp_entries_compile(features):
    seccomp = features["linux"]["seccomp"]
    assert seccomp["enabled"]
    assert set(seccomp["supportedFlags"]) <= set(seccomp["knownFlags"])
    for action in seccomp["actions"]:
        config = base()
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": action,
                          "args": [{"index": 0, "value": 1, "op": op}
                                   for op in seccomp["operators"][:1]]}],
        }
        if action == "SCMP_ACT_NOTIFY":
            config["linux"]["seccomp"]["listenerPath"] = "/run/agent.sock"
        program, _flags = compile_filter(parse_config(config).linux.seccomp)
        assert program
    for op in seccomp["operators"]:
        config = base()
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": op}]}]}
        compile_filter(parse_config(config).linux.seccomp)
    for arch in seccomp["archs"]:
        config = base()
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch]}
        compile_filter(parse_config(config).linux.seccomp)
    for flag in seccomp["knownFlags"]:
        config = base()
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "flags": [flag]}
        parse_config(config)


def test_host_dependent_entries_tell_the_truth(features):
    linux = features["linux"]
    assert linux["apparmor"] == {"enabled": host.apparmor_enabled()}
    assert linux["selinux"] == {"enabled": host.selinux_enabled()}
    assert linux["intelRdt"] == {"enabled": False}  # refused: see docs/spec-support.md
    assert linux["mountExtensions"]["idmap"]["enabled"]  # tested in test_config_linux_suite


def test_claimed_lsm_support_matches_the_refusals(features):
    config = base()
    config["process"]["apparmorProfile"] = "p"
    parsed = parse_config(copy.deepcopy(config))
    if not features["linux"]["apparmor"]["enabled"]:
        with pytest.raises(Exception, match="AppArmor is not enabled"):
            host.check_host(parsed)


def test_recursive_and_idmap_options_are_listed_where_mount_setattr_exists(features):
    from corral.runtime.features import idmap_supported

    listed = set(features["mountOptions"])
    wanted = {"rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec",
              "rnodiratime", "rdiratime", "rrelatime", "rnorelatime", "rnoatime", "ratime",
              "rstrictatime", "rnosymfollow", "rsymfollow", "idmap", "ridmap"}
    assert (wanted <= listed) == idmap_supported()  # tested in tests/test_mount_options.py


def test_every_claimed_memory_policy_mode_and_flag_runs(features, corral, make_bundle):
    """Each mode and flag `features` claims is accepted by the parser and by this kernel,
    in a real container."""
    policy = features["linux"].get("memoryPolicy")
    if policy is None:
        assert not os.path.exists("/proc/self/numa_maps")  # no NUMA: nothing claimed
        return
    assert "MPOL_BIND" in policy["modes"]
    cases = [{"mode": m} if m in ("MPOL_DEFAULT", "MPOL_LOCAL") else {"mode": m, "nodes": "0"}
             for m in policy["modes"]]
    cases += [{"mode": "MPOL_BIND", "nodes": "0", "flags": [f]} for f in policy["flags"]]
    for case in cases:
        b = make_bundle(["true"])
        b.config["linux"]["memoryPolicy"] = case
        b.write()
        out = corral("run", "-b", b.path, b.id, check=False)
        assert out.returncode == 0, (case, out.stderr)


def test_net_devices_claimed_and_accepted(features):
    assert features["linux"]["netDevices"] == {"enabled": True}  # tests/test_net_devices.py
    config = base()
    config["linux"]["netDevices"] = {"eth0": {"name": "c0"}}
    assert parse_config(config).linux.net_devices[0].name == "c0"
