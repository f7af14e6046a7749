"""One container's cgroup across every hierarchy the host mounts (v1, hybrid or v2)."""

from __future__ import annotations

import errno
import os
import time

from ..errors import CgroupError, ConfigError, NotSupportedError
from .files import fail, read, read_or_none, read_raw, write, write_each
from .hierarchy import UNIFIED, Layout, resolve, split_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..oci.config import DeviceRule

SIGKILL = 9  # os/signal constants without importing signal (enum) on the CLI path
_MKDIR_ATTEMPTS = 20
_KILL_TIMEOUT = 5.0
_RMDIR_TIMEOUT = 2.0


def _populated_dir(path: str) -> bool:
    try:
        return bool(read_raw(path + "/cgroup.procs").strip())
    except FileNotFoundError:
        return False
    except OSError as e:
        raise fail("read", path + "/cgroup.procs", e) from None


def _mkdirs(top: str, parts: list[str]) -> list[str]:
    """mkdir -p ``top/parts...``; returns the directories this call made, outermost first.

    A concurrent destroy of a sibling may rmdir an (empty) shared parent between our EEXIST
    on it and our mkdir below it; that shows up as ENOENT and we redo the walk.
    """
    made: list[str] = []
    for attempt in range(_MKDIR_ATTEMPTS):
        path = top
        try:
            for part in parts:
                path += "/" + part
                try:
                    os.mkdir(path, 0o755)
                    made.append(path)
                except FileExistsError:
                    pass
            return list(dict.fromkeys(made))
        except OSError as e:
            if e.errno != errno.ENOENT or path == top + "/" + parts[0] \
                    or attempt == _MKDIR_ATTEMPTS - 1:
                raise fail("mkdir", path, e) from None
    raise AssertionError("unreachable")


