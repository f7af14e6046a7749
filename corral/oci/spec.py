"""The starting ``config.json`` that ``corral spec`` writes.

It is byte-for-byte what ``runc spec`` (runc 1.1) writes, so that bundles, tutorials and scripts
made for runc work unchanged, and the two runtimes can be compared on the same bundle.
"""

from __future__ import annotations

import os

_NO_EXEC = ["nosuid", "noexec", "nodev"]
_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False) -> dict:
    """A fresh dict each call (callers edit it); key order matches runc's output."""
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                key: list(_DEFAULT_CAPS)
                for key in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [*_NO_EXEC, "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": list(_NO_EXEC),
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": [*_NO_EXEC, "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": [*_NO_EXEC, "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }
    if rootless:
        _to_rootless(spec)
    return spec


def _to_rootless(spec: dict) -> None:
    """runc's ``specconv.ToRootless``: an unprivileged user can't make a network namespace
    worth having, mount a fresh sysfs, chown to gid 5 or write cgroups, so none of that is
    asked for; the user namespace maps only the caller's own ids."""
    linux = spec["linux"]
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    namespaces.append({"type": "user"})
    rootless_linux = {
        "uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}],
        "namespaces": namespaces,
    }
    # Go serialises struct fields in declaration order: mappings first, resources dropped.
    for key, value in linux.items():
        if key not in ("resources", "namespaces"):
            rootless_linux[key] = value
    spec["linux"] = rootless_linux
    spec["mounts"] = [_rootless_mount(m) for m in spec["mounts"]]


def _rootless_mount(mount: dict) -> dict:
    if os.path.normpath(mount["destination"]) == "/sys":
        return {
            "destination": "/sys",
            "type": "none",
            "source": "/sys",
            "options": ["rbind", *_NO_EXEC, "ro"],
        }
    if "options" in mount:
        options = [o for o in mount["options"] if not o.startswith(("uid=", "gid="))]
        mount = {**mount, "options": options}
    return mount
