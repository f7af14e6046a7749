"""The CRI path: what a kubelet does, done with crictl against containerd 1.6's CRI plugin, with
corral as the runtime handler `corral` (runc v2 shim, `BinaryName` = the corral command, cgroupfs
driver).  A private containerd (config, sockets, root and state in a temp dir) runs in a private
mount namespace, so its overlay, shm and bind mounts never reach the host's table; the sandbox
("pause") and workload images are built here from the busybox rootfs as docker archives and
imported with `ctr images import`.  Pods use the host's network, but one whose network comes
from CNI (macvlan on a veth pair the test makes); their cgroup parent is made under the tests'
parent, as a kubelet makes a pod's.  containerd is stopped by its pid.

Skipped where containerd is not installed (`scripts/setup.sh --test` installs it) or no crictl is
found ($CRICTL, PATH, or the workplace's shared/tools/crictl beside the repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.conftest import (CGROUP_PARENT, CORRAL, remove_cgroups, remove_empty_dirs,
                            run_capturing, stop_daemon)
from tests.cri_fixture import (CNI_BIN, CRICTL, IMAGE, MIB, SKIP_UNLESS_CRI, Crictl,
                               containerd_config, write_images)

RUN_CONTAINERD = "/run/containerd"  # the shims' sockets (/run/containerd/s) are always here
RUN_NETNS = "/run/netns"  # where the CRI plugin binds pods' network namespaces (in its mount ns)

pytestmark = SKIP_UNLESS_CRI


def hierarchies() -> list[str]:
    return sorted(os.listdir("/sys/fs/cgroup"))


class Cri(Crictl):
    """crictl against the private containerd in ``workdir``, run on this host."""

    def __init__(self, workdir: str, daemon: subprocess.Popen) -> None:
        super().__init__(workdir, workdir, CRICTL)
        self.daemon = daemon

    def run_pod(self, name: str, privileged: bool = False,
                host_network: bool = True) -> tuple[str, str, str]:
        """A pod like a kubelet's for `hostNetwork: true, shareProcessNamespace: true`
        (or, without ``host_network``, a pod network from CNI, a hostname and a pid namespace
        per container, as by default): its cgroup parent made first, in every hierarchy.
        Returns (pod id, pod config path, cgroup parent)."""
        self.pods += 1
        uid = f"uid{self.pods}"
        parent = f"/{CGROUP_PARENT}/cri/pod{uid}"
        for hierarchy in hierarchies():
            os.makedirs(f"/sys/fs/cgroup/{hierarchy}{parent}", exist_ok=True)
        os.makedirs(f"{self.w}/logs/{name}", exist_ok=True)
        # 0 = POD, 1 = CONTAINER, 2 = NODE.  Host network: the host's UTS namespace too, and
        # no hostname (the kubelet leaves it empty for host-network pods), one pid namespace
        # for the pod, the sandbox's.
        namespaces = ({"network": 2, "pid": 0, "ipc": 0} if host_network
                      else {"network": 0, "pid": 1, "ipc": 0})
        config = self.write_json(f"pod-{name}.json", {
            "metadata": {"name": name, "namespace": "default", "uid": uid, "attempt": 0},
            "log_directory": f"{self.w}/logs/{name}",
            **({} if host_network else {"hostname": name}),
            "linux": {"cgroup_parent": parent,
                      "security_context": {"privileged": privileged,
                                           "namespace_options": namespaces}},
        })
        pod = self.ok("runp", "--runtime", "corral", config).strip()
        return pod, config, parent

    def private_mounts(self) -> list[str]:
        """containerd's own mounts (in its mount namespace): under the workdir (rootfs
        overlays, shm, the bundles' binds) and the pods' network namespaces."""
        with open(f"/proc/{self.daemon.pid}/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points
                if any(p == d or p.startswith(d + "/") for d in (self.w, RUN_NETNS))]

    def cleanup(self) -> None:
        """What is left after a failed test: every pod (and so its containers), then any
        mount under the workdir in containerd's mount namespace."""
        if self.daemon.poll() is not None:
            return
        self("rmp", "--force", "--all")
        for point in reversed(self.private_mounts()):
            subprocess.run(["nsenter", f"--mount=/proc/{self.daemon.pid}/ns/mnt", "--",
                            "umount", "-l", point], check=False)


