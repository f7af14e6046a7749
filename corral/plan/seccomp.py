"""``linux.seccomp`` compiled to a BPF program with libseccomp.

libseccomp is loaded with cffi in ABI mode (``dlopen("libseccomp.so.2")``: no -dev headers, no
compiler) by the parent, when it compiles the plan of a config with ``linux.seccomp``.  The
program is exported with ``seccomp_export_bpf`` to a memfd and read back into the plan; the
executor's SECCOMP step loads it as the last step before execve.

Conversions follow runc (libcontainer/seccomp/seccomp_linux.go): ``SCMP_ACT_ERRNO`` and
``SCMP_ACT_TRACE`` return ``errnoRet`` (default EPERM); several conditions on one argument
become one rule each (libseccomp cannot AND two comparisons of one argument).  Unlike runc, a
syscall name libseccomp does not know at all is an error naming it, never a silent skip (a
typo would otherwise leave a syscall allowed); names it knows for other architectures only
are left to libseccomp, which ignores them here.

``SCMP_ACT_NOTIFY``: the launcher connects to ``listenerPath`` before the namespaces (the
host's view; relative to the bundle, like runc, which runs in it), so a missing or refusing
listener fails ``create`` cleanly; the parent sends the containerProcessState JSON with
``Run`` (it knows the init's pid by then); the SECCOMP step loads the filter with
SECCOMP_FILTER_FLAG_NEW_LISTENER and sends the JSON with the notify fd (SCM_RIGHTS).

A profile whose default action denies gets runc's -ENOSYS stub in front (``enosys.py``):
syscalls newer than every one it names return ENOSYS, so a C library falls back.
"""

from __future__ import annotations

import os

from corral.errors import ConfigError
from corral.plan import enosys

_CDEF = """
typedef void *scmp_filter_ctx;
struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a; uint64_t datum_b; };
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
uint32_t seccomp_arch_resolve_name(const char *arch_name);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_syscall_resolve_name_arch(uint32_t arch_token, const char *name);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                           unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);
"""

EPERM = 1
_NR_SCMP_ERROR = -1
_FLTATR_CTL_NNP = 3  # don't let libseccomp decide about no_new_privs (we never load with it)

_OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
              "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
BPF_MAXINSNS = 4096

_lib = None
_ffi = None


def _load():
    global _lib, _ffi
    if _lib is None:
        from cffi import FFI

        ffi = FFI()
        ffi.cdef(_CDEF)
        try:
            _lib = ffi.dlopen("libseccomp.so.2")
        except OSError as exc:
            raise ConfigError("linux.seccomp", f"cannot load libseccomp.so.2: {exc}") from None
        _ffi = ffi
    return _ffi, _lib


def action_value(action: str, errno_ret: int | None) -> int:
    """libseccomp's SCMP_ACT_* value of an action name (validated by corral.oci.config)."""
    ret = EPERM if errno_ret is None else errno_ret
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return 0x00000000
    if action == "SCMP_ACT_KILL_PROCESS":
        return 0x80000000
    if action == "SCMP_ACT_TRAP":
        return 0x00030000
    if action == "SCMP_ACT_ERRNO":
        return 0x00050000 | (ret & 0xFFFF)
    if action == "SCMP_ACT_TRACE":
        return 0x7FF00000 | (ret & 0xFFFF)
    if action == "SCMP_ACT_LOG":
        return 0x7FFC0000
    if action == "SCMP_ACT_NOTIFY":
        return 0x7FC00000
    if action == "SCMP_ACT_ALLOW":
        return 0x7FFF0000
    raise ConfigError("linux.seccomp", f"action {action}: not supported yet")


def compile_filter(seccomp) -> tuple[bytes, int]:
    """(BPF program as struct sock_filter bytes, SECCOMP_FILTER_FLAG_* bits)."""
    from corral.oci.config import SECCOMP_FLAGS

    ffi, lib = _load()
    path = "linux.seccomp"
    default = action_value(seccomp.default_action, seccomp.default_errno_ret)
    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise ConfigError(f"{path}.defaultAction", "libseccomp refused the default action")
    tokens = []
    try:
        _check(lib.seccomp_attr_set(ctx, _FLTATR_CTL_NNP, 0), f"{path}: set attribute")
        for i, arch in enumerate(seccomp.architectures):
            token = lib.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_"):].lower().encode())
            if token == 0:
                raise ConfigError(f"{path}.architectures[{i}]",
                                  f"architecture {arch} unknown to libseccomp")
            tokens.append(token)
            rc = lib.seccomp_arch_add(ctx, token)
            if rc != -17:  # EEXIST: the native one is there already
                _check(rc, f"{path}.architectures[{i}]")
        for i, rule in enumerate(seccomp.syscalls):
            _add_rule(ffi, lib, ctx, rule, f"{path}.syscalls[{i}]", default)
        program = _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)
    if enosys.wanted(seccomp):
        names = [name for rule in seccomp.syscalls for name in rule.names]
        last = enosys.last_syscalls(
            tokens, names, lambda token, name: lib.seccomp_syscall_resolve_name_arch(
                token, name.encode()))
        program = enosys.stub(last) + program
    if len(program) // 8 > BPF_MAXINSNS:
        raise ConfigError(path, f"the filter has {len(program) // 8} BPF instructions, more "
                                f"than the kernel's {BPF_MAXINSNS}")
    flags = 0
    for flag in seccomp.flags:
        flags |= SECCOMP_FLAGS[flag]
    return program, flags


def _add_rule(ffi, lib, ctx, rule, where: str, default: int) -> None:
    action = action_value(rule.action, rule.errno_ret)
    if action == default:
        return  # libseccomp refuses a rule that does what the default does; runc skips it
    indexes = [a.index for a in rule.args]
    if len(set(indexes)) == len(indexes):
        groups = [rule.args]
    else:
        groups = [(a,) for a in rule.args]
    for j, name in enumerate(rule.names):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == _NR_SCMP_ERROR:
            raise ConfigError(f"{where}.names[{j}]",
                              f"unknown syscall {name!r} (libseccomp does not know it)")
        for group in groups:
            cmps = ffi.new("struct scmp_arg_cmp[]", max(1, len(group)))
            for j, arg in enumerate(group):
                cmps[j].arg = arg.index
                cmps[j].op = _OPERATORS[arg.op]
                cmps[j].datum_a = arg.value
                cmps[j].datum_b = arg.value_two
            _check(lib.seccomp_rule_add_array(ctx, action, nr, len(group), cmps),
                   f"{where} ({name})")


def _export(lib, ctx) -> bytes:
    fd = os.memfd_create("corral-seccomp", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "linux.seccomp: export the BPF program")
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(fd)


def _check(rc: int, where: str) -> None:
    if rc < 0:
        raise ConfigError(where, f"libseccomp: {os.strerror(-rc).lower()}")