def _rmdir(path: str, patient: bool) -> None:
    """rmdir that ignores a missing dir; if ``patient``, waits out EBUSY while the last
    tasks exit (cgroupfs also says EBUSY, not ENOTEMPTY, for a dir with child cgroups)."""
    deadline = time.monotonic() + _RMDIR_TIMEOUT
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY) and not patient:
                return
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise fail("rmdir", path, e) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _rmdir_now(path: str) -> bool:
    """One rmdir attempt: True when ``path`` is gone (removed, or missing)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _subdirs(path: str) -> list[str]:
    """Child cgroups of ``path``, deepest first (the order rmdir needs)."""
    found = []
    try:
        with os.scandir(path) as it:
            entries = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        found += _subdirs(entry)
        found.append(entry)
    return found


def _procs(path: str) -> list[int]:
    """Pids in ``path`` and below; v1 cgroup.procs may repeat or disorder entries."""
    pids = set()
    for d in [path] + _subdirs(path):
        try:
            pids.update(int(line) for line in read_raw(d + "/cgroup.procs").split())
        except FileNotFoundError:
            if d == path:
                return []
        except OSError as e:
            raise fail("read", d + "/cgroup.procs", e) from None
    return sorted(pids)


def device_rule_line(rule: DeviceRule) -> str:
    """A ``DeviceRule`` as one v1 devices.allow/deny line, e.g. ``c 1:3 rwm``."""
    if rule.type not in ("a", "c", "b"):
        raise ConfigError("linux.resources.devices", f"type {rule.type!r} is not a, b or c")
    if not rule.access or rule.access.strip("rwm"):
        raise ConfigError("linux.resources.devices",
                          f"access {rule.access!r} is not a combination of r, w, m")
    major = "*" if rule.major is None or rule.major < 0 else str(rule.major)
    minor = "*" if rule.minor is None or rule.minor < 0 else str(rule.minor)
    return f"{rule.type} {major}:{minor} {rule.access}"


_CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")
_cpusets: dict[str, tuple[str, str]] = {}  # ancestor cpuset dir -> (cpus, mems) it holds


def _remember_cpuset(path: str, values: tuple[str, str]) -> None:
    if len(_cpusets) > 256:
        _cpusets.clear()
    _cpusets[path] = values


class Cgroup:
    """A container's cgroup: its directory in each hierarchy, and what to remove later.

    ``prune`` lists, per hierarchy, ancestor directories to rmdir when they are empty at
    destroy time: those create() made, and the default parent (shared by every container
    that gave no cgroupsPath, so the last one out removes it whoever made it).

    ``unit`` (the systemd driver, ``--systemd-cgroup``): the transient scope that owns the
    cgroup, ``{"name": "corral-x.scope", "slice": "system.slice", "cgroup": "/system.slice/
    corral-x.scope"}``.  Its directories are made beforehand (the launcher joins the init
    to them), systemd adopts them when the scope starts with the init's pid
    (``systemd_scope``), and destroy stops the unit before removing what is left; the
    slices are systemd's, never pruned.
    """

    __slots__ = ("mode", "path", "paths", "mounts", "prune", "unit")

    def __init__(self, mode: str, path: str, paths: dict[str, str], mounts: dict[str, str],
                 prune: dict[str, list[str]] | None = None,
                 unit: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.path = path
        self.paths = paths
        self.mounts = mounts
        self.prune = prune or {k: [] for k in paths}
        self.unit = unit

    @classmethod
    def for_container(cls, layout: Layout, cgroups_path: str | None, container_id: str,
                      default_parent: str = "corral", *,
                      proc_self_cgroup: str = "/proc/self/cgroup",
                      controllers: frozenset[str] | None = None,
                      systemd: bool = False) -> Cgroup:
        """``controllers``: only the hierarchies holding one of these (``unified`` for the
        cgroup2 one); all by default, as runc makes them for an OCI bundle.  ``systemd``:
        the cgroupsPath is ``slice:prefix:name`` (``systemd_units``), the cgroup a scope's."""
        if systemd:
            return cls._for_scope(layout, cgroups_path, container_id, controllers)
        parent = split_path(default_parent, "default cgroup parent")
        if not parent:
            raise ConfigError("default cgroup parent", "must not be empty")
        paths = resolve(layout, cgroups_path, container_id, "/".join(parent),
                        proc_self_cgroup)
        mounts = layout.hierarchies()
        if controllers is not None:
            keep = [k for k in paths if controllers & set(k.split(","))]
            paths = {k: paths[k] for k in keep}
            mounts = {k: mounts[k] for k in keep}
        prune: dict[str, list[str]] = {k: [] for k in paths}
        if not cgroups_path:
            for key, point in mounts.items():
                top = point.rstrip("/")
                prune[key] = [top + "/" + "/".join(parent[:i + 1])
                              for i in range(len(parent))]
        shown = cgroups_path or f"/{'/'.join(parent)}/{container_id}"
        return cls(layout.mode, shown, paths, mounts, prune)

    @classmethod
    def _for_scope(cls, layout: Layout, cgroups_path: str | None, container_id: str,
                   controllers: frozenset[str] | None) -> Cgroup:
        """The scope's cgroup sits at the same path in every hierarchy, from systemd's root
        (this process is taken to share systemd's view: the unit's ControlGroup, read once
        it started, is checked against it)."""
        from .systemd_units import parse_path

        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ConfigError("id", f"{container_id!r} is not a valid container id")
        unit = parse_path(cgroups_path, container_id)
        relative = unit.cgroup()
        mounts = layout.hierarchies()
        if controllers is not None:
            mounts = {k: v for k, v in mounts.items() if controllers & set(k.split(","))}
        paths = {k: point.rstrip("/") + relative for k, point in mounts.items()}
        shown = cgroups_path or f"{unit.slice}:{unit.prefix}:{unit.name}"
        return cls(layout.mode, shown, paths, mounts, None,
                   {"name": unit.unit, "slice": unit.slice, "cgroup": relative})

    # -- state file ----------------------------------------------------------------------

    def to_json(self) -> dict:
        data = {"mode": self.mode, "path": self.path, "paths": dict(self.paths),
                "mounts": dict(self.mounts),
                "prune": {k: list(v) for k, v in self.prune.items()}}
        if self.unit is not None:
            data["systemd"] = dict(self.unit)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Cgroup:
        return cls(data["mode"], data["path"], dict(data["paths"]), dict(data["mounts"]),
                   {k: list(v) for k, v in data.get("prune", {}).items()},
                   dict(data["systemd"]) if data.get("systemd") else None)

    def __repr__(self) -> str:
        return f"Cgroup({self.mode}, {self.path!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def refuse_reuse(self) -> None:
        """Refuses a cgroup that already exists and holds processes (as runc 1.2 does: they
        are not this container's, and deleting the container would kill them) or is frozen
        (the container's process could never run: runc refuses it too).  Called before
        anything is made; ``create`` checks for processes again, as it makes the cgroup."""
        for key, path in self.paths.items():
            if not os.path.isdir(path):
                continue
            if _populated_dir(path):
                raise ConfigError("linux.cgroupsPath",
                                  f"cgroup {path} already exists and is not empty")
            if key == UNIFIED:
                state, frozen = read_or_none(path + "/cgroup.freeze"), "1"
            elif "freezer" in key.split(","):
                state, frozen = read_or_none(path + "/freezer.state"), "FROZEN"
            else:
                continue
            if state is not None and state.strip() in (frozen, "FREEZING"):
                raise ConfigError("linux.cgroupsPath",
                                  f"cgroup {path} already exists and is frozen")

    def create(self) -> None:
        """Make the directories; on failure remove those this call made (never a directory
        that was there before: it may hold someone's processes), so nothing leaks.

        A cgroup that already holds processes is refused (``refuse_reuse``).  The leaf is
        made first, its parents only when they are missing: most containers' parents
        exist."""
        made_here: list[str] = []
        try:
            for key, path in self.paths.items():
                top = self.mounts[key].rstrip("/")
                try:
                    os.mkdir(path, 0o755)
                    made = [path]
                except FileExistsError:
                    if _populated_dir(path):
                        raise ConfigError("linux.cgroupsPath",
                                          f"cgroup {path} already exists and is not empty") from None
                    made = []
                except FileNotFoundError:
                    made = _mkdirs(top, split_path(path[len(top):]))
                except OSError as e:
                    raise fail("mkdir", path, e) from None
                made_here += made
                leafless = [d for d in made if d != path]
                if leafless and self.unit is None:  # a scope's slices are systemd's
                    have = self.prune.setdefault(key, [])
                    have += [d for d in leafless if d not in have]
                if "cpuset" in key.split(","):
                    try:
                        self._fill_cpuset(top, path, fresh=path in made)
                    except CgroupError:
                        _cpusets.clear()  # an ancestor changed since we looked: look again
                        self._fill_cpuset(top, path)
        except BaseException:
            for path in reversed(made_here):  # empty: just made, and not joined yet
                _rmdir_now(path)
            raise

    @staticmethod
    def _fill_cpuset(top: str, leaf: str, fresh: bool = False) -> None:
        """v1 cpuset starts empty, and a task can't join a cpuset with no cpus or mems
        (ENOSPC): copy them down from the parent into every empty level, like runc. Only
        empty values are written, so racing sibling creates write the same thing.  An
        ancestor once seen filled is not read again (its values are cached); a ``fresh``
        leaf (just made) is empty, and written without reading it first."""
        parent = top
        parts = split_path(leaf[len(top):])
        for i, part in enumerate(parts):
            here = parent + "/" + part
            last = i == len(parts) - 1
            if not last and here in _cpusets:
                parent = here
                continue
            inherited = _cpusets.get(parent)
            if inherited is None:
                inherited = tuple(read(f"{parent}/{name}").strip() for name in _CPUSET_FILES)
                if all(inherited):
                    _remember_cpuset(parent, inherited)
            values = []
            for name, value in zip(_CPUSET_FILES, inherited):
                own = "" if (last and fresh) else read(f"{here}/{name}").strip()
                if value and not own:
                    write(f"{here}/{name}", value)
                    own = value
                values.append(own)
            if not last and all(values):
                _remember_cpuset(here, tuple(values))
            parent = here

    def add(self, pid: int) -> None:
        for key, path in self.paths.items():
            write(path + "/cgroup.procs", str(pid))

    def _primary(self) -> str:
        """The directory whose cgroup.procs tells who is in the container: the unified
        one when mounted (every task is in exactly one cgroup2 cgroup), else pids or
        freezer, which always exist with the container."""
        if UNIFIED in self.paths:
            return self.paths[UNIFIED]
        for want in ("pids", "freezer"):
            for key in self.paths:
                if want in key.split(","):
                    return self.paths[key]
        return next(iter(self.paths.values()))

    def pids(self) -> list[int]:
        return _procs(self._primary())

    def populated(self) -> bool:
        """Whether any task is left; cgroup.events says so without listing (v2)."""
        if UNIFIED in self.paths:
            try:
                for line in read_raw(self.paths[UNIFIED] + "/cgroup.events").splitlines():
                    if line.startswith("populated "):
                        return line.split()[1] != "0"
            except FileNotFoundError:
                return False
            except OSError as e:
                raise fail("read", self.paths[UNIFIED] + "/cgroup.events", e) from None
        return bool(self.pids())

    def kill_all(self, sig: int, timeout: float = _KILL_TIMEOUT) -> bool:
        """Signal every task. For SIGKILL, keep killing (tasks may fork meanwhile) until the
        cgroup is empty or ``timeout`` passes; returns whether it emptied. Zombies don't
        count: the kernel drops tasks from the cgroup when they exit, not when reaped."""
        kill_file = self.paths.get(UNIFIED, "") + "/cgroup.kill"
        use_kill_file = sig == SIGKILL and UNIFIED in self.paths and os.path.exists(kill_file)
        deadline = time.monotonic() + timeout
        delay = 0.001
        if sig == SIGKILL and not self.populated():
            return True  # the common case of `delete`: nothing left to kill, nothing to wait for
        first = True
        while True:
            if use_kill_file:
                try:
                    write(kill_file, "1")
                except CgroupError:
                    if os.path.isdir(self.paths[UNIFIED]):
                        raise
            else:
                for pid in self.pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            if sig != SIGKILL:
                return True
            if first:
                first = False
                # A frozen (paused) task takes SIGKILL only once thawed (v1), as runc does.
                if self.frozen():
                    self.thaw()
            time.sleep(delay)
            if not self.populated():
                return True
            if time.monotonic() > deadline:
                return False
            delay = min(delay * 2, 0.05)

    def set_devices(self, rules: Iterable[DeviceRule]) -> None:
        """Apply ``linux.resources.devices`` in order (runc lists start with a deny-all):
        to the v1 devices files, or, with no v1 devices controller (pure v2), as an eBPF
        device program attached to the unified directory (``corral.cgroups.ebpf``)."""
        rules = list(rules)
        if not rules:
            return
        key = next((k for k in self.paths if "devices" in k.split(",")), None)
        if key is None:
            if UNIFIED not in self.paths:
                raise NotSupportedError("linux.resources.devices without a devices cgroup")
            from .ebpf import apply_device_rules

            apply_device_rules(self.paths[UNIFIED], rules)
            return
        # consecutive rules of one kind through one descriptor, in order
        run: list[str] = []
        kind = None
        for rule in rules:
            name = "devices.allow" if rule.allow else "devices.deny"
            if name != kind and run:
                write_each(f"{self.paths[key]}/{kind}", run)
                run = []
            kind = name
            run.append(device_rule_line(rule))
        if run:
            write_each(f"{self.paths[key]}/{kind}", run)

    # -- freezer (pause / resume) -------------------------------------------------------

    def freeze(self) -> None:
        from .freezer import freeze

        freeze(self)

    def thaw(self) -> None:
        from .freezer import thaw

        thaw(self)

    def frozen(self) -> bool:
        from .freezer import frozen

        return frozen(self)

    def set_resources(self, resources) -> None:
        """``linux.resources`` but devices (``corral.oci.config.Resources``)."""
        from .resources import apply

        apply(self, resources)

    def try_destroy(self) -> bool:
        """One rmdir per directory, never waiting: True when the container's directories
        are gone (the prunable parents too, when empty).  A directory still busy (EBUSY for
        a moment after its last task exited), or with child cgroups, says False: the caller
        tries again, or calls ``destroy``.  A systemd scope says False: stopping it is a
        D-Bus call, for ``destroy``."""
        if self.unit is not None:
            return False
        done = True
        for key, path in self.paths.items():
            if not _rmdir_now(path):
                done = False
                continue
            for d in sorted(self.prune.get(key, ()), key=len, reverse=True):
                if not _rmdir_now(d):
                    break  # another container's (or not empty): left to its last user
        return done

    def destroy(self) -> None:
        """Stop the systemd scope, if any (systemd removes the directories it made), then
        remove child cgroups, the container's dirs, then the prunable parents that are
        empty. Tries every hierarchy and raises the first failure afterwards."""
        if self.unit is not None:
            from . import systemd_blocking, systemd_scope

            systemd_blocking.run(systemd_scope.stop(self))
        self.remove_dirs()

    def remove_dirs(self) -> None:
        """destroy() but the systemd unit: what a stopped (or never started) scope leaves."""
        first: CgroupError | None = None
        for key, path in self.paths.items():
            try:
                # Most containers have no child cgroups: try the leaf alone first, and walk
                # the tree (a scandir per directory) only when that does not do it.
                if not _rmdir_now(path):
                    for d in _subdirs(path) + [path]:
                        _rmdir(d, patient=True)
                for d in sorted(self.prune.get(key, ()), key=len, reverse=True):
                    _rmdir(d, patient=False)
            except CgroupError as e:
                first = first or e
        if first is not None:
            raise first

    # -- the container's own /sys/fs/cgroup ---------------------------------------------

    def mount_sources(self) -> list[tuple[str, str]]:
        """(name under the container's /sys/fs/cgroup, host dir to bind there). Comounts
        keep the host's mount name ("cpu,cpuacct"); the symlinks to it are the caller's."""
        if self.mode == "v2":
            return [("", self.paths[UNIFIED])]
        return [(os.path.basename(self.mounts[k].rstrip("/")), p)
                for k, p in self.paths.items()]