@pytest.fixture
def cri(_no_leaks):
    had_dirs = {d: os.path.exists(d) for d in (RUN_CONTAINERD, RUN_NETNS)}
    workdir = tempfile.mkdtemp(prefix="corral-cri-")  # socket paths stay short
    with open(os.path.join(workdir, "config.toml"), "w") as f:
        f.write(containerd_config(workdir, CORRAL[0]))
    with open(os.path.join(workdir, "crictl.yaml"), "w") as f:
        f.write("debug: false\n")
    archives = write_images(workdir)
    log = open(os.path.join(workdir, "containerd.log"), "w")
    # unshare execs containerd: the Popen pid is containerd's.
    daemon = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "containerd",
                               "--config", os.path.join(workdir, "config.toml")],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    c = Cri(workdir, daemon)
    try:
        deadline = time.monotonic() + 30
        while c("info").returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, \
                open(log.name).read()
            time.sleep(0.1)
        for archive in archives:
            c.ctr("images", "import", f"{workdir}/{archive}")
        yield c
    finally:
        try:
            c.cleanup()
            assert daemon.poll() is not None or not c.private_mounts(), \
                f"mounts left in containerd's namespace: {c.private_mounts()}"
        finally:
            stop_daemon(daemon)  # and the shims
            log.close()
            remove_cgroups(f"/{CGROUP_PARENT}/cri")
            shutil.rmtree(workdir, ignore_errors=True)
            made = [] if had_dirs[RUN_CONTAINERD] else [f"{RUN_CONTAINERD}/s", RUN_CONTAINERD]
            remove_empty_dirs(made + ([] if had_dirs[RUN_NETNS] else [RUN_NETNS]))


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def cgroup_paths(pid: int) -> set[str]:
    """The process's cgroup path in every hierarchy (one path when placed as runc does)."""
    return {line.split(":", 2)[2] for line in read(f"/proc/{pid}/cgroup").splitlines()}


