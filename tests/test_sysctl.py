"""linux.sysctl: namespaced sysctls written by the init, the others refused by name."""

import os


def test_sysctls_are_written_in_the_containers_namespaces(corral, make_bundle):
    b = make_bundle()
    b.config["process"]["args"] = [
        "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax"]
    b.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}
    b.write()
    proc = corral("run", "-b", b.path, b.id)
    assert proc.stdout.split() == ["1", "123456789"]
    with open("/proc/sys/kernel/shmmax") as f:
        assert f.read().strip() != "123456789"  # the host's own is untouched


def test_non_namespaced_sysctl_is_refused(corral, make_bundle):
    b = make_bundle()
    b.config["linux"]["sysctl"] = {"vm.swappiness": "10"}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert 'linux.sysctl["vm.swappiness"]' in proc.stderr
    assert "not in a separate kernel namespace" in proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_net_sysctl_needs_a_network_namespace(corral, make_bundle):
    b = make_bundle()
    b.config["linux"]["namespaces"] = [
        ns for ns in b.config["linux"]["namespaces"] if ns["type"] != "network"]
    b.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert "host's network namespace" in proc.stderr
