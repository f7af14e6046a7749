"""Issue 14, the child's side: where corral, as a drop-in for runc 1.1.5, decides in the plan
and the executor (seccomp, mounts, namespaces), each checked against the real kernel.  (The
hooks' state and working directories: tests/test_hooks.py; rootfsPropagation:
tests/test_rootfs.py; linux.mountLabel: tests/test_config_linux_suite.py.)"""

from __future__ import annotations

import os
import platform
import shlex
import struct
import subprocess
import sysconfig

import pytest

from corral.plan import enosys
from corral.plan.enosys import X32_BIT
from tests.conftest import CORRAL, run_capturing

x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 syscall numbers")

# ---- seccomp: the -ENOSYS stub ----------------------------------------------------------------

# A static program that makes each syscall named by number and prints the errno it got.
NR_SOURCE = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long rc = syscall(strtol(argv[i], NULL, 0), -1L, 0L, 0L, 0L);
        printf("%s=%d\n", argv[i], rc < 0 ? errno : 0);
    }
    return 0;
}
"""

# What the program needs, all numbered at most 334 (rseq) on x86_64; getppid (110) is left
# out to show the default action.
ALLOWED = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
           "prlimit64", "readlink", "readlinkat", "getrandom", "mprotect", "mmap", "munmap",
           "uname", "newfstatat", "fstat", "ioctl", "write", "exit", "exit_group"]
EPERM, ENOSYS, EACCES = 1, 38, 13
GETPPID, CLOSE_RANGE, OPENAT2, FACCESSAT2, EPOLL_PWAIT2 = 110, 436, 437, 439, 441


@pytest.fixture(scope="module")
def nr_program(tmp_path_factory) -> str:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    out = tmp_path_factory.mktemp("nr") / "nr"
    src = out.with_suffix(".c")
    src.write_text(NR_SOURCE)
    subprocess.run([*cc, "-static", "-O2", "-o", str(out), str(src)], check=True)
    return str(out)


def syscalls_under(corral, make_bundle, nr_program, seccomp, numbers) -> dict[int, int]:
    """{syscall number: errno} as the program saw them under ``seccomp``."""
    b = make_bundle()
    with open(nr_program, "rb") as src, open(b.rootfs + "/bin/nr", "wb") as dst:
        dst.write(src.read())
    os.chmod(b.rootfs + "/bin/nr", 0o755)
    b.config["process"]["args"] = ["/bin/nr", *map(str, numbers)]
    b.config["process"]["noNewPrivileges"] = True
    b.config["linux"]["seccomp"] = seccomp
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False)
    assert proc.returncode == 0, proc.stderr
    return {int(k): int(v) for k, v in (line.split("=") for line in proc.stdout.split())}


@x86_64
def test_syscalls_newer_than_the_profile_get_enosys(corral, make_bundle, nr_program):
    """runc's patchbpf: above the highest syscall the profile names, ENOSYS (a C library
    then falls back to an older syscall); below it, the default action."""
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}]}
    got = syscalls_under(corral, make_bundle, nr_program, profile,
                         [GETPPID, CLOSE_RANGE, FACCESSAT2, 500])
    assert got == {GETPPID: EPERM, CLOSE_RANGE: ENOSYS, FACCESSAT2: ENOSYS, 500: ENOSYS}


@x86_64
def test_the_stub_counts_every_name_and_the_listed_architectures(corral, make_bundle,
                                                                  nr_program):
    """A name counts whatever its rule's action (faccessat2 here: openat2, below it, gets
    the default); with Docker's three x86 architectures too; without architectures, no stub
    (runc 1.1.5's)."""
    rules = [{"names": ALLOWED, "action": "SCMP_ACT_ALLOW"},
             {"names": ["faccessat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": EACCES}]
    arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": arches, "syscalls": rules}
    got = syscalls_under(corral, make_bundle, nr_program, profile,
                         [OPENAT2, FACCESSAT2, EPOLL_PWAIT2])
    assert got == {OPENAT2: EPERM, FACCESSAT2: EACCES, EPOLL_PWAIT2: ENOSYS}
    del profile["architectures"]
    got = syscalls_under(corral, make_bundle, nr_program, profile, [EPOLL_PWAIT2])
    assert got == {EPOLL_PWAIT2: EPERM}


@x86_64
def test_a_killing_default_spares_newer_syscalls(corral, make_bundle, nr_program):
    profile = {"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}]}
    got = syscalls_under(corral, make_bundle, nr_program, profile, [FACCESSAT2, 500])
    assert got == {FACCESSAT2: ENOSYS, 500: ENOSYS}


def run_stub(program: bytes, arch: int, nr: int) -> str:
    """What the stub does with a syscall: "enosys", or "filter" (it falls through to the
    filter behind it).  A cBPF interpreter for the few instructions the stub uses."""
    insns = list(struct.iter_unpack("=HBBI", program))
    pc, acc = 0, 0
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = {0: nr, 4: arch}[k]
        elif code == 0x05:  # ja
            pc += k
        elif code in (0x15, 0x25, 0x45):  # jeq, jgt, jset
            taken = {0x15: acc == k, 0x25: acc > k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:
            assert k == enosys.RET_ENOSYS
            return "enosys"
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
    assert pc == len(insns)
    return "filter"


X86_64, X32, I386, S390X, AARCH64 = 0xC000003E, 0x4000003E, 0x40000003, 0x80000016, 0xC00000B7


@pytest.mark.parametrize(("tokens", "cases"), [
    ([X86_64], [(X86_64, 10, "filter"), (X86_64, 11, "enosys"), (X86_64, X32_BIT | 99, "filter"),
                (I386, 99, "filter")]),
    ([X32], [(X86_64, X32_BIT | 20, "filter"), (X86_64, X32_BIT | 21, "enosys"),
             (X86_64, 99, "filter")]),
    ([X86_64, X32, I386], [(X86_64, 10, "filter"), (X86_64, 11, "enosys"),
                           (X86_64, X32_BIT | 20, "filter"), (X86_64, X32_BIT | 21, "enosys"),
                           (I386, 30, "filter"), (I386, 31, "enosys")]),
    ([S390X, AARCH64], [(S390X, 0, "enosys"), (S390X, 5, "filter"), (S390X, 41, "enosys"),
                        (AARCH64, 50, "filter"), (AARCH64, 51, "enosys")]),
])
def test_stub_jumps(tokens, cases):
    """Every architecture's section of the stub, x32 and s390x included (not runnable here)."""
    bounds = {X86_64: 10, X32: X32_BIT | 20, I386: 30, S390X: 40, AARCH64: 50}
    last = enosys.last_syscalls(tokens, ["x"], lambda token, name: bounds[token])
    program = enosys.stub(last)
    for arch, nr, outcome in cases:
        assert run_stub(program, arch, nr) == outcome, (hex(arch), hex(nr))


def test_stub_skips_names_an_architecture_lacks_and_permissive_defaults():
    numbers = {"read": 0, "rseq": 334, "arm_only": -10083}
    last = enosys.last_syscalls([X86_64], list(numbers), lambda token, name: numbers[name])
    assert last == {X86_64: {X86_64: 334}}
    assert enosys.stub(enosys.last_syscalls([X86_64], ["arm_only"],
                                            lambda token, name: -10083)) == b""
    wanted = [action for action in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE",
                                    "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_TRAP")
              if enosys.wanted(Profile(action, None))]
    assert wanted == ["SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"]
    assert not enosys.wanted(Profile("SCMP_ACT_ERRNO", ENOSYS))  # the default does it already


class Profile:
    def __init__(self, default_action: str, default_errno_ret: int | None) -> None:
        self.default_action, self.default_errno_ret = default_action, default_errno_ret


# ---- seccomp: startContainer hooks, NOTIFY on write ---------------------------------------------


def test_start_container_hooks_run_under_the_filter(corral, make_bundle):
    """runc's order: the filter is loaded, then the startContainer hooks run; one it kills
    fails the start with "bad system call", and the process never runs."""
    b = make_bundle()
    b.config["process"]["args"] = ["sh", "-c", "echo ran"]
    b.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]}
    b.config["hooks"] = {"startContainer": [{"path": "/bin/mkdir", "args": ["mkdir", "/x"]}]}
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False)
    assert proc.returncode != 0 and "ran" not in proc.stdout
    assert "error running startContainer hook #0 /bin/mkdir: bad system call" in proc.stderr
    assert not os.path.exists(b.rootfs + "/x")


