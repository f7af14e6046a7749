"""Linux capability names and their bit numbers (``include/uapi/linux/capability.h``).

config.json names capabilities (``CAP_KILL``); capset(2) and prctl(2) want bit numbers.  The
table is fixed rather than read from the running kernel so that validating a config never
touches the host; capabilities newer than the running kernel (see
``/proc/sys/kernel/cap_last_cap``) are for the process-setup side to skip or refuse.
"""

from __future__ import annotations

CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

#: Every known capability name, in bit order.
ALL_CAPS: tuple[str, ...] = tuple(CAPABILITIES)
LAST_CAP: int = len(ALL_CAPS) - 1


def cap_number(name: str) -> int:
    """Exact names only (``CAP_KILL``, not ``kill``): that is what the spec and runc accept."""
    try:
        return CAPABILITIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown capability {name!r}") from None


def caps_mask(names: tuple[str, ...] | list[str]) -> int:
    """The 64-bit set capset(2) takes as two 32-bit halves.  Any iterable works; the annotation
    avoids importing collections.abc, which costs start-up time."""
    mask = 0
    for name in names:
        mask |= 1 << cap_number(name)
    return mask
