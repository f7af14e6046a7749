"""cgroup v2 device rules as an eBPF program: its assembly (checked by running it through a
small interpreter of the instructions it uses) and, on the real kernel, a container whose
unified cgroup has the program attached."""

from __future__ import annotations

import json
import os
import struct
import time

import pytest

from corral.cgroups import ebpf
from corral.oci.config import DeviceRule

A, B, C = "a", "b", "c"


def decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack("<BBhi", program[i:i + 8])
        out.append((code, regs & 0xF, regs >> 4, off, imm))
    return out


def run(program: bytes, dev_type: str, access: str, major: int, minor: int) -> int:
    """What the kernel would answer: 1 allow, 0 deny."""
    acc = sum({"m": 1, "r": 2, "w": 4}[c] for c in access)
    ctx = [acc << 16 | {"b": 1, "c": 2}[dev_type], major, minor]
    regs = [0] * 11
    pc = 0
    insns = decode(program)
    while True:
        code, dst, src, off, imm = insns[pc]
        u = imm & 0xFFFFFFFF
        pc += 1
        if code == ebpf.BPF_LDX_W_MEM:
            assert src == 1
            regs[dst] = ctx[off // 4]
        elif code == ebpf.BPF_ALU_AND_K:
            regs[dst] &= u
        elif code == ebpf.BPF_ALU_RSH_K:
            regs[dst] >>= u
        elif code == ebpf.BPF_ALU_MOV_K:
            regs[dst] = u
        elif code == ebpf.BPF_ALU_MOV_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == ebpf.BPF_JMP32_JNE_K:
            pc += off if regs[dst] & 0xFFFFFFFF != u else 0
        elif code == ebpf.BPF_JMP32_JNE_X:
            pc += off if regs[dst] != regs[src] else 0
        elif code == ebpf.BPF_JMP32_JEQ_K:
            pc += off if regs[dst] & 0xFFFFFFFF == u else 0
        elif code == ebpf.BPF_EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_encoding_and_counts():
    prologue = 6
    prog = ebpf.assemble([])
    assert len(prog) == (prologue + 2) * 8  # no rules: deny everything
    assert prog[:8] == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])  # r2 = *(u32 *)(r1 + 0)
    assert prog[-16:] == bytes([0xB4, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
    # c 1:3 rwm: type, major, minor checks + r0 = 1 + exit
    prog = ebpf.assemble([DeviceRule(True, C, 1, 3)])
    assert len(prog) // 8 == prologue + 5 + 2
    assert decode(prog)[prologue] == (ebpf.BPF_JMP32_JNE_K, 2, 0, 4, 2)  # skip 4 if not char
    # an access subset adds mov/and/jump; a wildcard major/minor drops its check
    prog = ebpf.assemble([DeviceRule(True, C, None, None, "m")])
    assert len(prog) // 8 == prologue + 6 + 2
    # a rule matching everything is the last one checked: no default after it
    prog = ebpf.assemble([DeviceRule(True, C, 1, 3), DeviceRule(False, A)])
    assert len(prog) // 8 == prologue + 2
    assert ebpf.insn(ebpf.BPF_JMP32_JNE_K, 4, 0, 1, 0xFFFFFFFF)[4:] == b"\xff\xff\xff\xff"


def test_semantics_last_rule_wins():
    rules = [DeviceRule(False, A), DeviceRule(True, C, 1, 3), DeviceRule(True, C, 1, 9, "r"),
             DeviceRule(True, C, None, None, "m"), DeviceRule(True, C, 136, None, "rw"),
             DeviceRule(False, C, 136, 7, "w")]
    prog = ebpf.assemble(rules)
    assert run(prog, C, "rw", 1, 3) == 1
    assert run(prog, C, "r", 1, 5) == 0  # /dev/zero: only the deny-all matches
    assert run(prog, B, "r", 1, 3) == 0  # same numbers, block device
    assert run(prog, C, "r", 1, 9) == 1
    assert run(prog, C, "w", 1, 9) == 0  # read-only rule
    assert run(prog, C, "rw", 1, 9) == 0
    assert run(prog, C, "m", 8, 8) == 1
    assert run(prog, B, "m", 8, 8) == 0
    assert run(prog, C, "rw", 136, 4) == 1
    assert run(prog, C, "r", 136, 7) == 1
    assert run(prog, C, "rw", 136, 7) == 0  # the later deny of w wins
    everything = ebpf.assemble([DeviceRule(False, C, 1, 5), DeviceRule(True, A)])
    assert run(everything, C, "r", 1, 5) == 1 and run(everything, B, "rwm", 8, 0) == 1
    allow_but_zero = ebpf.assemble([DeviceRule(True, A), DeviceRule(False, C, 1, 5)])
    assert run(allow_but_zero, C, "r", 1, 5) == 0 and run(allow_but_zero, C, "r", 1, 3) == 1


def test_bad_rules_named():
    from corral.errors import ConfigError

    with pytest.raises(ConfigError, match="linux.resources.devices"):
        ebpf.assemble([DeviceRule(True, "p")])


def test_kernel_accepts_program():
    fd = ebpf.load(ebpf.assemble([DeviceRule(False, A), DeviceRule(True, C, 1, 3),
                                  DeviceRule(True, C, None, None, "m")]))
    os.close(fd)


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/unified")
                    and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
                    reason="no cgroup2 hierarchy")
def test_container_denied_device(corral, make_bundle):
    script = ("(head -c1 /dev/zero >/dev/null && echo zero-open || echo zero-denied) > /out;"
              "(echo x > /dev/null && echo null-ok || echo null-denied) >> /out;"
              "(head -c1 /dev/urandom >/dev/null && echo urandom-read || echo urandom-noread)"
              " >> /out;"
              "(echo x > /dev/urandom && echo urandom-write || echo urandom-nowrite) >> /out")
    b = make_bundle(["sh", "-c", script])
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    with open(os.path.join(corral.root, b.id, "state.json")) as f:
        paths = json.load(f)["cgroup"]["paths"]
    unified = paths["unified"]
    assert unified.startswith("/sys/fs/cgroup/")
    ebpf.apply_device_rules(unified, [DeviceRule(False, A), DeviceRule(True, C, 1, 3),
                                      DeviceRule(True, C, 1, 9, "r"),
                                      DeviceRule(True, C, None, None, "m")])
    corral("start", b.id)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 5
    while corral.state(b.id)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(os.path.join(b.rootfs, "out")) as f:
        assert f.read().split() == ["zero-denied", "null-ok", "urandom-read", "urandom-nowrite"]
    corral("delete", b.id)  # removing the cgroup detaches the program
    assert not os.path.exists(unified)
