"""One bundle per section of the runtime-spec's config-linux.md (and the process attributes of
config.md that are Linux-specific), each run through the real `corral run` and checked from
inside the container.  Sections this host cannot support are checked to be refused with an
error naming the field and what the host lacks (docs/spec-support.md lists them)."""

from __future__ import annotations

import os

import pytest

from corral.errors import ConfigError
from corral.oci import host
from corral.oci.config import parse_config
from corral.oci.spec import default_spec

USERNS_MAPS = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
               "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}


def run(corral, make_bundle, script: str, change=None, check: bool = True):
    """`corral run` of `sh -c script` in a fresh bundle changed by `change(config)`."""
    b = make_bundle()
    b.config["process"]["args"] = ["sh", "-c", script]
    if change is not None:
        change(b.config)
    b.write()
    return corral("run", "-b", b.path, b.id, check=check)


def refused(corral, make_bundle, change) -> str:
    """stderr of a `create` that must fail before anything is made."""
    b = make_bundle()
    change(b.config)
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1, proc.stdout
    assert not os.path.exists(os.path.join(corral.root, b.id))
    return proc.stderr


def add_ns(config: dict, **ns) -> None:
    config["linux"]["namespaces"].append(ns)


def userns(config: dict) -> None:
    add_ns(config, type="user")
    config["linux"].update(USERNS_MAPS)


# ---- namespaces -------------------------------------------------------------------------------


def test_namespaces_are_new(corral, make_bundle):
    out = run(corral, make_bundle, "echo $$; readlink /proc/self/ns/net; readlink /proc/self/ns/uts")
    pid, net, uts = out.stdout.split()
    assert pid == "1"
    assert net != os.readlink("/proc/self/ns/net") and uts != os.readlink("/proc/self/ns/uts")


def test_namespace_joined_by_path(corral, make_bundle):
    def change(c):
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"]
                                    if ns["type"] != "network"]
        add_ns(c, type="network", path=f"/proc/{os.getpid()}/ns/net")

    out = run(corral, make_bundle, "readlink /proc/self/ns/net", change)
    assert out.stdout.strip() == os.readlink("/proc/self/ns/net")


def test_namespace_path_of_the_wrong_type_is_refused(corral, make_bundle):
    def change(c):
        nss = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "ipc"]
        c["linux"]["namespaces"] = nss + [{"type": "ipc", "path": "/proc/self/ns/uts"}]

    err = refused(corral, make_bundle, change)
    index = len(default_spec()["linux"]["namespaces"]) - 1
    assert f"linux.namespaces[{index}].path: /proc/self/ns/uts is not a ipc namespace" in err


def test_namespace_path_that_is_no_namespace_is_refused(corral, make_bundle, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")

    def change(c):
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"]
                                    if ns["type"] != "uts"] + [{"type": "uts", "path": str(plain)}]

    assert f"{plain} is not a uts namespace" in refused(corral, make_bundle, change)


# ---- user namespace mappings ------------------------------------------------------------------


def test_user_namespace_mappings(corral, make_bundle, mapped_root_can_reach):
    out = run(corral, make_bundle, "cat /proc/self/uid_map /proc/self/gid_map; id -u", userns)
    lines = [line.split() for line in out.stdout.strip().splitlines()]
    assert lines == [["0", "100000", "65536"], ["0", "100000", "65536"], ["0"]]


@pytest.mark.parametrize("key", ["uidMappings", "gidMappings"])
def test_overlapping_mappings_are_refused(key):
    config = default_spec()
    config["process"]["terminal"] = False
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"].update(USERNS_MAPS)
    config["linux"][key] = [{"containerID": 0, "hostID": 1000, "size": 10},
                            {"containerID": 20, "hostID": 1005, "size": 2}]
    with pytest.raises(ConfigError) as exc:
        parse_config(config)
    assert str(exc.value) == (f"linux.{key}[1]: host ids 1005-1006 overlap "
                              f"linux.{key}[0] (1000-1009)")


# ---- offset for time namespaces ---------------------------------------------------------------

DAY = 86400


def test_time_namespace_offsets(corral, make_bundle):
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])

    def change(c):
        add_ns(c, type="time")
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 10 * DAY, "nanosecs": 0},
                                     "monotonic": {"secs": DAY}}

    out = run(corral, make_bundle, "cat /proc/uptime; cat /proc/self/timens_offsets", change)
    lines = out.stdout.strip().splitlines()
    uptime = float(lines[0].split()[0])
    assert host_uptime + 10 * DAY <= uptime < host_uptime + 10 * DAY + 60
    offsets = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert offsets == {"monotonic": [str(DAY), "0"], "boottime": [str(10 * DAY), "0"]}


