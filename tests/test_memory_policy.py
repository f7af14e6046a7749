"""linux.memoryPolicy: set_mempolicy(2) in the init before exec, seen by the container's
process in /proc/self/numa_maps (the task policy is shown for every mapping without one of
its own).  Needs a NUMA kernel (CONFIG_NUMA): node 0 exists on any such machine."""

from __future__ import annotations

import os

import pytest

from corral.errors import ConfigError
from corral.oci.config import parse_config
from corral.oci.spec import default_spec

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/numa_maps"),
                                reason="kernel without CONFIG_NUMA")

# The first mapping's policy (the busybox binary's text: no mbind policy of its own).
SHOW = "head -n1 /proc/self/numa_maps | cut -d' ' -f2"


def run(corral, make_bundle, policy: dict | None, check: bool = True):
    b = make_bundle(["sh", "-c", SHOW])
    if policy is not None:
        b.config["linux"]["memoryPolicy"] = policy
    b.write()
    return corral("run", "-b", b.path, b.id, check=check)


@pytest.mark.parametrize("policy, shown", [
    (None, "default"),
    ({"mode": "MPOL_BIND", "nodes": "0"}, "bind:0"),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0"}, "interleave:0"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0"}, "prefer:0"),
    ({"mode": "MPOL_LOCAL"}, "local"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, "bind=static:0"),
])
def test_policy_reaches_the_process(corral, make_bundle, policy, shown):
    assert run(corral, make_bundle, policy).stdout.strip() == shown


def test_a_node_the_host_lacks_fails_create_naming_the_field(corral, make_bundle):
    with open("/sys/devices/system/node/possible") as f:
        last = int(f.read().strip().split(",")[-1].split("-")[-1])
    if last >= 1023:
        pytest.skip("every node number is possible here")
    out = run(corral, make_bundle, {"mode": "MPOL_BIND", "nodes": str(last + 1)}, check=False)
    assert out.returncode != 0
    assert (f"linux.memoryPolicy: set_mempolicy(MPOL_BIND, nodes {last + 1}): invalid argument"
            in out.stderr)


@pytest.mark.parametrize("policy, error", [
    ({"mode": "MPOL_FASTEST", "nodes": "0"}, r"memoryPolicy\.mode: unknown memory policy mode"),
    ({"mode": "MPOL_BIND", "nodes": "0-"}, r"memoryPolicy\.nodes: '0-' is not a node list"),
    ({"mode": "MPOL_BIND", "nodes": "3-1"}, r"memoryPolicy\.nodes: '3-1' is not a node list"),
    ({"mode": "MPOL_BIND", "nodes": "x"}, r"memoryPolicy\.nodes: 'x' is not a node list"),
    ({"mode": "MPOL_BIND", "nodes": "5000"}, r"memoryPolicy\.nodes: node 5000 is above"),
    ({"mode": "MPOL_BIND"}, r"memoryPolicy\.nodes: MPOL_BIND needs at least one node"),
    ({"mode": "MPOL_DEFAULT", "nodes": "0"}, r"memoryPolicy\.nodes: MPOL_DEFAULT takes no"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_FAST"]},
     r"memoryPolicy\.flags\[0\]: unknown memory policy flag"),
    ({"mode": "MPOL_BIND", "nodes": "0",
      "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]},
     r"memoryPolicy\.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude"),
    ({"nodes": "0"}, r"memoryPolicy\.mode: is required"),
])
def test_bad_policies_are_refused_naming_the_field(policy, error):
    config = default_spec()
    config["linux"]["memoryPolicy"] = policy
    with pytest.raises(ConfigError, match=r"linux\." + error):
        parse_config(config)


def test_node_lists_are_read_like_cpu_lists():
    config = default_spec()
    config["linux"]["memoryPolicy"] = {"mode": "MPOL_INTERLEAVE", "nodes": "0-3,7"}
    assert parse_config(config).linux.memory_policy.nodes == (0, 1, 2, 3, 7)
