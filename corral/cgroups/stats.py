"""A container's resource usage read from its cgroup, shaped like runc's ``types.Stats``
(what ``runc events`` prints and containerd's shim decodes).

v1 (also on a hybrid host, where the controllers live in v1): cpuacct, cpu.stat, memory.*,
pids, blkio.throttle.*, hugetlb.*. v2: cpu.stat, memory.current/max/peak/stat/events,
memory.swap.*, pids, io.stat, hugetlb.*. A file a kernel lacks leaves its fields at zero,
as in runc. Unlimited is 2^64-1 on v2 ("max") and the kernel's own number on v1.

Only ``os`` and corral's own modules: ``corral events`` is a short command.
"""

from __future__ import annotations

import os

from .files import read_or_none
from .hierarchy import UNIFIED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .group import Cgroup

MAX_U64 = (1 << 64) - 1
_USER_HZ = 100  # cpuacct.stat counts clock ticks (USER_HZ is 100 on every Linux ABI)
_NS_PER_TICK = 1_000_000_000 // _USER_HZ


def _int(path: str) -> int:
    """A one-number file; "max" is 2^64-1, a missing or unreadable file 0."""
    text = read_or_none(path)
    if text is None:
        return 0
    text = text.strip()
    if text == "max":
        return MAX_U64
    try:
        return int(text)
    except ValueError:
        return 0


