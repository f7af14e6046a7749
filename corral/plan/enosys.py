"""The -ENOSYS stub put in front of a seccomp filter, as runc's patchbpf does.

A profile names the syscalls it knows; one added to the kernel after it was written falls
to its default action, often EPERM or a kill.  A C library tries a new syscall (clone3,
faccessat2, close_range ...) and falls back to an old one on ENOSYS only, so EPERM breaks
it.  The stub makes every syscall numbered above the highest one the profile names, on each
of the profile's architectures, return ENOSYS, as a kernel without it would.

Like runc (1.1): only when the default action denies (not ALLOW, LOG or TRACE), only for the
architectures the profile lists, and counting every name of every rule, whatever its action
(a name an architecture lacks counts for none).  On x86_64 the x32 ABI's syscalls carry bit
30 and get their own bound; on s390 and s390x syscall 0 (the multiplexer an unknown syscall
ends up as) gets ENOSYS too.
"""

from __future__ import annotations

import _struct as struct

from corral.errors import ConfigError

# struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (host order, as seccomp_export_bpf's)
_pack = struct.Struct("=HBBI").pack
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JA = 0x05  # BPF_JMP | BPF_JA
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGT = 0x25  # BPF_JMP | BPF_JGT | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_OFFSET_NR, _OFFSET_ARCH = 0, 4  # struct seccomp_data

ENOSYS = 38
RET_ENOSYS = 0x00050000 | ENOSYS  # SECCOMP_RET_ERRNO
AUDIT_ARCH_X86_64 = 0xC000003E
X32_TOKEN = 0x4000003E  # libseccomp's SCMP_ARCH_X32: not an AUDIT_ARCH value
X32_BIT = 0x40000000
S390_TOKENS = frozenset({0x00000016, 0x80000016})  # AUDIT_ARCH_S390, AUDIT_ARCH_S390X

#: Default actions that let unknown syscalls through: no stub (runc's isAllowAction).
PERMISSIVE = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"})


def wanted(seccomp) -> bool:
    """Whether the profile gets the stub: its default denies, and not with ENOSYS already."""
    if seccomp.default_action in PERMISSIVE:
        return False
    return not (seccomp.default_action == "SCMP_ACT_ERRNO"
                and seccomp.default_errno_ret == ENOSYS)


def last_syscalls(tokens: list[int], names: list[str], resolve) -> dict[int, dict[int, int]]:
    """{AUDIT_ARCH value: {libseccomp arch token: highest syscall number named}}.
    ``resolve(token, name)``: the number, negative when the architecture lacks it."""
    found: dict[int, dict[int, int]] = {}
    for token in tokens:
        audit = AUDIT_ARCH_X86_64 if token == X32_TOKEN else token
        numbers = [nr for nr in (resolve(token, name) for name in names) if nr >= 0]
        if numbers:
            found.setdefault(audit, {})[token] = max(numbers)
    return found


def stub(last: dict[int, dict[int, int]]) -> bytes:
    """The BPF instructions to put before the filter (b"" when no architecture has a bound).
    The filter reloads what it reads, so the stub may leave anything in the accumulator."""
    if not last:
        return b""
    code: list[tuple] = [(_LD_W_ABS, 0, 0, _OFFSET_ARCH)]
    sections: list[tuple[str, list[tuple]]] = []
    for audit, bounds in last.items():
        label = f"arch{audit:x}"
        code.append((_JEQ, label, None, audit))
        sections.append((label, _section(audit, bounds)))
    code.append((_JA, None, None, "filter"))
    labels: dict[str, int] = {}
    for label, body in sections:
        labels[label] = len(code)
        code.extend(body)
    labels["enosys"] = len(code)
    code.append((_RET, 0, 0, RET_ENOSYS))
    labels["filter"] = len(code)
    return b"".join(_assemble(i, insn, labels) for i, insn in enumerate(code))


def _section(audit: int, bounds: dict[int, int]) -> list[tuple]:
    """One architecture's checks: the syscall number against its bound(s)."""
    out: list[tuple] = [(_LD_W_ABS, 0, 0, _OFFSET_NR)]
    if len(bounds) == 2:  # x86_64 and x32: bit 30 tells them apart
        x32 = bounds[X32_TOKEN]
        native = next(nr for token, nr in bounds.items() if token != X32_TOKEN)
        out += [(_JSET, 1, None, X32_BIT),
                (_JGT, "enosys", "filter", native),
                (_JGT, "enosys", "filter", x32)]
        return out
    (token, bound), = bounds.items()
    if token in S390_TOKENS:
        out.append((_JEQ, "enosys", None, 0))
    if audit == AUDIT_ARCH_X86_64:  # skip the other ABI's syscalls: they are not bounded
        out.append((_JSET, "filter", None, X32_BIT) if token != X32_TOKEN
                   else (_JSET, None, "filter", X32_BIT))
    out.append((_JGT, "enosys", "filter", bound))
    return out


def _assemble(i: int, insn: tuple, labels: dict[str, int]) -> bytes:
    op, jt, jf, k = insn

    def offset(target) -> int:
        if target is None:
            return 0  # the next instruction
        if isinstance(target, int):
            return target
        return labels[target] - i - 1

    if op == _JA:
        return _pack(op, 0, 0, offset(k))
    if op in (_JEQ, _JGT, _JSET):
        jt, jf = offset(jt), offset(jf)
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ConfigError("linux.seccomp.architectures", "too many architectures for "
                                                              "the -ENOSYS stub's jumps")
        return _pack(op, jt, jf, k)
    return _pack(op, 0, 0, k)
