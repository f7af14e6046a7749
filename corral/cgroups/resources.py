"""``linux.resources`` (all but ``devices``) written into a container's cgroup.

Two drivers, chosen by the layout's mode: v1 (also on a hybrid host, whose unified hierarchy
carries no controllers: ``unified`` is refused there, as runc refuses it) writes each
controller's own hierarchy; v2 writes the unified
directory, converting the spec's v1-shaped values as runc does (``convert_*`` below). Every
failure is a ``ConfigError`` naming the field: a value the kernel refuses, or a field this
host's kernel can't honour (its file is missing), never silently skipped, except where runc
and the spec allow it (v2 ``memory.swap.max`` "max"/"0" without swap accounting).

Only ``os`` and corral's own modules: this runs inside ``corral create``.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .files import read_raw, write_raw
from .hierarchy import UNIFIED, split_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..oci.config import Resources
    from .hierarchy import Placement

R = "linux.resources"
_EINVAL = 22


# ---- runc's v1 → v2 conversions (libcontainer/cgroups/utils.go) ----------------------------


def convert_cpu_shares(shares: int) -> int:
    """cpu.shares [2, 262144] → cpu.weight [1, 10000]: opencontainers/cgroups' current
    quadratic fit (runc#4785) through min → 1, default 1024 → 100, max → 10000; 0 is unset."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    import math

    log = math.log2(shares)
    exponent = (log * log + 125 * log) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10 ** exponent))


def convert_memory_swap(swap: int, memory: int, field: str = f"{R}.memory.swap") -> int:
    """The spec's memory+swap limit → v2 memory.swap.max (swap alone); -1 max, 0 unset."""
    if memory == -1 and swap == 0:
        return -1  # unlimited memory and no swap given: both unlimited, as on v1
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise ConfigError(field, "a swap limit needs a memory limit")
    if swap < memory:
        raise ConfigError(field, f"memory+swap limit {swap} is below the memory limit {memory}")
    return swap - memory


def convert_blkio_weight(weight: int) -> int:
    """blkio.weight [10, 1000] → io.weight [1, 10000]; 0 is unset."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def convert_cpu_max(quota: int | None, period: int | None) -> str:
    """cpu.cfs_quota_us + cpu.cfs_period_us → cpu.max "QUOTA PERIOD" ("" if neither);
    a quota of -1 (or none) is "max", a missing period keeps the kernel's."""
    quota, period = quota or 0, period or 0
    if quota == 0 and period == 0:
        return ""
    text = str(quota) if quota > 0 else "max"
    return f"{text} {period}" if period else text


def _limit_text(value: int) -> str:
    return "max" if value == -1 else str(value)


# ---- writing --------------------------------------------------------------------------------


def _read(path: str, field: str) -> str:
    try:
        return read_raw(path)
    except OSError as e:
        raise ConfigError(field, f"reading {path}: {os.strerror(e.errno or 0)}") from None


def _exists(directory: str, name: str) -> bool:
    return os.path.exists(f"{directory}/{name}")


def write(directory: str, name: str, value: str, field: str, *,
          tolerate: int = 0) -> bool:
    """One write(2) of ``value`` to ``directory/name``; False if it failed with errno
    ``tolerate`` (the caller retries later). A missing file means this kernel lacks the
    feature."""
    path = f"{directory}/{name}"
    if not os.path.exists(path):
        raise ConfigError(field, f"not supported by this host's kernel ({path} is missing)")
    try:
        write_raw(path, value)
    except OSError as e:
        if tolerate and e.errno == tolerate:
            return False
        raise ConfigError(field, f"{value!r} refused by {name}: "
                                 f"{os.strerror(e.errno or 0)}") from None
    return True