def test_notify_on_write_is_refused(corral, make_bundle, tmp_path):
    b = make_bundle()
    b.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp_path / "agent.sock"),
        "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert ("corral: linux.seccomp.syscalls[0].names: SCMP_ACT_NOTIFY cannot apply to write"
            in proc.stderr), proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))


# ---- mounts -------------------------------------------------------------------------------------


def test_proc_may_be_a_bind_of_a_procfs(corral, make_bundle, tmp_path):
    """runc's checkProcMount: a bind onto /proc is accepted when its source is a procfs,
    refused otherwise."""
    b = make_bundle()
    mounts = b.config["mounts"]
    assert mounts[0]["destination"] == "/proc"
    mounts[0] = {"destination": "/proc", "type": "bind", "source": "/proc",
                 "options": ["rbind", "nosuid", "noexec", "nodev"]}
    b.config["process"]["args"] = ["sh", "-c", "grep ' /proc ' /proc/self/mountinfo"]
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" - ")[1].startswith("proc ")
    mounts[0]["source"] = str(tmp_path)
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert (f"corral: mounts[0]: /proc can only be a proc mount (or a bind of one): "
            f"{tmp_path} is not a procfs") in proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_a_bind_source_only_root_reaches_in_run_and_exec(corral, make_bundle,
                                                        mapped_root_can_reach):
    """Bind sources are opened before the user namespace is entered: below a 0700 directory
    of the host's root, for a container whose root is a mapped uid; read in the container's
    process and in an exec'd one."""
    b = make_bundle()
    private = b.path + "/private"
    os.makedirs(private + "/inner")
    os.chmod(private, 0o700)
    with open(private + "/inner/f", "w") as f:
        f.write("reached")
    linux = b.config["linux"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    os.makedirs(b.rootfs + "/mnt", exist_ok=True)  # its root may not make it
    b.config["mounts"].append({"destination": "/mnt", "type": "bind",
                               "source": private + "/inner", "options": ["rbind", "ro"]})
    b.config["process"]["args"] = ["sh", "-c", "cat /mnt/f; echo; exec sleep 60"]
    b.write()
    corral("create", "-b", b.path, b.id)
    try:
        pid = corral.state(b.id)["pid"]
        corral("start", b.id)
        exec_ = corral("exec", b.id, "cat", "/mnt/f", check=False)
        assert (exec_.returncode, exec_.stdout) == (0, "reached"), exec_.stderr
    finally:
        corral("kill", b.id, "KILL", check=False)
        os.waitpid(pid, 0)
        corral("delete", "--force", b.id)


# ---- namespaces ----------------------------------------------------------------------------------

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
SHOW_NAMESPACES = "; ".join(f"readlink /proc/self/ns/{ns}" for ns in NAMESPACES)


def without_namespaces(cfg: dict) -> dict:
    """No linux.namespaces, and none of what needs one (a hostname, masked and read-only
    paths)."""
    cfg["linux"]["namespaces"] = []
    cfg.pop("hostname", None)
    cfg["linux"]["maskedPaths"] = []
    cfg["linux"]["readonlyPaths"] = []
    return cfg


def test_no_namespaces_runs_in_the_runtimes_own(corral, make_bundle):
    """The OCI validation suite's "inherit without type": no linux.namespaces at all (and no
    hostname), the container's process in every namespace of the runtime's, as runc runs it
    (its mounts made under the rootfs in the runtime's mount namespace, here a private one
    of the test's, and detached when it is deleted: `run` deletes it)."""
    b = make_bundle()
    cfg = without_namespaces(b.config)
    cfg["process"]["args"] = ["sh", "-c", SHOW_NAMESPACES + "; ls /bin/busybox; "
                                          "test -c /dev/null && echo null"]
    b.write()
    run = shlex.join([*CORRAL, "--root", corral.root, "run", "-b", b.path, b.id])
    below = shlex.quote(f" {os.path.realpath(b.rootfs)}/")
    proc = run_capturing(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"{SHOW_NAMESPACES}; echo; {run} && echo && "
                          f"grep -c {below} /proc/self/mountinfo"])
    runtime, container, left = proc.stdout.split("\n\n")
    assert len(runtime.split()) == len(NAMESPACES)
    assert container.split() == [*runtime.split(), "/bin/busybox", "null"]  # in its rootfs
    assert left.strip() == "0", proc.stderr  # (grep's status is 1)