def _keyed(path: str) -> dict[str, int]:
    """"key value" lines (memory.stat, cpu.stat, memory.events)."""
    found = {}
    for line in (read_or_none(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                found[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return found


def _list(text: str | None) -> list[int]:
    """"0-3,6" → [0, 1, 2, 3, 6]."""
    out: list[int] = []
    for part in (text or "").strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out += range(int(lo), int(hi or lo) + 1)
        except ValueError:
            pass
    return out


def empty() -> dict:
    """Every field Go's encoder prints for zero values of types.Stats."""
    return {
        "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
        "cpuset": _cpuset({}),
        "memory": {"usage": {"limit": 0, "failcnt": 0}, "swap": {"limit": 0, "failcnt": 0},
                   "kernel": {"limit": 0, "failcnt": 0},
                   "kernelTCP": {"limit": 0, "failcnt": 0}},
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


# runc's types.CPUSet: cpus and mems are omitempty, the other fields always printed.
_CPUSET_FIELDS = (("cpu_exclusive", "cpuset.cpu_exclusive"),
                  ("mem_hardwall", "cpuset.mem_hardwall"),
                  ("mem_exclusive", "cpuset.mem_exclusive"),
                  ("memory_migrate", "cpuset.memory_migrate"),
                  ("memory_spread_page", "cpuset.memory_spread_page"),
                  ("memory_spread_slab", "cpuset.memory_spread_slab"),
                  ("memory_pressure", "cpuset.memory_pressure"),
                  ("sched_load_balance", "cpuset.sched_load_balance"),
                  ("sched_relax_domain_level", "cpuset.sched_relax_domain_level"))


def _cpuset(values: dict) -> dict:
    """types.CPUSet in Go's field order, from ``values`` (missing numbers are 0)."""
    out: dict = {}
    if values.get("cpus"):
        out["cpus"] = values["cpus"]
    out["cpu_exclusive"] = values.get("cpu_exclusive", 0)
    if values.get("mems"):
        out["mems"] = values["mems"]
    for key, _ in _CPUSET_FIELDS[1:]:
        out[key] = values.get(key, 0)
    return out


def _omit_zero(d: dict, keep: tuple = ()) -> dict:
    """Go's omitempty: zero numbers and empty lists/maps go, except ``keep``."""
    return {k: v for k, v in d.items() if k in keep or v not in (0, [], {}, None, "")}


def _cpu_usage(usage: dict) -> dict:
    """types.CpuUsage in Go's field order (total and the per-CPU lists are omitempty)."""
    out = _omit_zero({key: usage.get(key, 0)
                      for key in ("total", "percpu", "percpu_kernel", "percpu_user")})
    out["kernel"] = usage.get("kernel", 0)
    out["user"] = usage.get("user", 0)
    return out


def _memory(m: dict) -> dict:
    """types.MemoryStats in Go's field order; ``raw`` is a Go map: sorted keys."""
    out = _omit_zero({"cache": m.get("cache", 0)})
    for key in ("usage", "swap", "kernel", "kernelTCP"):
        out[key] = m.get(key, {"limit": 0, "failcnt": 0})
    if m.get("raw"):
        out["raw"] = dict(sorted(m["raw"].items()))
    return out


def _entry(usage: int, max_usage: int, limit: int, failcnt: int) -> dict:
    return _omit_zero({"limit": limit, "usage": usage, "max": max_usage, "failcnt": failcnt},
                      keep=("limit", "failcnt"))


def _dir(cgroup: Cgroup, controller: str) -> str | None:
    for key, path in cgroup.paths.items():
        if key != UNIFIED and controller in key.split(","):
            return path
    return None


def _page_sizes(directory: str) -> list[str]:
    """hugetlb page sizes ("2MB", "1GB") from the file names the controller offers."""
    sizes = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        parts = name.split(".")
        if len(parts) >= 3 and parts[0] == "hugetlb" and parts[1][:1].isdigit():
            sizes.add(parts[1])
    return sorted(sizes)


# ---- v1 ------------------------------------------------------------------------------------


def _v1(cgroup: Cgroup) -> dict:
    stats = empty()
    cpuacct = _dir(cgroup, "cpuacct")
    if cpuacct:
        usage = stats["cpu"]["usage"]
        ticks = _keyed(cpuacct + "/cpuacct.stat")
        usage["kernel"] = ticks.get("system", 0) * _NS_PER_TICK
        usage["user"] = ticks.get("user", 0) * _NS_PER_TICK
        total = _int(cpuacct + "/cpuacct.usage")
        if total:
            usage["total"] = total
        percpu = [int(v) for v in (read_or_none(cpuacct + "/cpuacct.usage_percpu") or "").split()]
        if percpu:
            usage["percpu"] = percpu
        all_rows = (read_or_none(cpuacct + "/cpuacct.usage_all") or "").splitlines()[1:]
        if all_rows:
            rows = [r.split() for r in all_rows if len(r.split()) == 3]
            usage["percpu_user"] = [int(r[1]) for r in rows]
            usage["percpu_kernel"] = [int(r[2]) for r in rows]
        stats["cpu"]["usage"] = _cpu_usage(usage)
    cpu = _dir(cgroup, "cpu")
    if cpu:
        stat = _keyed(cpu + "/cpu.stat")
        stats["cpu"]["throttling"] = _omit_zero({
            "periods": stat.get("nr_periods", 0),
            "throttled_periods": stat.get("nr_throttled", 0),
            "throttled_time": stat.get("throttled_time", 0)})
    cpuset = _dir(cgroup, "cpuset")
    if cpuset:
        values = {key: _int(f"{cpuset}/{name}") for key, name in _CPUSET_FIELDS}
        values["cpus"] = _list(read_or_none(cpuset + "/cpuset.cpus"))
        values["mems"] = _list(read_or_none(cpuset + "/cpuset.mems"))
        stats["cpuset"] = _cpuset(values)
    memory = _dir(cgroup, "memory")
    if memory:
        m = stats["memory"]
        raw = _keyed(memory + "/memory.stat")
        m["cache"] = raw.get("cache", 0)
        for key, prefix in (("usage", "memory."), ("swap", "memory.memsw."),
                            ("kernel", "memory.kmem."), ("kernelTCP", "memory.kmem.tcp.")):
            m[key] = _entry(_int(memory + f"/{prefix}usage_in_bytes"),
                            _int(memory + f"/{prefix}max_usage_in_bytes"),
                            _int(memory + f"/{prefix}limit_in_bytes"),
                            _int(memory + f"/{prefix}failcnt"))
        m["raw"] = raw
        stats["memory"] = _memory(m)
    pids = _dir(cgroup, "pids")
    if pids:
        limit = _int(pids + "/pids.max")
        stats["pids"] = _omit_zero({"current": _int(pids + "/pids.current"),
                                    "limit": 0 if limit == MAX_U64 else limit})
    blkio = _dir(cgroup, "blkio")
    if blkio:
        found = {}
        for key, name in (("ioServiceBytesRecursive", "io_service_bytes_recursive"),
                          ("ioServicedRecursive", "io_serviced_recursive")):
            entries = _blkio_entries(read_or_none(f"{blkio}/blkio.{name}"))
            if not entries:  # no CFQ/BFQ accounting: the throttle layer counts too
                entries = _blkio_entries(read_or_none(f"{blkio}/blkio.throttle.{name}"))
            if entries:
                found[key] = entries
        stats["blkio"] = found
    hugetlb = _dir(cgroup, "hugetlb")
    if hugetlb:
        for size in _page_sizes(hugetlb):
            p = f"{hugetlb}/hugetlb.{size}."
            stats["hugetlb"][size] = _omit_zero({
                "usage": _int(p + "usage_in_bytes"), "max": _int(p + "max_usage_in_bytes"),
                "failcnt": _int(p + "failcnt")}, keep=("failcnt",))
    return stats


def _blkio_entries(text: str | None) -> list[dict]:
    """"8:0 Read 4096" lines; the trailing "Total N" line is the sum, not an entry."""
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        out.append(_omit_zero({"major": int(major), "minor": int(minor), "op": parts[1],
                               "value": int(parts[2])}))
    return out


# ---- v2 ------------------------------------------------------------------------------------


def _v2(cgroup: Cgroup) -> dict:
    stats = empty()
    d = cgroup.paths[UNIFIED]
    cpu = _keyed(d + "/cpu.stat")
    usage = stats["cpu"]["usage"]
    usage["kernel"] = cpu.get("system_usec", 0) * 1000
    usage["user"] = cpu.get("user_usec", 0) * 1000
    if cpu.get("usage_usec"):
        usage["total"] = cpu["usage_usec"] * 1000
    stats["cpu"]["usage"] = _cpu_usage(usage)
    stats["cpu"]["throttling"] = _omit_zero({
        "periods": cpu.get("nr_periods", 0), "throttled_periods": cpu.get("nr_throttled", 0),
        "throttled_time": cpu.get("throttled_usec", 0) * 1000})
    cpus = read_or_none(d + "/cpuset.cpus.effective")
    if cpus is not None:
        stats["cpuset"] = _cpuset({
            "cpus": _list(cpus), "mems": _list(read_or_none(d + "/cpuset.mems.effective"))})
    if os.path.exists(d + "/memory.current"):
        m = stats["memory"]
        raw = _keyed(d + "/memory.stat")
        events = _keyed(d + "/memory.events")
        current, limit = _int(d + "/memory.current"), _int(d + "/memory.max")
        m["cache"] = raw.get("file", 0)
        m["usage"] = _entry(current, _int(d + "/memory.peak"), limit, events.get("max", 0))
        if os.path.exists(d + "/memory.swap.current"):
            # runc reports memory+swap here, as v1's memsw did.
            swap_limit = _int(d + "/memory.swap.max")
            both = MAX_U64 if MAX_U64 in (swap_limit, limit) else swap_limit + limit
            m["swap"] = _entry(_int(d + "/memory.swap.current") + current,
                               _int(d + "/memory.swap.peak"), both,
                               _keyed(d + "/memory.swap.events").get("max", 0))
        m["raw"] = raw
        stats["memory"] = _memory(m)
    if os.path.exists(d + "/pids.current"):
        limit = _int(d + "/pids.max")
        stats["pids"] = _omit_zero({"current": _int(d + "/pids.current"),
                                    "limit": 0 if limit == MAX_U64 else limit})
    io = read_or_none(d + "/io.stat")
    if io:
        served_bytes, served = [], []
        for line in io.splitlines():
            parts = line.split()
            if not parts or ":" not in parts[0]:
                continue
            major, _, minor = parts[0].partition(":")
            values = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            for target, fields in ((served_bytes, ("rbytes", "wbytes")),
                                   (served, ("rios", "wios"))):
                for op, field in zip(("Read", "Write"), fields):
                    if field in values:
                        target.append(_omit_zero({"major": int(major), "minor": int(minor),
                                                  "op": op, "value": int(values[field])}))
        stats["blkio"] = _omit_zero({"ioServiceBytesRecursive": served_bytes,
                                     "ioServicedRecursive": served})
    for size in _page_sizes(d):
        p = f"{d}/hugetlb.{size}."
        stats["hugetlb"][size] = _omit_zero({
            "usage": _int(p + "current"), "max": 0,
            "failcnt": _keyed(p + "events").get("max", 0)}, keep=("failcnt",))
    return stats


def read(cgroup: Cgroup) -> dict:
    """The container's stats (types.Stats as JSON-ready dicts)."""
    return _v2(cgroup) if cgroup.mode == "v2" else _v1(cgroup)
