"""``corral events``: a container's stats and OOM events as runc prints them, one JSON
object per line (``{"type":"stats","id":...,"data":{...}}``, ``{"type":"oom","id":...}``).

``--stats`` prints one stats object. Otherwise a stream: stats every ``--interval`` and an
``oom`` event whenever the kernel's OOM killer acts in the container's memory cgroup, until
the container's init exits (then exit 0). One ``poll()`` loop, no threads, no trio:

- the init's pidfd becomes readable when it exits;
- v1 memory controller: an eventfd registered through ``cgroup.event_control`` for
  ``memory.oom_control`` counts OOMs (the kernel also signals it when the cgroup goes);
- v2: ``memory.events`` raises POLLPRI when it changes (kernfs notification); a rise of
  its ``oom_kill`` or ``oom`` counter is one ``oom`` event.
"""

from __future__ import annotations

import os
import select

from corral import jsonlite as json
from corral.errors import ConfigError, ContainerStateError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}


def parse_duration(text: str, flag: str = "--interval") -> float:
    """Go's time.ParseDuration ("500ms", "2s", "1m30s", "1.5h") in seconds."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ConfigError(flag, f"invalid duration {text!r}")
    total = 0.0
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == "."):
            j += 1
        number = s[i:j]
        k = j
        while k < len(s) and not (s[k].isdigit() or s[k] == "."):
            k += 1
        unit = s[j:k]
        if not number or number == "." or number.count(".") > 1 or unit not in _UNITS:
            raise ConfigError(flag, f"invalid duration {text!r} (want e.g. 500ms, 2s, 1m)")
        total += float(number) * _UNITS[unit]
        i = k
    return sign * total


def _emit(event: dict) -> None:
    data = (json.go_dumps(event) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


def stats_event(container) -> dict:
    from corral.cgroups.stats import read

    return {"type": "stats", "id": container.id, "data": read(container._cgroup())}


def memory_dir(cgroup) -> tuple[str | None, bool]:
    """(the directory of the container's memory controller, whether it is v1)."""
    v1 = _memory_v1_dir(cgroup)
    if v1 is not None:
        return v1, True
    unified = cgroup.paths.get("unified")
    if unified and os.path.exists(unified + "/memory.current"):
        return unified, False
    return None, False


def _memory_v1_dir(cgroup) -> str | None:
    if cgroup.mode == "v2":
        return None
    for key, path in cgroup.paths.items():
        if key != "unified" and "memory" in key.split(","):
            return path
    return None


class OomWatch:
    """The OOM source for one cgroup: ``fd`` to poll, ``events`` to poll it for, and
    ``check()`` → how many OOMs happened since the last call."""

    def __init__(self, cgroup) -> None:
        self.fd = -1
        self.extra = -1
        self.events = 0
        self.counters = (0, 0)
        self.dir = ""
        v1 = _memory_v1_dir(cgroup)
        if v1 is not None:
            self.dir = v1
            self.kind = "v1"
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.extra = os.open(v1 + "/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            control = os.open(v1 + "/cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(control, f"{self.fd} {self.extra}".encode())
            finally:
                os.close(control)
            self.events = select.POLLIN
        elif "unified" in cgroup.paths and os.path.exists(
                cgroup.paths["unified"] + "/memory.events"):
            self.kind = "v2"
            self.dir = cgroup.paths["unified"]
            self.fd = os.open(cgroup.paths["unified"] + "/memory.events",
                              os.O_RDONLY | os.O_CLOEXEC)
            self.counters = self._read_v2()
            self.events = select.POLLPRI | select.POLLERR
        else:
            self.kind = None

    def _read_v2(self) -> tuple[int, int]:
        """(oom, oom_kill) from memory.events; reading also re-arms POLLPRI."""
        try:
            text = os.pread(self.fd, 4096, 0).decode()
        except OSError:
            return self.counters
        values = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                values[parts[0]] = int(parts[1])
        return values.get("oom", 0), values.get("oom_kill", 0)

    def gone(self) -> bool:
        """The cgroup was removed (v1 signals the eventfd then, v2 raises POLLERR)."""
        return not os.path.isdir(self.dir)

    def check(self) -> int:
        if self.kind == "v1":
            if self.gone():
                return 0
            try:
                return os.eventfd_read(self.fd)
            except BlockingIOError:
                return 0
        if self.kind == "v2":
            before = self.counters
            self.counters = self._read_v2()
            rises = [now - then for now, then in zip(self.counters, before)]
            return max(0, *rises)
        return 0

    def close(self) -> None:
        for fd in (self.fd, self.extra):
            if fd >= 0:
                os.close(fd)


def run(container, stats_only: bool, interval: float) -> int:
    from corral.procfs import is_alive

    from .containers import CREATED, PAUSED, RUNNING

    if container.status() not in (CREATED, RUNNING, PAUSED):
        raise ContainerStateError("container not running")
    if stats_only:
        _emit(stats_event(container))
        return 0
    if interval <= 0:
        raise ConfigError("--interval", "duration interval must be greater than 0")
    import time

    try:
        pidfd = os.pidfd_open(container.pid)
    except ProcessLookupError:
        raise ContainerStateError("container not running") from None
    watch = None
    try:
        if not is_alive(container.pid, container.record.get("pid_start")):
            raise ContainerStateError("container not running")
        watch = OomWatch(container._cgroup())
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if watch.fd >= 0:
            poller.register(watch.fd, watch.events)
        next_stats = time.monotonic() + interval
        while True:
            timeout = max(0.0, next_stats - time.monotonic())
            ready = dict(poller.poll(int(timeout * 1000) + 1))
            if watch.fd in ready:
                for _ in range(watch.check()):
                    _emit({"type": "oom", "id": container.id})
                if watch.gone():
                    poller.unregister(watch.fd)
            if pidfd in ready:
                for _ in range(watch.check()):  # an OOM that killed the init comes first
                    _emit({"type": "oom", "id": container.id})
                return 0
            if time.monotonic() >= next_stats:
                _emit(stats_event(container))
                next_stats += interval
                if next_stats < time.monotonic():
                    next_stats = time.monotonic() + interval
    except BrokenPipeError:
        return 0  # the reader went away
    finally:
        if watch is not None:
            watch.close()
        os.close(pidfd)