def test_time_namespace_in_a_user_namespace(corral, make_bundle, mapped_root_can_reach):
    def change(c):
        userns(c)
        add_ns(c, type="time")
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 5 * DAY}}

    out = run(corral, make_bundle, "cat /proc/uptime", change)
    assert float(out.stdout.split()[0]) >= 5 * DAY


def test_time_namespace_joined_by_path(corral, make_bundle):
    out = run(corral, make_bundle, "readlink /proc/self/ns/time",
              lambda c: add_ns(c, type="time", path=f"/proc/{os.getpid()}/ns/time"))
    assert out.stdout.strip() == os.readlink("/proc/self/ns/time")


def test_time_offsets_need_a_new_time_namespace():
    config = default_spec()
    config["process"]["terminal"] = False
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 1}}
    with pytest.raises(ConfigError, match=r"^linux\.timeOffsets: time offsets need a new"):
        parse_config(config)
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"realtime": {"secs": 1}}
    with pytest.raises(ConfigError, match=r"^linux\.timeOffsets\.realtime: unknown clock"):
        parse_config(config)


# ---- devices ----------------------------------------------------------------------------------


def test_devices(corral, make_bundle):
    def change(c):
        c["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                  "fileMode": 0o620, "uid": 0, "gid": 0}]

    out = run(corral, make_bundle, "stat -c '%t:%T %a %F' /dev/mynull; echo hi > /dev/mynull",
              change)
    assert out.stdout.strip() == "1:3 620 character special file"


# ---- control groups ---------------------------------------------------------------------------


def test_control_groups(corral, make_bundle):
    """The limit is seen from inside, in the container's own view of /sys/fs/cgroup."""
    script = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"
    out = run(corral, make_bundle, script,
              lambda c: c["linux"].update(resources={"pids": {"limit": 42}}))
    assert out.stdout.strip() == "42"


def test_pids_limit_is_enforced_inside(corral, make_bundle):
    script = "for i in 1 2 3 4 5 6; do sleep 3 & done; wait"
    out = run(corral, make_bundle, script + " 2>&1; echo done",
              lambda c: c["linux"].update(resources={"pids": {"limit": 4}}), check=False)
    assert "can't fork" in out.stdout + out.stderr


# ---- intelRdt ---------------------------------------------------------------------------------


@pytest.mark.skipif(host.resctrl_mounted(), reason="the host has resctrl")
def test_intel_rdt_is_refused_naming_what_the_host_lacks(corral, make_bundle):
    err = refused(corral, make_bundle,
                  lambda c: c["linux"].update(intelRdt={"closID": "corral-test"}))
    assert "linux.intelRdt: Intel RDT needs the resctrl filesystem" in err


# ---- sysctl -----------------------------------------------------------------------------------


def test_sysctl(corral, make_bundle):
    out = run(corral, make_bundle, "cat /proc/sys/kernel/msgmax",
              lambda c: c["linux"].update(sysctl={"kernel.msgmax": "12345"}))
    assert out.stdout.strip() == "12345"


# ---- seccomp ----------------------------------------------------------------------------------


def test_seccomp(corral, make_bundle):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": 1}]}
    out = run(corral, make_bundle, "mkdir /tmp/x 2>&1; echo rc=$?",
              lambda c: c["linux"].update(seccomp=profile))
    assert "Operation not permitted" in out.stdout and "rc=1" in out.stdout


# ---- rootfs mount propagation -----------------------------------------------------------------


def test_rootfs_propagation(corral, make_bundle):
    out = run(corral, make_bundle, "cat /proc/self/mountinfo",
              lambda c: c["linux"].update(rootfsPropagation="rshared"))
    root = next(line for line in out.stdout.splitlines() if line.split()[4] == "/")
    assert "shared:" in root.split(" - ")[0]


# ---- masked paths / readonly paths ------------------------------------------------------------


def test_masked_paths(corral, make_bundle):
    def change(c):
        c["linux"]["maskedPaths"] = ["/proc/version", "/proc/sys/fs", "/etc/passwd"]

    script = "wc -c < /proc/version; ls /proc/sys/fs | wc -l; wc -c < /etc/passwd"
    out = run(corral, make_bundle, script, change)
    assert out.stdout.split() == ["0", "0", "0"], out.stderr


def test_readonly_paths(corral, make_bundle):
    def change(c):
        c["linux"]["readonlyPaths"] = ["/proc/sys", "/etc"]

    out = run(corral, make_bundle,
              "echo 1 > /proc/sys/kernel/shmmax 2>&1; echo a=$?; touch /etc/x 2>&1; echo b=$?",
              change)
    assert "a=1" in out.stdout and "b=1" in out.stdout and "Read-only" in out.stdout


# ---- mount label, LSM profiles ----------------------------------------------------------------


@pytest.mark.skipif(host.selinux_enabled(), reason="the host has SELinux")
def test_mount_label_is_ignored_without_selinux(corral, make_bundle):
    """As crun (and runc) do: engines set it whatever the host; no context= is given."""
    out = run(corral, make_bundle, "grep ' /dev ' /proc/self/mountinfo",
              lambda c: c["linux"].update(mountLabel="system_u:object_r:container_file_t:s0:c1,c2"))
    assert " /dev " in out.stdout and "context=" not in out.stdout, out.stderr


@pytest.mark.skipif(host.selinux_enabled(), reason="the host has SELinux")
def test_selinux_label_is_refused_without_selinux(corral, make_bundle):
    err = refused(corral, make_bundle, lambda c: c["process"].update(
        selinuxLabel="system_u:system_r:container_t:s0"))
    assert "process.selinuxLabel: SELinux is not enabled on this host" in err


@pytest.mark.skipif(host.apparmor_enabled(), reason="the host has AppArmor")
def test_apparmor_profile_is_refused_without_apparmor(corral, make_bundle):
    err = refused(corral, make_bundle,
                  lambda c: c["process"].update(apparmorProfile="corral-default"))
    assert "process.apparmorProfile: AppArmor is not enabled on this host" in err


# ---- personality ------------------------------------------------------------------------------


def test_personality(corral, make_bundle):
    def change(c):
        c["linux"]["personality"] = {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}

    out = run(corral, make_bundle, "uname -m; cat /proc/self/personality", change)
    machine, persona = out.stdout.split()
    assert machine in ("i686", "i386") and int(persona, 16) == 0x0040008


def test_personality_linux_domain(corral, make_bundle):
    out = run(corral, make_bundle, "uname -m",
              lambda c: c["linux"].update(personality={"domain": "LINUX"}))
    assert out.stdout.strip() == os.uname().machine


def test_unknown_personality_is_refused():
    config = default_spec()
    config["process"]["terminal"] = False
    config["linux"]["personality"] = {"domain": "SVR4"}
    with pytest.raises(ConfigError, match=r"^linux\.personality\.domain: unknown execution"):
        parse_config(config)


# ---- process: scheduler, ioPriority, execCPUAffinity ------------------------------------------


def test_scheduler(corral, make_bundle):
    def change(c):
        c["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}

    out = run(corral, make_bundle, "cat /proc/self/stat", change)
    fields = out.stdout[out.stdout.rindex(")") + 2:].split()
    assert (fields[16], fields[38]) == ("7", "3")  # nice, policy (SCHED_BATCH)


def test_scheduler_realtime(corral, make_bundle):
    def change(c):
        c["process"]["scheduler"] = {"policy": "SCHED_RR", "priority": 5}

    out = run(corral, make_bundle, "cat /proc/self/stat", change, check=False)
    if out.returncode != 0:  # no realtime bandwidth for this cgroup (cpu.rt_runtime_us 0)
        assert "process.scheduler: sched_setattr SCHED_RR" in out.stderr
        return
    fields = out.stdout[out.stdout.rindex(")") + 2:].split()
    assert (fields[15], fields[38]) == ("-6", "2")  # prio (-1 - rt_priority), policy


@pytest.mark.parametrize(("sched", "field"), [
    ({"policy": "SCHED_OTHER", "priority": 3}, "process.scheduler.priority"),
    ({"policy": "SCHED_FIFO"}, "process.scheduler.priority"),
    ({"policy": "SCHED_NOPE"}, "process.scheduler.policy"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice"),
    ({"policy": "SCHED_OTHER", "runtime": 100}, "process.scheduler.runtime"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}, "process.scheduler.flags[0]"),
    ({"nice": 1}, "process.scheduler.policy"),
])
def test_bad_scheduler_is_refused(sched, field):
    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["scheduler"] = sched
    with pytest.raises(ConfigError) as exc:
        parse_config(config)
    assert exc.value.field == field


def test_io_priority(corral, make_bundle):
    out = run(corral, make_bundle, "ionice -p $$",
              lambda c: c["process"].update(ioPriority={"class": "IOPRIO_CLASS_BE",
                                                        "priority": 6}))
    assert out.stdout.strip() in ("best-effort: prio 6", "best-effort: 6")


def test_io_priority_idle(corral, make_bundle):
    out = run(corral, make_bundle, "ionice -p $$",
              lambda c: c["process"].update(ioPriority={"class": "IOPRIO_CLASS_IDLE"}))
    assert out.stdout.strip().startswith("idle")


def test_bad_io_priority_is_refused():
    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 8}
    with pytest.raises(ConfigError, match=r"^process\.ioPriority\.priority: must be between"):
        parse_config(config)


def test_exec_cpu_affinity(corral, make_bundle):
    cpus = sorted(os.sched_getaffinity(0))
    final = cpus[-1]

    def change(c):
        c["process"]["execCPUAffinity"] = {"initial": ",".join(map(str, cpus)),
                                           "final": str(final)}

    out = run(corral, make_bundle, "grep Cpus_allowed_list /proc/self/status", change)
    assert out.stdout.split() == ["Cpus_allowed_list:", str(final)]


def test_exec_cpu_affinity_outside_the_host_cpus_fails_naming_the_field(corral, make_bundle):
    def change(c):
        c["process"]["execCPUAffinity"] = {"final": "4000"}

    out = run(corral, make_bundle, "true", change, check=False)
    assert out.returncode == 1
    assert "process.execCPUAffinity.final: sched_setaffinity(4000)" in out.stderr


# ---- idmapped mounts --------------------------------------------------------------------------


def test_idmapped_mount(corral, make_bundle, mapped_root_can_reach, tmp_path):
    """A file owned by host uid 0 in the bind source is seen as uid 5 inside a user-namespaced
    container (without the idmap it would be nobody): on-disk 0 -> host 100005 -> 5."""
    source = tmp_path / "shared"
    source.mkdir()
    (source / "file").write_text("x")
    os.chown(source / "file", 0, 0)
    source.chmod(0o755)

    def change(c):
        userns(c)
        # /home exists in the rootfs: the mapped root may not create directories in it
        c["mounts"].append({"destination": "/home", "type": "bind", "source": str(source),
                            "options": ["rbind"],
                            "uidMappings": [{"containerID": 0, "hostID": 100005, "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": 100007, "size": 1}]})

    out = run(corral, make_bundle, "stat -c '%u:%g' /home/file; grep ' /home ' /proc/self/mountinfo",
              change)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "5:7"
    assert "idmapped" in lines[1]
    st = os.stat(source / "file")
    assert (st.st_uid, st.st_gid) == (0, 0)  # the host's view is untouched


def test_idmapped_mount_of_a_missing_source_names_the_mount(corral, make_bundle, mapped_root_can_reach, tmp_path):
    def change(c):
        userns(c)
        c["mounts"].append({"destination": "/data", "type": "bind",
                            "source": str(tmp_path / "missing"), "options": ["rbind"],
                            "uidMappings": [{"containerID": 0, "hostID": 100005, "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": 100007, "size": 1}]})

    out = run(corral, make_bundle, "true", change, check=False)
    assert out.returncode == 1
    index = len(default_spec()["mounts"])
    assert f"mounts[{index}]: idmapped mount of {tmp_path / 'missing'}: open_tree" in out.stderr


def test_idmapped_mount_needs_both_maps():
    config = default_spec()
    config["process"]["terminal"] = False
    config["mounts"].append({"destination": "/d", "type": "bind", "source": "/tmp",
                             "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]})
    with pytest.raises(ConfigError, match=r"gidMappings: an idmapped mount needs both"):
        parse_config(config)


# ---- memory policy, network devices (more in test_memory_policy.py, test_net_devices.py) -----


@pytest.mark.skipif(not os.path.exists("/proc/self/numa_maps"), reason="no CONFIG_NUMA")
def test_memory_policy(corral, make_bundle):
    def change(c):
        c["linux"]["memoryPolicy"] = {"mode": "MPOL_INTERLEAVE", "nodes": "0"}

    out = run(corral, make_bundle, "head -n1 /proc/self/numa_maps", change)
    assert out.stdout.split()[1] == "interleave:0"


def test_net_devices_without_a_network_namespace_are_refused(corral, make_bundle):
    def change(c):
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"]
                                    if ns["type"] != "network"]
        c["linux"]["netDevices"] = {"eth0": {}}

    assert ("linux.netDevices: moving network devices needs the container's own network "
            "namespace") in refused(corral, make_bundle, change)


# ---- rootless ---------------------------------------------------------------------------------


def test_rootless_without_userns_is_refused_with_a_clear_error(make_bundle, tmp_path,
                                                              mapped_root_can_reach):
    """corral as an unprivileged user (uid 1000) on a config without a user namespace:
    refused before anything is made (tests/test_rootless.py runs the rootless spec)."""
    import subprocess

    from tests.conftest import CORRAL

    b = make_bundle()
    root = tmp_path / "userstate"
    root.mkdir()
    os.chown(root, 1000, 1000)
    proc = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                           *CORRAL, "--root", str(root), "create", "-b", b.path, b.id],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert ("linux.namespaces: rootless (corral run as uid 1000): the container needs a user "
            "namespace") in proc.stderr
    assert os.listdir(root) == []
