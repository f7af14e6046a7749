"""cgroup v2 device rules: a BPF_PROG_TYPE_CGROUP_DEVICE program assembled here, in Python.

cgroup v2 has no ``devices.allow``/``devices.deny`` files: the kernel asks a BPF program
attached to the cgroup (and to each ancestor) whether a task may open or mknod a device. As
runc (libcontainer/cgroups/devices/ebpf) and crun do, we turn the rule list into one straight
program and load it with the ``bpf()`` syscall through ctypes (no compiled module):

    r2 = ctx->access_type & 0xffff      device type (BPF_DEVCG_DEV_BLOCK 1, _CHAR 2)
    r3 = ctx->access_type >> 16         requested access (ACC_MKNOD 1, _READ 2, _WRITE 4)
    r4 = ctx->major ; r5 = ctx->minor
    per rule, last rule first (the last matching rule wins, as with the v1 files):
        if r2 != TYPE goto next                 (omitted for type "a")
        allow rule: r1 = r3 & ACCESS; if r1 != r3 goto next   (every requested bit allowed)
        deny rule:  r1 = r3 & ACCESS; if r1 == 0 goto next    (any requested bit denied)
        if r4 != MAJOR goto next ; if r5 != MINOR goto next   (omitted for wildcards)
        r0 = allow ; exit
    next: ...
    r0 = 0 ; exit                       nothing matched: deny

A rule matching every device and access ends the walk (rules before it are unreachable).
Comparisons are 32-bit (BPF_JMP32): major/minor are u32 and an immediate is sign-extended.

The program is attached with ``BPF_F_ALLOW_MULTI`` (the kernel then requires every attached
program, here and in ancestors, to allow) and its fd closed: the attachment holds the
program, and removing the cgroup detaches it.
"""

from __future__ import annotations

import os
import struct

from ..errors import CgroupError, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..oci.config import DeviceRule

# ---- instruction encoding (include/uapi/linux/bpf.h, bpf_common.h) ---------------------------

BPF_LDX_W_MEM = 0x61     # BPF_LDX | BPF_W | BPF_MEM:     dst = *(u32 *)(src + off)
BPF_ALU_AND_K = 0x54     # BPF_ALU | BPF_AND | BPF_K:     dst = (u32)(dst & imm)
BPF_ALU_RSH_K = 0x74     # BPF_ALU | BPF_RSH | BPF_K
BPF_ALU_MOV_K = 0xB4     # BPF_ALU | BPF_MOV | BPF_K
BPF_ALU_MOV_X = 0xBC     # BPF_ALU | BPF_MOV | BPF_X
BPF_JMP32_JNE_K = 0x56   # BPF_JMP32 | BPF_JNE | BPF_K:   if (u32)dst != imm goto +off
BPF_JMP32_JNE_X = 0x5E   # BPF_JMP32 | BPF_JNE | BPF_X
BPF_JMP32_JEQ_K = 0x16   # BPF_JMP32 | BPF_JEQ | BPF_K
BPF_EXIT = 0x95          # BPF_JMP | BPF_EXIT

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
_ALL_ACCESS = ACC_MKNOD | ACC_READ | ACC_WRITE

INSN = struct.Struct("<BBhi" if struct.pack("=H", 1) == b"\x01\x00" else ">BBhi")


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One 8-byte instruction: opcode, dst/src registers (nibbles), offset, immediate."""
    if imm >= 1 << 31:
        imm -= 1 << 32  # u32 operands of 32-bit ops, as the signed field holds them
    regs = (src << 4 | dst) if INSN.format[0] == "<" else (dst << 4 | src)
    return INSN.pack(code, regs, off, imm)


def _access_mask(access: str) -> int:
    mask = 0
    for c in access:
        mask |= _ACCESS_BITS[c]
    return mask


def _rule_block(rule: DeviceRule) -> list[tuple[int, int, int, int, int | None]]:
    """The instructions of one rule; a jump's offset None means "to the next rule"."""
    if rule.type not in ("a", "b", "c"):
        raise ConfigError("linux.resources.devices", f"type {rule.type!r} is not a, b or c")
    if not rule.access or rule.access.strip("rwm"):
        raise ConfigError("linux.resources.devices",
                          f"access {rule.access!r} is not a combination of r, w, m")
    block: list = []
    if rule.type != "a":
        block.append((BPF_JMP32_JNE_K, 2, 0, DEV_BLOCK if rule.type == "b" else DEV_CHAR, None))
    access = _access_mask(rule.access)
    if access != _ALL_ACCESS:
        block.append((BPF_ALU_MOV_X, 1, 3, 0, 0))
        block.append((BPF_ALU_AND_K, 1, 0, access, 0))
        if rule.allow:
            block.append((BPF_JMP32_JNE_X, 1, 3, 0, None))
        else:
            block.append((BPF_JMP32_JEQ_K, 1, 0, 0, None))
    if rule.major is not None and rule.major >= 0:
        block.append((BPF_JMP32_JNE_K, 4, 0, rule.major, None))
    if rule.minor is not None and rule.minor >= 0:
        block.append((BPF_JMP32_JNE_K, 5, 0, rule.minor, None))
    block.append((BPF_ALU_MOV_K, 0, 0, 1 if rule.allow else 0, 0))
    block.append((BPF_EXIT, 0, 0, 0, 0))
    return block


