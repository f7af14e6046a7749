"""The machine's description for the report: CPU, memory, kernel, cgroup layout, versions."""

from __future__ import annotations

import os
import platform


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _memory() -> str:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def cgroup_layout() -> str:
    """"hybrid: v1 (cpu, memory, ...) + cgroup2 at /sys/fs/cgroup/unified", "cgroup v2", ..."""
    v1, v2 = [], []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _source, options = right.split()[:3]
            if fstype == "cgroup":
                v1.append(",".join(o for o in options.split(",") if o not in ("rw", "ro")))
            elif fstype == "cgroup2":
                v2.append(left.split()[4])
    if v1 and v2:
        return f"hybrid: v1 ({', '.join(sorted(v1))}) + cgroup2 at {', '.join(v2)}"
    if v2:
        return "cgroup v2 (unified)"
    return f"cgroup v1 ({', '.join(sorted(v1))})" if v1 else "no cgroups mounted"


def describe(versions: dict[str, str]) -> dict[str, str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory(),
        "kernel": platform.release(),
        "distribution": _os_release(),
        "cgroups": cgroup_layout(),
        "python": platform.python_version(),
        **{f"{name} version": v for name, v in versions.items()},
        "load average at start": load,
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"
