"""linux.netDevices: host network devices moved (and renamed) into the container's network
namespace.  The corral command runs in a private network namespace of the test's own
(``unshare --net``), where the test makes veth pairs (this kernel has no dummy driver): the
host's network namespace is never touched."""

from __future__ import annotations

import pytest

from corral.errors import ConfigError
from corral.oci.config import parse_config
from corral.oci.spec import default_spec
from tests.conftest import CORRAL, run_capturing


def in_private_netns(corral, b, dummies: list[str]):
    """Makes veth pairs (NAME, its peer NAMEp) in a new network namespace, runs the bundle
    there, then lists the devices left in that namespace (after '--')."""
    adds = " && ".join(f"ip link add {name} type veth peer name {name}p" for name in dummies)
    script = f'{adds} && "$@"; echo "rc=$?"; echo --; ip -o link show | cut -d: -f2'
    out = run_capturing(["unshare", "--net", "sh", "-c", script, "sh", *CORRAL,
                         "--root", corral.root, "run", "-b", b.path, b.id])
    assert out.returncode == 0, out.stderr
    inside, _, left = out.stdout.partition("--\n")
    names = (name.strip().partition("@")[0] for name in left.split())
    return inside, sorted(names), out.stderr


def test_device_is_moved_and_renamed(corral, make_bundle):
    b = make_bundle(["sh", "-c", "ls /sys/class/net"])
    b.config["linux"]["netDevices"] = {"corral0": {"name": "ctr0"}, "corral1": {}}
    b.write()
    inside, left, _ = in_private_netns(corral, b, ["corral0", "corral1"])
    assert inside.split() == ["corral1", "ctr0", "lo", "rc=0"]
    # no longer in the runtime's namespace: the container's took them (its death destroys
    # them, and their peers too, asynchronously: the peers may not be gone yet)
    assert "corral0" not in left and "corral1" not in left and "ctr0" not in left


def test_a_failed_move_puts_the_moved_devices_back(corral, make_bundle):
    """corral0 moves; corral1 cannot be renamed lo (taken): create fails naming it and
    corral0 comes back under its own name."""
    b = make_bundle(["true"])
    b.config["linux"]["netDevices"] = {"corral0": {"name": "ctr0"}, "corral1": {"name": "lo"}}
    b.write()
    inside, left, stderr = in_private_netns(corral, b, ["corral0", "corral1"])
    assert inside.split() == ["rc=1"]
    assert ('linux.netDevices["corral1"]: move corral1 into the container\'s network namespace '
            'as lo: the name lo is taken in the container\'s network namespace') in stderr
    assert left == ["corral0", "corral0p", "corral1", "corral1p", "lo"]


def test_a_missing_device_is_refused_before_anything(corral, make_bundle):
    b = make_bundle(["true"])
    b.config["linux"]["netDevices"] = {"corral9": {}}
    b.write()
    inside, left, stderr = in_private_netns(corral, b, ["corral0"])
    assert inside.split() == ["rc=1"]
    assert ('linux.netDevices["corral9"]: no network device corral9 in the runtime\'s network '
            'namespace') in stderr
    assert left == ["corral0", "corral0p", "lo"]


def config_with(devices, namespaces=None) -> dict:
    config = default_spec()
    if namespaces is not None:
        config["linux"]["namespaces"] = namespaces
    config["linux"]["netDevices"] = devices
    return config


@pytest.mark.parametrize("devices, error", [
    ({"eth0": {"name": "a/b"}}, r'netDevices\["eth0"\]\.name: \'a/b\' is not a network device'),
    ({"eth0": {"name": "x" * 16}}, r"netDevices\[\"eth0\"\]\.name: 'x{16}' is not"),
    ({"eth:0": {}}, r"netDevices\[\"eth:0\"\]: 'eth:0' is not a network device name"),
    ({"eth0": {"name": "c0"}, "eth1": {"name": "c0"}},
     r'netDevices\["eth1"\]\.name: c0 is also the name of linux\.netDevices\["eth0"\]'),
    ({"eth0": []}, r'netDevices\["eth0"\]: expected an object'),
    ({"lo": {}}, r'netDevices\["lo"\]: the loopback device cannot leave its namespace'),
])
def test_bad_entries_are_refused_naming_them(devices, error):
    with pytest.raises(ConfigError, match=r"linux\." + error):
        parse_config(config_with(devices))


@pytest.mark.parametrize("namespaces", [
    [{"type": "mount"}],  # the runtime's own network namespace
    [{"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}],  # joined, the host's
])
def test_devices_need_the_container_s_own_network_namespace(namespaces):
    with pytest.raises(ConfigError, match=r"linux\.netDevices: moving network devices needs "
                                          r"the container's own network namespace"):
        parse_config(config_with({"eth0": {}}, namespaces))