class _Driver:
    def __init__(self, cgroup: Placement) -> None:
        self.cgroup = cgroup

    def dir(self, controller: str, field: str) -> str:
        if self.cgroup.mode == "v2":
            return self.cgroup.paths[UNIFIED]
        for key, path in self.cgroup.paths.items():
            if key != UNIFIED and controller in key.split(","):
                return path
        raise ConfigError(field, f"this host mounts no {controller} cgroup hierarchy")

    def apply(self, res: Resources) -> None:
        if res.memory is not None:
            self.memory(res.memory, f"{R}.memory")
        if res.cpu is not None:
            self.cpu(res.cpu, f"{R}.cpu")
            cpu, field = res.cpu, f"{R}.cpu"
            if cpu.cpus:
                write(self.dir("cpuset", field + ".cpus"), "cpuset.cpus", cpu.cpus,
                      field + ".cpus")
            if cpu.mems:
                write(self.dir("cpuset", field + ".mems"), "cpuset.mems", cpu.mems,
                      field + ".mems")
        if res.pids_limit is not None:
            field = f"{R}.pids.limit"
            value = str(res.pids_limit) if res.pids_limit > 0 else "max"
            write(self.dir("pids", field), "pids.max", value, field)
        if res.block_io is not None:
            self.block_io(res.block_io, f"{R}.blockIO")
        for i, limit in enumerate(res.hugepage_limits):
            self.hugepage(limit, f"{R}.hugepageLimits[{i}]")
        if res.network is not None:
            self.network(res.network, f"{R}.network")

    def hugepage(self, limit, field: str) -> None:
        directory = self.dir("hugetlb", field)
        suffix = "max" if self.cgroup.mode == "v2" else "limit_in_bytes"
        write(directory, f"hugetlb.{limit.page_size}.{suffix}", str(limit.limit),
              field + ".limit")


class V1(_Driver):
    def memory(self, m, field: str) -> None:
        wanted = [m.limit, m.reservation, m.swap, m.swappiness, m.disable_oom_killer]
        if all(v is None for v in wanted):
            return
        d = self.dir("memory", field)
        limit, swap = m.limit or 0, m.swap or 0
        if limit == -1 and swap == 0:
            swap = -1  # runc: unlimited memory means unlimited memory+swap too
        steps = []
        if limit:
            steps.append((field + ".limit", "memory.limit_in_bytes", str(limit)))
        if swap:
            steps.append((field + ".swap", "memory.memsw.limit_in_bytes", str(swap)))
        if limit and swap:
            # memsw may never drop below the memory limit: raising both, memsw goes first.
            current = int(_read(f"{d}/memory.limit_in_bytes", field + ".limit").strip())
            if swap == -1 or current < swap:
                steps.reverse()
        for f, name, value in steps:
            write(d, name, value, f)
        if m.reservation:
            write(d, "memory.soft_limit_in_bytes", str(m.reservation), field + ".reservation")
        if m.swappiness is not None:
            write(d, "memory.swappiness", str(m.swappiness), field + ".swappiness")
        if m.disable_oom_killer:
            write(d, "memory.oom_control", "1", field + ".disableOOMKiller")

    def cpu(self, c, field: str) -> None:
        wanted = [c.shares, c.quota, c.burst, c.period, c.realtime_runtime, c.realtime_period,
                  c.idle]
        if all(v is None for v in wanted):
            return
        d = self.dir("cpu", field)
        if c.realtime_period:
            write(d, "cpu.rt_period_us", str(c.realtime_period), field + ".realtimePeriod")
        if c.realtime_runtime:
            write(d, "cpu.rt_runtime_us", str(c.realtime_runtime), field + ".realtimeRuntime")
        if c.shares:
            write(d, "cpu.shares", str(c.shares), field + ".shares")
            got = _read(f"{d}/cpu.shares", field + ".shares").strip()
            if got != str(c.shares):
                raise ConfigError(field + ".shares", f"the kernel set {got}, not {c.shares}")
        # A shorter period can be refused (EINVAL) until the quota fits it: retry after.
        period_pending = False
        if c.period:
            period_pending = not write(d, "cpu.cfs_period_us", str(c.period), field + ".period",
                                       tolerate=_EINVAL if c.quota else 0)
        # The burst may not exceed the quota: set after it, unless the old burst is what
        # keeps the new quota out (EINVAL), then before it.
        burst_done = False
        if c.quota:
            if not write(d, "cpu.cfs_quota_us", str(c.quota), field + ".quota",
                         tolerate=_EINVAL if c.burst is not None else 0):
                write(d, "cpu.cfs_burst_us", str(c.burst), field + ".burst")
                burst_done = True
                write(d, "cpu.cfs_quota_us", str(c.quota), field + ".quota")
            if period_pending:
                write(d, "cpu.cfs_period_us", str(c.period), field + ".period")
        if c.burst is not None and not burst_done:
            write(d, "cpu.cfs_burst_us", str(c.burst), field + ".burst")
        if c.idle is not None:
            write(d, "cpu.idle", str(c.idle), field + ".idle")

    def block_io(self, b, field: str) -> None:
        d = self.dir("blkio", field)
        bfq = not _exists(d, "blkio.weight") and _exists(d, "blkio.bfq.weight")
        prefix = "blkio.bfq." if bfq else "blkio."
        if b.weight:
            write(d, prefix + "weight", str(b.weight), field + ".weight")
        if b.leaf_weight:
            write(d, "blkio.leaf_weight", str(b.leaf_weight), field + ".leafWeight")
        for i, dev in enumerate(b.weight_device):
            where = f"{field}.weightDevice[{i}]"
            if dev.weight:
                write(d, prefix + "weight_device", f"{dev.major}:{dev.minor} {dev.weight}",
                      where + ".weight")
            if dev.leaf_weight:
                write(d, "blkio.leaf_weight_device",
                      f"{dev.major}:{dev.minor} {dev.leaf_weight}", where + ".leafWeight")
        for key, name, devices in _throttles(b):
            for i, dev in enumerate(devices):
                write(d, f"blkio.throttle.{name}_device", f"{dev.major}:{dev.minor} {dev.rate}",
                      f"{field}.{key}[{i}]")

    def network(self, n, field: str) -> None:
        if n.class_id is not None:
            write(self.dir("net_cls", field + ".classID"), "net_cls.classid", str(n.class_id),
                  field + ".classID")
        for i, prio in enumerate(n.priorities):
            where = f"{field}.priorities[{i}]"
            write(self.dir("net_prio", where), "net_prio.ifpriomap",
                  f"{prio.name} {prio.priority}", where)