def assemble(rules: Iterable[DeviceRule]) -> bytes:
    """The program for ``rules`` (applied in order, as written to v1 devices.allow/deny)."""
    out = [
        insn(BPF_LDX_W_MEM, 2, 1, 0),          # r2 = ctx->access_type
        insn(BPF_ALU_AND_K, 2, imm=0xFFFF),    # r2 &= 0xffff: the device type
        insn(BPF_LDX_W_MEM, 3, 1, 0),          # r3 = ctx->access_type
        insn(BPF_ALU_RSH_K, 3, imm=16),        # r3 >>= 16: the access
        insn(BPF_LDX_W_MEM, 4, 1, 4),          # r4 = ctx->major
        insn(BPF_LDX_W_MEM, 5, 1, 8),          # r5 = ctx->minor
    ]
    catch_all = False
    for rule in reversed(list(rules)):
        block = _rule_block(rule)
        for i, (code, dst, src, imm, off) in enumerate(block):
            # A jump's "next rule" is the end of this block: skip the instructions after it.
            out.append(insn(code, dst, src, len(block) - i - 1 if off is None else off, imm))
        if len(block) == 2:  # no test at all: every device, every access
            catch_all = True
            break
    if not catch_all:
        out.append(insn(BPF_ALU_MOV_K, 0, imm=0))  # default: deny
        out.append(insn(BPF_EXIT))
    return b"".join(out)


# ---- the bpf() syscall ------------------------------------------------------------------------

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
_ATTR_SIZE = 120  # more than any field we set; the kernel wants the tail zeroed
LICENSE = b"Apache\0"


def _bpf(cmd: int, attr: bytearray) -> int:
    import ctypes

    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise CgroupError(f"bpf(): unknown syscall number on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def load(program: bytes) -> int:
    """BPF_PROG_LOAD of a device program; returns its fd. A verifier refusal comes back
    with the verifier's log in the message."""
    import ctypes

    code = ctypes.create_string_buffer(program, len(program))
    license = ctypes.create_string_buffer(LICENSE, len(LICENSE))
    log = ctypes.create_string_buffer(65536)
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("=IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE,
                     len(program) // 8, ctypes.addressof(code), ctypes.addressof(license),
                     1, len(log), ctypes.addressof(log))
    attr[48:48 + 13] = b"corral_device"  # prog_name (16 bytes, NUL-padded)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        detail = log.value.decode(errors="replace").strip().splitlines()
        hint = f" ({detail[-1]})" if detail else ""
        raise CgroupError(f"bpf(BPF_PROG_LOAD) of the device program: {e.strerror}{hint}") \
            from None


def attach(cgroup_dir: str, prog_fd: int) -> None:
    """BPF_PROG_ATTACH of a device program to a cgroup2 directory, ALLOW_MULTI."""
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"open {cgroup_dir}: {e.strerror}") from None
    try:
        attr = bytearray(_ATTR_SIZE)
        struct.pack_into("=IIII", attr, 0, dir_fd, prog_fd, BPF_CGROUP_DEVICE,
                         BPF_F_ALLOW_MULTI)
        _bpf(BPF_PROG_ATTACH, attr)
    except OSError as e:
        raise CgroupError(f"bpf(BPF_PROG_ATTACH) to {cgroup_dir}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def apply_device_rules(cgroup_dir: str, rules: Iterable[DeviceRule]) -> None:
    """Assemble, load and attach the program for ``rules``; the fd is closed after."""
    fd = load(assemble(rules))
    try:
        attach(cgroup_dir, fd)
    finally:
        os.close(fd)
