"""The CRI path with the systemd cgroup driver, as on a kubeadm node: containerd 1.6 with the
runtime handler ``corral`` set to ``SystemdCgroup = true``, run as a service of the systemd
booted in a corral container (tests/systemd_box.py), driven with crictl there.  The pod's
cgroup parent is a slice, as a kubelet with the systemd driver passes it; the CRI plugin
makes each container's cgroupsPath ``<slice>:cri-containerd:<id>`` and the shim runs
``corral --systemd-cgroup``: the sandbox and every container are transient scopes that
systemd made, gone once removed.

containerd's config, sockets, root and state are under the test's directory (bound at
/inner in the container); its mounts are in the container's mount namespace and its
processes in the container's pid namespace, so they all go with the container."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from tests.conftest import CORRAL
from tests.cri_fixture import (CRICTL, IMAGE, MIB, SKIP_UNLESS_CRI, Crictl,
                               containerd_config, write_images)
from tests.systemd_box import SKIP_UNLESS_BOOTABLE, Box, booted_box

pytestmark = [*SKIP_UNLESS_BOOTABLE, *SKIP_UNLESS_CRI]

CRICTL_IN_BOX = "/opt/crictl"
WORKDIR = "/inner/cri"  # the test's tmp_path/inner/cri, as the container sees it
SERVICE = "corral-cri-containerd.service"
# What a kubelet with the systemd driver passes for a pod: its slice, by full path.
POD_SLICE = "/corral.slice/corral-cri.slice/corral-cri-pod{uid}.slice"
POD_MEMORY = 256 * MIB


class BoxCri(Crictl):
    """crictl and ctr run in the systemd container."""

    def __init__(self, box: Box, host_workdir: str) -> None:
        super().__init__(WORKDIR, host_workdir, CRICTL_IN_BOX)
        self.box = box

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return self.box.sh(shlex.join(argv), check=False, timeout=timeout)

    def run_pod(self, name: str) -> tuple[str, str, str]:
        """A host-network pod in its own slice, which is started first with the pod's
        memory limit, as the kubelet starts it.  Returns (pod id, pod config, slice path)."""
        self.pods += 1
        uid = f"uid{self.pods}"
        parent = POD_SLICE.format(uid=uid)
        unit = parent.rsplit("/", 1)[1]
        self.box.sh(f"busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1"
                    f" org.freedesktop.systemd1.Manager StartTransientUnit 'ssa(sv)a(sa(sv))'"
                    f" {unit} replace 1 MemoryLimit t {POD_MEMORY} 0 && i=0;"
                    f" until systemctl is-active -q {unit}; do i=$((i+1));"
                    f" [ $i -lt 600 ] || exit 1; sleep 0.1; done", timeout=90)
        self.box.sh(f"mkdir -p {WORKDIR}/logs/{name}")
        config = self.write_json(f"pod-{name}.json", {
            "metadata": {"name": name, "namespace": "default", "uid": uid, "attempt": 0},
            "log_directory": f"{WORKDIR}/logs/{name}",
            "linux": {"cgroup_parent": parent, "security_context": {
                "namespace_options": {"network": 2, "pid": 0, "ipc": 0}}},
        })
        return self.ok("runp", "--runtime", "corral", config).strip(), config, parent


@pytest.fixture
def box_cri(corral, tmp_path):
    inner = tmp_path / "inner"
    with booted_box(corral, tmp_path, binds=((CRICTL, CRICTL_IN_BOX),)) as box:
        host_w = inner / "cri"
        host_w.mkdir()
        (host_w / "config.toml").write_text(containerd_config(WORKDIR, CORRAL[0],
                                                              systemd_cgroup=True))
        (host_w / "crictl.yaml").write_text("debug: false\n")
        archives = write_images(str(host_w))
        # A service of its own, as containerd.service is on a node
        box.sh(f"systemd-run --unit={SERVICE} -p StandardOutput=append:{WORKDIR}/containerd.log"
               f" -p StandardError=append:{WORKDIR}/containerd.log"
               f" containerd --config {WORKDIR}/config.toml")
        c = BoxCri(box, str(host_w))
        try:
            box.sh(f"i=0; until {CRICTL_IN_BOX} -r unix://{WORKDIR}/containerd.sock info"
                   f" >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 900 ] || exit 1;"
                   f" systemctl is-active -q {SERVICE} || exit 1; sleep 0.1; done", timeout=150)
            for archive in archives:
                c.ctr("images", "import", f"{WORKDIR}/{archive}")
            yield c
        except BaseException:
            log = host_w / "containerd.log"
            print(log.read_text()[-8000:] if log.exists() else "no containerd log")
            raise
        finally:
            c("rmp", "--force", "--all")
            box.sh(f"systemctl stop {SERVICE}", check=False)


def scope(pod_or_container: str) -> str:
    return f"cri-containerd-{pod_or_container}.scope"


def procs(box: Box, hierarchy: str, group: str) -> list[str]:
    return box.sh(f"cat /sys/fs/cgroup/{hierarchy}{group}/cgroup.procs").stdout.split()


def cgroup_paths(box: Box, pid: str) -> set[str]:
    """The process's path in every hierarchy (one path when placed as runc does)."""
    lines = box.sh(f"cat /proc/{pid}/cgroup").stdout.splitlines()
    return {line.split(":", 2)[2] for line in lines}