def _throttles(b) -> list:
    return [("throttleReadBpsDevice", "read_bps", b.throttle_read_bps_device),
            ("throttleWriteBpsDevice", "write_bps", b.throttle_write_bps_device),
            ("throttleReadIOPSDevice", "read_iops", b.throttle_read_iops_device),
            ("throttleWriteIOPSDevice", "write_iops", b.throttle_write_iops_device)]


_IO_MAX_KEYS = {"read_bps": "rbps", "write_bps": "wbps", "read_iops": "riops",
                "write_iops": "wiops"}


class V2(_Driver):
    def memory(self, m, field: str) -> None:
        if m.swappiness is not None:
            raise ConfigError(field + ".swappiness", "not supported on cgroup v2")
        if m.disable_oom_killer:
            raise ConfigError(field + ".disableOOMKiller", "not supported on cgroup v2")
        d = self.cgroup.paths[UNIFIED]
        limit = m.limit or 0
        swap = convert_memory_swap(m.swap or 0, limit, field + ".swap")
        swap_text = "" if swap == 0 else _limit_text(swap)
        if swap == 0 and (m.swap or 0) > 0:
            swap_text = "0"  # memory+swap equal to memory: no swap at all
        if swap_text:
            if swap_text in ("max", "0") and not _exists(d, "memory.swap.max"):
                pass  # no swap accounting: nothing to lift or to forbid (runc does the same)
            else:
                write(d, "memory.swap.max", swap_text, field + ".swap")
        if limit:
            write(d, "memory.max", _limit_text(limit), field + ".limit")
        if m.reservation:
            write(d, "memory.low", _limit_text(m.reservation), field + ".reservation")

    def cpu(self, c, field: str) -> None:
        if c.realtime_period or c.realtime_runtime:
            which = "realtimePeriod" if c.realtime_period else "realtimeRuntime"
            raise ConfigError(f"{field}.{which}", "not supported on cgroup v2")
        d = self.cgroup.paths[UNIFIED]
        if c.idle is not None:
            write(d, "cpu.idle", str(c.idle), field + ".idle")
        if c.shares:
            write(d, "cpu.weight", str(convert_cpu_shares(c.shares)), field + ".shares")
        cpu_max = convert_cpu_max(c.quota, c.period)
        burst_done = False
        if cpu_max:
            where = field + (".quota" if c.quota else ".period")
            if not write(d, "cpu.max", cpu_max, where,
                         tolerate=_EINVAL if c.burst is not None else 0):
                write(d, "cpu.max.burst", str(c.burst), field + ".burst")  # as on v1
                burst_done = True
                write(d, "cpu.max", cpu_max, where)
        if c.burst is not None and not burst_done:
            write(d, "cpu.max.burst", str(c.burst), field + ".burst")

    def block_io(self, b, field: str) -> None:
        d = self.cgroup.paths[UNIFIED]
        if b.leaf_weight:
            raise ConfigError(field + ".leafWeight", "not supported on cgroup v2")
        bfq = _exists(d, "io.bfq.weight")
        if b.weight:
            if bfq:
                write(d, "io.bfq.weight", str(b.weight), field + ".weight")
            else:
                write(d, "io.weight", str(convert_blkio_weight(b.weight)), field + ".weight")
        for i, dev in enumerate(b.weight_device):
            where = f"{field}.weightDevice[{i}]"
            if dev.leaf_weight:
                raise ConfigError(where + ".leafWeight", "not supported on cgroup v2")
            if dev.weight:
                name, weight = (("io.bfq.weight", dev.weight) if bfq else
                                ("io.weight", convert_blkio_weight(dev.weight)))
                write(d, name, f"{dev.major}:{dev.minor} {weight}", where + ".weight")
        for key, name, devices in _throttles(b):
            for i, dev in enumerate(devices):
                write(d, "io.max", f"{dev.major}:{dev.minor} {_IO_MAX_KEYS[name]}={dev.rate}",
                      f"{field}.{key}[{i}]")

    def network(self, n, field: str) -> None:
        if n.class_id is not None or n.priorities:
            raise ConfigError(field, "not supported on cgroup v2 (no net_cls/net_prio)")


