"""What the engine knows of each container it watches, and the kernel sources it watches:
the OOM eventfd of a v1 memory cgroup, and the peak memory read before the cgroup goes."""

from __future__ import annotations

import os

import trio

MANAGED = "supervisor"  # state.json "managed": made by an engine, its init a keeper child


class Tracked:
    """The engine's view of one container: how it learns that the init exited."""

    __slots__ = ("id", "state_dir", "record", "pid", "pid_start", "managed", "exit_status",
                 "exited", "job", "timed_out", "peak_memory", "started_at",
                 "exited_at", "logs", "keeper_child")

    def __init__(self, cid: str, state_dir: str, record: dict) -> None:
        self.id = cid
        self.state_dir = state_dir
        self.record = record
        self.logs = True  # its stdout and stderr are logged by the keeper
        # its init is our keeper's child (or was, and is the daemon's now): someone will
        # report its status; else (adopted after both died) nobody can
        self.keeper_child = True
        self.pid = record.get("pid") or 0
        self.pid_start = record.get("pid_start")
        self.managed = record.get("managed") == MANAGED
        self.job = record.get("job")  # {"workdir", "keep", "upper", "timeLimit"} of a Job
        self.exit_status: int | None = None
        self.exited = trio.Event()
        self.timed_out = False
        self.peak_memory: int | None = None
        self.started_at: str | None = None
        self.exited_at: str | None = None


def oom_watch(cgroup_json: dict | None):
    """An OOM eventfd for a v1 memory cgroup (pollable by trio); None otherwise (on v2 an
    OOM that kills the init still shows in its status)."""
    if not cgroup_json:
        return None
    from corral.cgroups import Cgroup
    from corral.runtime.events import OomWatch

    try:
        watch = OomWatch(Cgroup.from_json(cgroup_json))
    except OSError:
        return None
    if watch.kind != "v1":
        watch.close()
        return None
    return watch


def peak_memory(cgroup_json: dict | None) -> int | None:
    """The container's highest memory use, read before its cgroup goes (v1
    max_usage_in_bytes, v2 memory.peak where the kernel has it)."""
    if not cgroup_json:
        return None
    from corral.cgroups import Cgroup
    from corral.runtime.events import memory_dir

    try:
        cgroup = Cgroup.from_json(cgroup_json)
        directory, v1 = memory_dir(cgroup)
        if directory is None:
            return None
        name = "memory.max_usage_in_bytes" if v1 else "memory.peak"
        with open(os.path.join(directory, name)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
