"""``corral features``: the runtime-spec features document (features.md), telling what this
build implements and, where it depends on the host, what this host supports: probed, never
assumed.  Every list here is the one the code itself uses to accept a config, so a claimed
feature is always one ``parse_config`` and the plan compiler accept (tests/test_features.py)."""

from __future__ import annotations

import os

from corral.version import OCI_VERSION, __version__

HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop"]


def mount_options() -> list[str]:
    """The options corral.plan.mounts turns into mount attributes; the recursive ones (rro, ...) and
    idmap/ridmap only where the kernel has mount_setattr(2)."""
    from corral.plan.mounts import (FLAG_OPTIONS, IDMAP_OPTIONS, PROPAGATION_OPTIONS,
                                    RECURSIVE_OPTIONS)

    options = set(FLAG_OPTIONS) | set(PROPAGATION_OPTIONS)
    if idmap_supported():
        options |= set(RECURSIVE_OPTIONS) | set(IDMAP_OPTIONS)
    return sorted(options)


def _mempolicy_accepted(mode: int, nodes: list[int]) -> bool:
    """set_mempolicy(mode, nodes) succeeds, tried on a thread of its own (a memory policy
    is per thread), which resets it to MPOL_DEFAULT before it ends."""
    import threading

    from corral import nsenter

    result: list[bool] = []

    def probe() -> None:
        try:
            nsenter.set_mempolicy(mode, nodes)
        except OSError:
            result.append(False)
            return
        result.append(True)
        nsenter.set_mempolicy(0, [])

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def memory_policy() -> dict | None:
    """The linux.memoryPolicy modes and flags this kernel accepts (None without NUMA)."""
    from corral.oci.config import MEMPOLICY_FLAGS, MEMPOLICY_MODES

    node = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Mems_allowed_list:"):
                    node = int(line.split()[1].replace(",", "-").split("-")[0])
    except (OSError, ValueError, IndexError):
        pass
    if not _mempolicy_accepted(MEMPOLICY_MODES["MPOL_DEFAULT"], []):
        return None  # no CONFIG_NUMA: set_mempolicy is ENOSYS
    modes = [name for name, mode in MEMPOLICY_MODES.items()
             if _mempolicy_accepted(mode, [] if name in ("MPOL_DEFAULT", "MPOL_LOCAL")
                                    else [node])]
    bind = MEMPOLICY_MODES["MPOL_BIND"]
    flags = [name for name, flag in MEMPOLICY_FLAGS.items()
             if _mempolicy_accepted(bind | flag, [node])]
    return {"modes": sorted(modes), "flags": sorted(flags)}


def namespaces() -> list[str]:
    """The namespace types corral accepts that this kernel has (/proc/self/ns)."""
    from corral.oci.config import NAMESPACE_TYPES

    proc_names = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
                  "user": "user", "cgroup": "cgroup", "time": "time"}
    return sorted(t for t in NAMESPACE_TYPES if os.path.exists(f"/proc/self/ns/{proc_names[t]}"))


def capabilities() -> list[str]:
    """The capabilities corral knows, up to this kernel's last one."""
    from corral.oci.capabilities import ALL_CAPS

    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = len(ALL_CAPS) - 1
    return list(ALL_CAPS[: last + 1])


def _seccomp_flag_supported(flag: int) -> bool:
    """seccomp(SECCOMP_SET_MODE_FILTER, flag, NULL): EFAULT means the kernel knows the flag
    (it got as far as reading the program), EINVAL that it does not (runc's probe)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(317), ctypes.c_long(1), ctypes.c_long(flag), None)
    return rc < 0 and ctypes.get_errno() == 14  # EFAULT


def _arch_usable(lib, arch: str) -> bool:
    """libseccomp knows the architecture and can add it to a filter for this one (a filter
    cannot mix byte orders: big-endian ones are refused on x86_64)."""
    token = lib.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_"):].lower().encode())
    if token == 0:
        return False
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    try:
        rc = lib.seccomp_arch_add(ctx, token)
    finally:
        lib.seccomp_release(ctx)
    return rc == 0 or rc == -17  # EEXIST: the native one


def seccomp() -> dict:
    from corral.oci.config import (SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_FLAGS,
                                   SECCOMP_OPERATORS)

    try:
        from corral.plan.seccomp import _load

        _ffi, lib = _load()
    except Exception:  # noqa: BLE001 - no libseccomp: no seccomp support
        return {"enabled": False}
    archs = [a for a in sorted(SECCOMP_ARCHES) if _arch_usable(lib, a)]
    return {
        "enabled": True,
        "actions": sorted(SECCOMP_ACTIONS),
        "operators": sorted(SECCOMP_OPERATORS),
        "archs": archs,
        "knownFlags": sorted(SECCOMP_FLAGS),
        "supportedFlags": sorted(name for name, bit in SECCOMP_FLAGS.items()
                                 if _seccomp_flag_supported(bit)),
    }


def idmap_supported() -> bool:
    """mount_setattr(2) (Linux 5.12) exists: an empty call fails with EINVAL, not ENOSYS."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(442), ctypes.c_long(-1), None, ctypes.c_long(0), None,
                      ctypes.c_long(0))
    return not (rc < 0 and ctypes.get_errno() == 38)  # ENOSYS


def features() -> dict:
    from corral.oci import host

    document = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": namespaces(),
            "capabilities": capabilities(),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False,
                       "rdma": False},
            "seccomp": seccomp(),
            "apparmor": {"enabled": host.apparmor_enabled()},
            "selinux": {"enabled": host.selinux_enabled()},
            "intelRdt": {"enabled": False},  # refused everywhere (not implemented yet)
            "mountExtensions": {"idmap": {"enabled": idmap_supported()}},
            "netDevices": {"enabled": True},  # rtnetlink moves: any Linux with netns
        },
        "annotations": {"org.corral.version": __version__},
    }
    policy = memory_policy()
    if policy is not None:
        document["linux"]["memoryPolicy"] = policy
    return document