# ---- v2 controllers and the unified map -----------------------------------------------------


def _needed_controllers(res: Resources) -> dict[str, str]:
    """Controller → the field that needs it, for what ``res`` writes on v2."""
    need: dict[str, str] = {}
    m, c, b = res.memory, res.cpu, res.block_io
    if m is not None and (m.limit or m.swap or m.reservation):
        need["memory"] = f"{R}.memory"
    if c is not None and any(v is not None for v in (c.shares, c.quota, c.period, c.burst,
                                                      c.idle)):
        need["cpu"] = f"{R}.cpu"
    if c is not None and (c.cpus or c.mems):
        need["cpuset"] = f"{R}.cpu"
    if res.pids_limit is not None:
        need["pids"] = f"{R}.pids"
    if b is not None and b != type(b)():
        need["io"] = f"{R}.blockIO"
    if res.hugepage_limits:
        need["hugetlb"] = f"{R}.hugepageLimits"
    for key in res.unified:
        controller = key.split(".")[0]
        if controller != "cgroup":
            need.setdefault(controller, _unified_field(key))
    return need


def _unified_field(key: str) -> str:
    from corral import jsonlite as json

    return f"{R}.unified[{json.dumps(key)}]"


def enable_controllers(cgroup: Placement, need: dict[str, str]) -> None:
    """v2: a cgroup has a controller's files only when every ancestor lists it in
    cgroup.subtree_control; enable what ``need`` names from the mount down to the parent."""
    if not need:
        return
    leaf = cgroup.paths[UNIFIED]
    top = cgroup.mounts[UNIFIED].rstrip("/")
    d = top
    for part in split_path(leaf[len(top):]):
        available = _read(f"{d}/cgroup.controllers", R).split()
        enabled = _read(f"{d}/cgroup.subtree_control", R).split()
        for controller, field in need.items():
            if controller in enabled:
                continue
            if controller not in available:
                raise ConfigError(field, f"the {controller} controller is not available "
                                         f"in {d}")
            write(d, "cgroup.subtree_control", "+" + controller, field)
        d += "/" + part


def apply_unified(cgroup: Placement, unified: dict[str, str]) -> None:
    """The spec's raw v2 key → value map, written last (it overrides the typed fields), one
    line per write as runc does; a key whose controller this cgroup lacks is named."""
    if not unified:
        return
    d = cgroup.paths[UNIFIED]
    available = _read(f"{d}/cgroup.controllers", f"{R}.unified").split()
    for key, value in unified.items():
        field = _unified_field(key)
        controller = key.split(".")[0]
        if controller != "cgroup" and controller not in available:
            raise ConfigError(field, f"controller {controller!r} is not enabled in {d}")
        for line in [line for line in value.split("\n") if line] or [value]:
            write(d, key, line, field)


def check_unified(mode: str, res: Resources) -> None:
    """runc's refusal of ``unified`` on a host that is not pure cgroup v2 (where a hybrid
    host's unified hierarchy carries no controllers): before anything is made or written."""
    if res.unified and mode != "v2":
        raise ConfigError(f"{R}.unified", "cannot use unified on cgroup v1")


def apply(cgroup: Placement, res: Resources) -> None:
    """Writes every set field of ``res`` (``linux.resources`` but devices) to ``cgroup``."""
    check_unified(cgroup.mode, res)
    if cgroup.mode == "v2":
        enable_controllers(cgroup, _needed_controllers(res))
        V2(cgroup).apply(res)
    else:
        V1(cgroup).apply(res)
    apply_unified(cgroup, res.unified)