def ns_link(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_cri_pod_lifecycle_exec_logs_stats_update_and_shared_namespaces(cri):
    pod, pod_config, parent = cri.run_pod("p1")
    sandbox = cri.inspect("inspectp", pod)
    assert sandbox["status"]["state"] == "SANDBOX_READY"
    assert sandbox["status"]["runtimeHandler"] == "corral"
    sandbox_pid = sandbox["info"]["pid"]
    assert read(f"/proc/{sandbox_pid}/cmdline") == "/bin/sleep\0inf\0"
    assert os.path.isdir(f"{cri.w}/runc/k8s.io/{pod}")  # corral's state: corral ran it
    # cgroupfs driver: every container of the pod, the sandbox too, at <cgroup_parent>/<id>
    assert cgroup_paths(sandbox_pid) == {f"{parent}/{pod}"}

    script = "echo hello; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"
    c1 = cri.create(pod, pod_config, "c1", ["/bin/sh", "-c", script],
                    {"cpu_shares": 512, "memory_limit_in_bytes": 64 * MIB})
    assert cri.status(c1)["state"] == "CONTAINER_CREATED"
    cri.ok("start", c1)
    cri.wait_state(c1, "CONTAINER_RUNNING")
    cri.wait_log(c1, "hello")
    pid = cri.inspect("inspect", c1)["info"]["pid"]
    assert os.path.isdir(f"{cri.w}/runc/k8s.io/{c1}")

    assert cgroup_paths(pid) == {f"{parent}/{c1}"}
    assert read(f"/sys/fs/cgroup/cpu{parent}/{c1}/cpu.shares") == "512"
    assert read(f"/sys/fs/cgroup/memory{parent}/{c1}/memory.limit_in_bytes") == str(64 * MIB)
    cri.ok("update", "--cpu-share", "256", "--memory", str(96 * MIB), c1)  # `update --resources -`
    assert read(f"/sys/fs/cgroup/cpu{parent}/{c1}/cpu.shares") == "256"
    assert read(f"/sys/fs/cgroup/memory{parent}/{c1}/memory.limit_in_bytes") == str(96 * MIB)

    proc = cri("exec", "--sync", c1, "sh", "-c", "echo out; echo err >&2; id -u")
    # crictl prints the reply's stdout, then its stderr, each with a newline added
    assert (proc.returncode, proc.stdout) == (0, "out\n0\n\nerr\n\n"), proc.stderr
    proc = cri("exec", "--sync", c1, "sh", "-c", "exit 3")
    assert proc.returncode != 0 and "exited with 3" in proc.stderr, proc.stderr
    proc = cri("exec", "--sync", c1, "/no/such/program")
    assert proc.returncode != 0, proc.stdout

    stats = json.loads(cri.ok("stats", "-o", "json", c1))["stats"]
    assert [s["attributes"]["id"] for s in stats] == [c1]
    assert int(stats[0]["memory"]["usageBytes"]["value"]) > 0
    assert int(stats[0]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0

    # A second container in the pod: the sandbox's pid and ipc namespaces, the host's network
    # and UTS ones (host network), its own mount namespace.
    c2 = cri.create(pod, pod_config, "c2", ["/bin/sh", "-c", "trap '' TERM; echo two; sleep 300"])
    cri.ok("start", c2)
    cri.wait_log(c2, "two")
    pid2 = cri.inspect("inspect", c2)["info"]["pid"]
    for kind in ("pid", "ipc"):
        assert ns_link(pid, kind) == ns_link(pid2, kind) == ns_link(sandbox_pid, kind)
        assert ns_link(pid2, kind) != ns_link(os.getpid(), kind)
    for kind in ("net", "uts"):
        assert ns_link(pid2, kind) == ns_link(os.getpid(), kind) == ns_link(sandbox_pid, kind)
    assert len({ns_link(p, "mnt") for p in (sandbox_pid, pid, pid2)}) == 3
    out = cri.ok("exec", "--sync", c2, "sh", "-c",
                 "for p in /proc/[0-9]*; do echo ${p#/proc/} $(tr '\\0' ' ' < $p/cmdline); done")
    seen = {pid: args for pid, _, args in (line.partition(" ") for line in out.splitlines())}
    assert seen["1"] == "/bin/sleep inf", out  # the pause is the pod's pid 1
    assert f"/bin/sh -c {script}" in seen.values(), out  # c1 is seen from c2
    cri.ok("exec", "--sync", c1, "sh", "-c", "echo shared > /dev/shm/mark")
    assert cri.ok("exec", "--sync", c2, "cat", "/dev/shm/mark") == "shared\n\n\n"

    cri.ok("stop", "--timeout", "30", c1)  # SIGTERM: the trap exits 0
    status = cri.status(c1)
    assert (status["state"], status["exitCode"], status["reason"]) == \
        ("CONTAINER_EXITED", 0, "Completed")
    assert cri.wait_log(c1, "bye").split() == ["hello", "bye"]
    cri.ok("stop", "--timeout", "1", c2)  # SIGTERM ignored: SIGKILL after the timeout
    status = cri.status(c2)
    assert (status["state"], status["exitCode"], status["reason"]) == \
        ("CONTAINER_EXITED", 137, "Error")
    assert not os.path.exists(f"/sys/fs/cgroup/memory{parent}/{c1}")
    assert not os.path.exists(f"/proc/{pid}") and not os.path.exists(f"/proc/{pid2}")
    cri.ok("rm", c1, c2)
    assert cri.ok("ps", "--all", "--quiet") == ""
    assert not os.path.exists(f"{cri.w}/runc/k8s.io/{c1}")

    cri.ok("stopp", pod)
    assert cri.inspect("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY"
    assert not os.path.exists(f"/proc/{sandbox_pid}")
    cri.ok("rmp", pod)
    assert cri.ok("pods", "--quiet") == ""
    assert os.listdir(f"{cri.w}/runc/k8s.io") == []
    assert cri.private_mounts() == []
    # the pod's own cgroup (the kubelet's) is left, empty
    for hierarchy in hierarchies():
        assert [d for d in os.listdir(f"/sys/fs/cgroup/{hierarchy}{parent}")
                if os.path.isdir(f"/sys/fs/cgroup/{hierarchy}{parent}/{d}")] == []


def test_cri_memory_limit_oom_kills(cri):
    pod, pod_config, parent = cri.run_pod("p2")
    # dd's 64 MiB buffer, filled from /dev/zero, is over the 16 MiB limit.  It waits for the
    # go: the shim watches the cgroup's OOM events from the end of its Start (so for runc
    # too), and an OOM kill before that is reported as a plain "Error".
    hog = ("echo start; until [ -e /tmp/go ]; do sleep 0.05; done;"
           " exec dd if=/dev/zero of=/dev/null bs=64M count=1")
    cid = cri.create(pod, pod_config, "hog", ["/bin/sh", "-c", hog],
                     {"memory_limit_in_bytes": 16 * MIB})
    cri.ok("start", cid)
    cri.ok("exec", "--sync", cid, "touch", "/tmp/go")
    status = cri.wait_state(cid, "CONTAINER_EXITED")
    assert (status["exitCode"], status["reason"]) == (137, "OOMKilled"), status
    assert cri.ok("logs", cid) == "start\n"
    cri.ok("rm", cid)
    cri.ok("stopp", pod)
    cri.ok("rmp", pod)


def test_cri_kubelet_like_restricted_and_privileged_containers_and_terminals(cri):
    """What a kubelet sends for a restricted pod (non-root, read-only root, no capabilities,
    no_new_privs, RuntimeDefault seccomp, CFS quota, oom_score_adj) and for a privileged one
    (every capability the host has, the host's devices, /sys read-write) with a terminal;
    streaming exec (kubectl exec) plain and with a terminal (kubectl exec -it)."""
    pod, pod_config, parent = cri.run_pod("p3", privileged=True)
    restricted = cri.write_json("ctr-restricted.json", {
        "metadata": {"name": "restricted"}, "image": {"image": IMAGE},
        "command": ["/bin/sh", "-c", "echo up; exec sleep 300"], "log_path": "restricted.log",
        "linux": {
            "resources": {"cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512,
                          "memory_limit_in_bytes": 64 * MIB, "oom_score_adj": 999},
            "security_context": {"run_as_user": {"value": 1000}, "readonly_rootfs": True,
                                 "no_new_privs": True,
                                 "capabilities": {"drop_capabilities": ["ALL"]},
                                 "seccomp": {"profile_type": 0}}},  # 0 = RuntimeDefault
    })
    cid = cri.ok("create", pod, restricted, pod_config).strip()
    cri.ok("start", cid)
    cri.wait_log(cid, "up")
    assert read(f"/sys/fs/cgroup/cpu{parent}/{cid}/cpu.cfs_quota_us") == "50000"
    out = cri.ok("exec", "--sync", cid, "sh", "-c",
                 "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status;"
                 " cat /proc/self/oom_score_adj; touch /x 2>&1; echo $?;"
                 " test -e /dev/kmsg || echo no-kmsg")
    assert out.split() == ["1000", "CapEff:", "0000000000000000", "NoNewPrivs:", "1",
                           "Seccomp:", "2", "999", "touch:", "/x:", "Read-only", "file",
                           "system", "1", "no-kmsg"], out

    privileged = cri.write_json("ctr-priv.json", {
        "metadata": {"name": "priv"}, "image": {"image": IMAGE}, "tty": True,
        "command": ["/bin/sh", "-c", "tty; exec sleep 300"], "log_path": "priv.log",
        "linux": {"security_context": {"privileged": True}},
    })
    pcid = cri.ok("create", pod, privileged, pod_config).strip()
    cri.ok("start", pcid)
    assert cri.wait_log(pcid, "/dev/pts/").strip() == "/dev/pts/0"
    with open("/proc/self/status") as f:
        host_bounding = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    out = cri.ok("exec", "--sync", pcid, "sh", "-c",
                 "grep '^CapEff:' /proc/self/status; grep ' /sys ' /proc/self/mounts;"
                 " test -c /dev/kmsg && echo has-kmsg")
    lines = out.split("\n")
    assert lines[0].split() == ["CapEff:", host_bounding], out
    assert lines[1].split()[3].startswith("rw,"), out
    assert lines[2] == "has-kmsg", out  # the host's devices (kmsg is not a default one)

    proc = cri("exec", cid, "sh", "-c", "echo streamed; exit 4")  # through the stream server
    assert proc.returncode != 0 and proc.stdout == "streamed\n", proc.stderr
    assert "exit code 4" in proc.stderr, proc.stderr
    # crictl -t wants a terminal of its own: script(1) gives it one
    sock = f"unix://{cri.w}/containerd.sock"
    proc = run_capturing(["script", "-qec", f"{CRICTL} --config {cri.w}/crictl.yaml -r {sock}"
                          f" exec -it {pcid} sh -c 'tty; exit 5'", "/dev/null"], timeout=90,
                         stdin=subprocess.DEVNULL)
    assert "/dev/pts/1" in proc.stdout and "exit code 5" in proc.stdout, proc.stdout

    cri.ok("stopp", pod)  # containers still running: the pod's stop kills them
    for c in (cid, pcid):
        assert cri.status(c)["state"] == "CONTAINER_EXITED"
    cri.ok("rmp", pod)
    assert cri.ok("ps", "--all", "--quiet") == ""


@pytest.fixture
def pod_network(cri):
    """A CNI network for pods: macvlan on one end of a veth pair made for the test (no
    bridge, route or sysctl on the host), a static address.  Returns that address."""
    if not os.path.exists(os.path.join(CNI_BIN, "macvlan")):
        pytest.skip("CNI plugins not installed (scripts/setup.sh --test installs them)")
    link = f"crt{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", f"{link}a", "type", "veth", "peer", "name",
                    f"{link}b"], check=True)
    try:
        subprocess.run(["ip", "link", "set", f"{link}a", "up"], check=True)
        address = "192.0.2.10"  # TEST-NET-1: only ever inside the pod's namespace
        conf = {"cniVersion": "0.4.0", "name": "corral-test", "plugins": [
            {"type": "macvlan", "master": f"{link}a", "mode": "bridge",
             "ipam": {"type": "static", "addresses": [{"address": f"{address}/24"}]}}]}
        os.makedirs(f"{cri.w}/cni/conf", exist_ok=True)
        cri.write_json("cni/conf/10-corral-test.conflist", conf)
        deadline = time.monotonic() + 30
        while not next(c["status"] for c in json.loads(cri.ok("info"))["status"]["conditions"]
                       if c["type"] == "NetworkReady"):
            assert time.monotonic() < deadline, "containerd did not load the CNI config"
            time.sleep(0.1)
        yield address
        cri.cleanup()  # the pod's network is torn down before its master link goes
    finally:
        subprocess.run(["ip", "link", "del", f"{link}a"], check=False)


def test_cri_pod_network_hostname_and_pid_namespace_per_container(cri, pod_network):
    """A pod as a kubelet makes most: its own network namespace from CNI (corral joins it
    by path), its own UTS namespace with the pod's hostname, a pid namespace per container."""
    pod, pod_config, parent = cri.run_pod("web", host_network=False)
    sandbox = cri.inspect("inspectp", pod)
    assert sandbox["status"]["network"]["ip"] == pod_network
    sandbox_pid = sandbox["info"]["pid"]
    cid = cri.create(pod, pod_config, "app", ["/bin/sh", "-c", "echo up; exec sleep 300"])
    cri.ok("start", cid)
    cri.wait_log(cid, "up")
    pid = cri.inspect("inspect", cid)["info"]["pid"]
    for kind in ("net", "uts", "ipc"):
        assert ns_link(pid, kind) == ns_link(sandbox_pid, kind) != ns_link(os.getpid(), kind)
    assert len({ns_link(p, "pid") for p in (os.getpid(), sandbox_pid, pid)}) == 3
    out = cri.ok("exec", "--sync", cid, "sh", "-c",
                 "hostname; cat /etc/hostname; ip -o -4 addr show eth0")
    lines = out.split("\n")
    assert lines[:2] == ["web", "web"], out
    assert f"inet {pod_network}/24" in lines[2], out
    # the container's init is pid 1 of its own pid namespace
    assert cri.ok("exec", "--sync", cid, "cat", "/proc/1/cmdline") == "sleep\x00300\x00\n\n"
    cri.ok("stop", "--timeout", "1", cid)
    cri.ok("rm", cid)
    cri.ok("stopp", pod)
    cri.ok("rmp", pod)
    assert cri.private_mounts() == []


def test_cri_volumes_and_termination_log(cri):
    """The kubelet's volumes are bind mounts of host paths (an emptyDir read-write, a
    configMap read-only, the termination-message file)."""
    pod, pod_config, parent = cri.run_pod("p5")
    vol = os.path.join(cri.w, "volumes")
    os.makedirs(f"{vol}/data")
    os.makedirs(f"{vol}/config")
    with open(f"{vol}/config/key", "w") as f:
        f.write("value\n")
    open(f"{vol}/termination-log", "w").close()
    script = ("echo written > /data/out; cat /config/key; touch /config/x 2>/dev/null || echo ro;"
              " echo last words > /dev/termination-log; exit 2")
    config = cri.write_json("ctr-vol.json", {
        "metadata": {"name": "vol"}, "image": {"image": IMAGE},
        "command": ["/bin/sh", "-c", script], "log_path": "vol.log",
        "mounts": [{"container_path": "/data", "host_path": f"{vol}/data"},
                   {"container_path": "/config", "host_path": f"{vol}/config", "readonly": True},
                   {"container_path": "/dev/termination-log",
                    "host_path": f"{vol}/termination-log"}],
    })
    cid = cri.ok("create", pod, config, pod_config).strip()
    cri.ok("start", cid)
    status = cri.wait_state(cid, "CONTAINER_EXITED")
    assert (status["exitCode"], status["reason"]) == (2, "Error"), status
    assert cri.ok("logs", cid) == "value\nro\n"
    assert read(f"{vol}/data/out") == "written"
    assert read(f"{vol}/termination-log") == "last words"
    assert os.listdir(f"{vol}/config") == ["key"]
    cri.ok("rm", cid)
    cri.ok("stopp", pod)
    cri.ok("rmp", pod)