def test_cri_pod_in_systemd_scopes(box_cri):
    cri, box = box_cri, box_cri.box
    pod, pod_config, parent = cri.run_pod("p1")
    sandbox = cri.inspect("inspectp", pod)
    assert sandbox["status"]["state"] == "SANDBOX_READY"
    sandbox_pid = str(sandbox["info"]["pid"])
    assert box.sh(f"test -d {WORKDIR}/runc/k8s.io/{pod}", check=False).returncode == 0
    pod_unit = box.show(scope(pod), "ActiveState", "ControlGroup", "Slice")
    pod_group = f"{parent}/{scope(pod)}"
    assert pod_unit == {"ActiveState": "active", "ControlGroup": pod_group,
                        "Slice": "corral-cri-poduid1.slice"}, pod_unit
    assert procs(box, "systemd", pod_group) == [sandbox_pid]
    assert cgroup_paths(box, sandbox_pid) == {pod_group}
    pod_slice = parent.rsplit("/", 1)[1]
    assert box.show(pod_slice, "MemoryLimit") == {"MemoryLimit": str(POD_MEMORY)}
    assert box.sh(f"cat /sys/fs/cgroup/memory{parent}/memory.limit_in_bytes").stdout.strip() \
        == str(POD_MEMORY)  # the kubelet's pod limit, above the containers' own

    script = "echo hello; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"
    c1 = cri.create(pod, pod_config, "c1", ["/bin/sh", "-c", script],
                    {"cpu_shares": 512, "cpu_period": 100000, "cpu_quota": 50000,
                     "memory_limit_in_bytes": 64 * MIB})
    cri.ok("start", c1)
    cri.wait_state(c1, "CONTAINER_RUNNING")
    cri.wait_log(c1, "hello")
    pid = str(cri.inspect("inspect", c1)["info"]["pid"])
    unit = scope(c1)
    group = f"{parent}/{unit}"
    props = box.show(unit, "ActiveState", "ControlGroup", "MemoryLimit", "CPUShares",
                     "CPUQuotaPerSecUSec", "Delegate")
    assert props == {"ActiveState": "active", "ControlGroup": group,
                     "MemoryLimit": str(64 * MIB), "CPUShares": "512",
                     "CPUQuotaPerSecUSec": "500ms", "Delegate": "yes"}, props
    # every hierarchy at the scope's path, those systemd does not manage too (runc's way)
    assert cgroup_paths(box, pid) == {group}
    for hierarchy in ("systemd", "memory", "cpu", "pids"):  # (and the loop's sleep)
        assert pid in procs(box, hierarchy, group), hierarchy
    assert box.sh(f"cat /sys/fs/cgroup/memory{group}/memory.limit_in_bytes").stdout.strip() \
        == str(64 * MIB)

    cri.ok("update", "--memory", str(96 * MIB), c1)  # `update --resources -`: the unit too
    assert box.show(unit, "MemoryLimit") == {"MemoryLimit": str(96 * MIB)}
    assert box.sh(f"cat /sys/fs/cgroup/memory{group}/memory.limit_in_bytes").stdout.strip() \
        == str(96 * MIB)

    # an exec'd process joins the container's scope
    out = cri.ok("exec", "--sync", c1, "sh", "-c", "echo out; grep memory: /proc/self/cgroup")
    lines = out.splitlines()
    assert lines[0] == "out" and lines[1].split(":", 2)[1:] == ["memory", group], out
    proc = cri("exec", "--sync", c1, "sh", "-c", "exit 3")
    assert proc.returncode != 0 and "exited with 3" in proc.stderr, proc.stderr

    stats = cri.inspect("stats", c1)["stats"]
    assert [s["attributes"]["id"] for s in stats] == [c1]
    assert int(stats[0]["memory"]["usageBytes"]["value"]) > 0
    assert int(stats[0]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0

    cri.ok("stop", "--timeout", "30", c1)
    status = cri.status(c1)
    assert (status["state"], status["exitCode"]) == ("CONTAINER_EXITED", 0), status
    cri.ok("rm", c1)
    assert box.show(unit, "LoadState") == {"LoadState": "not-found"}
    assert box.sh(f"ls -d /sys/fs/cgroup/*{group} 2>/dev/null", check=False).stdout == ""

    cri.ok("stopp", pod)
    assert cri.inspect("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY"
    cri.ok("rmp", pod)
    assert box.show(scope(pod), "LoadState") == {"LoadState": "not-found"}
    assert box.sh(f"ls -d /sys/fs/cgroup/*{pod_group} 2>/dev/null", check=False).stdout == ""
    assert box.sh(f"ls {WORKDIR}/runc/k8s.io").stdout == ""
    assert cri.ok("pods", "--quiet") == ""
    # The kubelet's removal of the pod: it stops the slice (systemd removes its directories)
    # and removes the slice's directories in the hierarchies systemd does not manage
    # (freezer, cpuset...: made by the runtime, runc too, for its scopes, and not its own
    # to remove); they are empty.
    box.sh(f"systemctl stop {pod_slice}")
    assert box.show(pod_slice, "ActiveState") == {"ActiveState": "inactive"}
    box.sh(f"for d in $(ls -d /sys/fs/cgroup/*{parent} 2>/dev/null); do rmdir $d; done")
    assert box.sh(f"ls -d /sys/fs/cgroup/*{parent} 2>/dev/null", check=False).stdout == ""


def test_cri_systemd_oom_kill_and_a_second_container_of_the_pod(box_cri):
    """The scope's MemoryLimit OOM-kills (the shim sees it in the scope's cgroup); a second
    container has a scope of its own in the pod's slice and the sandbox's namespaces."""
    cri, box = box_cri, box_cri.box
    pod, pod_config, parent = cri.run_pod("p2")
    sandbox_pid = cri.inspect("inspectp", pod)["info"]["pid"]
    # dd's 64 MiB buffer is over the 16 MiB limit; it waits for the go (see test_cri.py)
    hog = ("echo start; until [ -e /tmp/go ]; do sleep 0.05; done;"
           " exec dd if=/dev/zero of=/dev/null bs=64M count=1")
    cid = cri.create(pod, pod_config, "hog", ["/bin/sh", "-c", hog],
                     {"memory_limit_in_bytes": 16 * MIB})
    cri.ok("start", cid)
    assert box.show(scope(cid), "MemoryLimit") == {"MemoryLimit": str(16 * MIB)}
    other = cri.create(pod, pod_config, "other", ["/bin/sh", "-c", "echo two; exec sleep 300"])
    cri.ok("start", other)
    cri.wait_log(other, "two")
    other_pid = cri.inspect("inspect", other)["info"]["pid"]
    assert box.show(scope(other), "ControlGroup", "ActiveState") == {
        "ControlGroup": f"{parent}/{scope(other)}", "ActiveState": "active"}
    links = box.sh(f"for p in {sandbox_pid} {other_pid}; do readlink /proc/$p/ns/pid"
                   f" /proc/$p/ns/ipc /proc/$p/ns/mnt; done").stdout.split()
    assert links[:2] == links[3:5] and links[2] != links[5], links  # pid, ipc shared

    cri.ok("exec", "--sync", cid, "touch", "/tmp/go")
    status = cri.wait_state(cid, "CONTAINER_EXITED")
    assert (status["exitCode"], status["reason"]) == (137, "OOMKilled"), status
    assert cri.ok("logs", cid) == "start\n"
    cri.ok("rm", cid)
    assert box.show(scope(cid), "LoadState") == {"LoadState": "not-found"}
    cri.ok("stopp", pod)  # the pod's stop kills the running container
    assert cri.status(other)["state"] == "CONTAINER_EXITED"
    cri.ok("rmp", pod)
    for unit in (scope(other), scope(pod)):
        assert box.show(unit, "LoadState") == {"LoadState": "not-found"}, unit
    # the pod's slice (the kubelet's to remove) is left with no cgroup under it
    assert box.sh(f"find /sys/fs/cgroup/*{parent} -mindepth 1 -type d").stdout == ""
