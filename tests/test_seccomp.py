"""linux.seccomp compiled with libseccomp and loaded by the init as its last step before exec."""

import os

import pytest

DENY_MKDIR = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}


def run(corral, b, args, seccomp, **process):
    b.config["process"]["args"] = args
    b.config["process"].update(process)
    b.config["linux"]["seccomp"] = seccomp
    b.write()
    return corral("run", "-b", b.path, b.id, check=False)


def test_errno_rule_denies_mkdir_only(corral, make_bundle):
    proc = run(corral, make_bundle(),
               ["sh", "-c", "mkdir /tmp/x; echo rc=$?; touch /tmp/y && ls /tmp"],
               {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                # arm_fadvise64_64 exists on arm only: libseccomp knows it, and skips it here.
                "syscalls": [DENY_MKDIR,
                             {"names": ["arm_fadvise64_64"], "action": "SCMP_ACT_ERRNO"}]})
    assert "Operation not permitted" in proc.stderr
    assert "rc=1" in proc.stdout and "y" in proc.stdout.split()
    assert proc.returncode == 0


def test_errno_ret(corral, make_bundle):
    proc = run(corral, make_bundle(), ["mkdir", "/tmp/x"],
               {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [dict(DENY_MKDIR, errnoRet=13)]})
    assert proc.returncode == 1 and "Permission denied" in proc.stderr


def test_args_rule(corral, make_bundle):
    """chmod to a mode whose low bits are 0700 is denied, any other mode is allowed."""
    masked = {"value": 0o777, "valueTwo": 0o700, "op": "SCMP_CMP_MASKED_EQ"}
    proc = run(corral, make_bundle(),
               ["sh", "-c", "touch /tmp/f; chmod 755 /tmp/f && echo first; "
                            "chmod 700 /tmp/f || echo second-denied"],
               {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                   {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                    "args": [dict(masked, index=1)]},
                   {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
                    "args": [dict(masked, index=2)]}]})
    assert proc.stdout.split() == ["first", "second-denied"], proc.stderr


ALLOW_TRUE = ["execve", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "brk",
              "mmap", "munmap", "mprotect", "getuid", "geteuid", "getgid", "getegid", "getpid",
              "getppid", "gettid", "exit", "exit_group", "rt_sigaction", "rt_sigprocmask",
              "prlimit64", "uname", "readlink", "write", "writev", "capset"]


def test_default_errno_with_an_allow_list(corral, make_bundle):
    profile = {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": ALLOW_TRUE, "action": "SCMP_ACT_ALLOW"}]}
    assert run(corral, make_bundle(), ["true"], profile).returncode == 0
    assert run(corral, make_bundle(), ["mkdir", "/tmp/x"], profile).returncode != 0


def test_without_no_new_privileges_for_an_unprivileged_user(corral, make_bundle):
    """Loading a filter then needs CAP_SYS_ADMIN: kept just for the load, then dropped."""
    proc = run(corral, make_bundle(),
               ["sh", "-c", "grep CapEff /proc/self/status; mkdir /tmp/x"],
               {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [DENY_MKDIR]},
               noNewPrivileges=False, user={"uid": 1000, "gid": 1000})
    assert "Operation not permitted" in proc.stderr
    assert proc.stdout.split() == ["CapEff:", "0000000000000000"]


@pytest.mark.parametrize(("seccomp", "field"), [
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["NOPE"]}, "linux.seccomp.flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
     "linux.seccomp.architectures[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]},
     "linux.seccomp.syscalls[0].args[0].op"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdri"], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names[1]"),
])
def test_bad_profile_names_the_field(corral, make_bundle, seccomp, field):
    b = make_bundle()
    b.config["linux"]["seccomp"] = seccomp
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    assert proc.returncode == 1 and f"corral: {field}: " in proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))