def test_a_failed_create_without_a_mount_namespace_leaves_no_mount(corral, make_bundle):
    """Its mounts are made when a createContainer hook fails: the undo detaches them."""
    b = make_bundle()
    cfg = without_namespaces(b.config)
    # in the rootfs (its cwd): how many mounts it sees below it
    cfg["hooks"] = {"createContainer": [{"path": "/bin/sh", "args": [
        "sh", "-c", 'echo "made $(grep -c " $(pwd -P)/" /proc/self/mountinfo)"; exit 3']}]}
    b.write()
    create = shlex.join([*CORRAL, "--root", corral.root, "create", "-b", b.path, b.id])
    below = shlex.quote(f" {os.path.realpath(b.rootfs)}/")
    proc = run_capturing(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"{create}; echo; grep -c {below} /proc/self/mountinfo"])
    assert "error running createContainer hook #0 /bin/sh: exit status 3" in proc.stderr
    made = int(proc.stderr.split("output: made ")[1].split()[0])
    assert made >= 5, proc.stderr  # /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, ...
    assert proc.stdout.split() == ["0"], proc.stdout
    assert not os.path.exists(os.path.join(corral.root, b.id))


def test_exec_without_a_mount_namespace_is_in_the_containers_root(corral, make_bundle):
    """An exec'd process of such a container is chrooted where its init is."""
    b = make_bundle()
    cfg = without_namespaces(b.config)
    cfg["process"]["args"] = ["sleep", "60"]
    with open(b.rootfs + "/marker", "w") as f:
        f.write("inside")
    b.write()
    corral_ = shlex.join([*CORRAL, "--root", corral.root])
    script = (f"{corral_} create -b {shlex.quote(b.path)} {b.id} && {corral_} start {b.id} && "
              f"{corral_} exec {b.id} cat /marker; {corral_} delete --force {b.id}")
    proc = run_capturing(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert proc.stdout == "inside", proc.stderr


def test_no_mount_namespace_refuses_what_would_change_the_runtimes_mounts(corral, make_bundle):
    b = make_bundle()
    b.config["linux"]["namespaces"] = [ns for ns in b.config["linux"]["namespaces"]
                                       if ns["type"] != "mount"]
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1
    assert ("corral: linux.maskedPaths: needs a mount namespace of the container's own "
            "(linux.namespaces has no \"mount\")") in proc.stderr, proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))
