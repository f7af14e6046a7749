"""Which cgroup hierarchies the host mounts, and where a cgroup path lands in each.

Imported by the CLI on every ``create``: only ``os`` and corral's own errors, no ``re``,
``pathlib`` or ``typing`` at runtime.
"""

from __future__ import annotations

import os

from ..errors import CgroupError, ConfigError
from ..procfs import unescape
from .files import read_raw

TYPE_CHECKING = False  # typing costs ms on the command line's start-up path
if TYPE_CHECKING:
    from typing import Protocol

    class Placement(Protocol):
        """One cgroup's directories: what the freezer and the resource writers need of a
        ``group.Cgroup``, so that they need not import it (group imports them)."""

        mode: str  # "v1", "v2" or "hybrid"
        paths: dict[str, str]  # hierarchy key -> the cgroup's directory in it
        mounts: dict[str, str]  # hierarchy key -> where that hierarchy is mounted
        unit: dict[str, str] | None  # the systemd scope owning the cgroup, if any

UNIFIED = "unified"  # the key of the cgroup2 hierarchy in Layout/Cgroup dicts

# Mount options of a v1 cgroup mount that are not controllers.
_NOT_CONTROLLERS = frozenset(
    ("rw", "ro", "none", "noprefix", "xattr", "clone_children", "cpuset_v2_mode",
     "favordynmods", "nofavordynmods")
)


class Layout:
    """The host's cgroup mounts.

    ``v1`` maps a hierarchy key (its sorted controllers, ``"cpu,cpuacct"``, ``"name=systemd"``)
    to its mount point; ``unified`` is the cgroup2 mount point or None; ``roots`` maps the
    same keys (plus ``"unified"``) to the mount's root inside its hierarchy, which is not
    ``/`` only under a foreign cgroup namespace or a bind mount of a sub-tree.
    """

    __slots__ = ("mode", "v1", "unified", "roots")

    def __init__(self, mode: str, v1: dict[str, str], unified: str | None,
                 roots: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.v1 = v1
        self.unified = unified
        self.roots = roots or {}

    def hierarchies(self) -> dict[str, str]:
        """Key → mount point of every hierarchy a container joins in this mode.

        A pure-v2 host may still mount a named v1 hierarchy (``name=systemd`` for old
        systemd containers); it is not ours to populate there.
        """
        found = {} if self.mode == "v2" else dict(self.v1)
        if self.unified is not None:
            found[UNIFIED] = self.unified
        return found

    def find(self, controller: str) -> str | None:
        """The key of the v1 hierarchy carrying ``controller`` (comounts included)."""
        for key in self.v1:
            if controller in key.split(","):
                return key
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and (
            (self.mode, self.v1, self.unified, self.roots)
            == (other.mode, other.v1, other.unified, other.roots))

    def __repr__(self) -> str:
        return f"Layout(mode={self.mode!r}, v1={self.v1!r}, unified={self.unified!r})"


def _v1_key(super_options: str) -> str:
    names = [o for o in super_options.split(",")
             if o not in _NOT_CONTROLLERS and not o.startswith("release_agent=")]
    return ",".join(sorted(names))


def parse_mountinfo(text: str) -> Layout:
    """Layout from mountinfo text; the first mount of each hierarchy wins (bind mounts of
    the same hierarchy come later in mount order)."""
    v1: dict[str, str] = {}
    roots: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        if " - cgroup" not in line:
            continue
        fields = line.split(" ")
        sep = fields.index("-", 6)
        fstype, root, point = fields[sep + 1], unescape(fields[3]), unescape(fields[4])
        if fstype == "cgroup2" and unified is None:
            unified, roots[UNIFIED] = point, root
        elif fstype == "cgroup":
            key = _v1_key(fields[sep + 3] if len(fields) > sep + 3 else "")
            if key and key not in v1:
                v1[key], roots[key] = point, root
    controllers = any(not k.startswith("name=") for k in v1)
    if unified is None and not v1:
        raise CgroupError("no cgroup or cgroup2 mount in mountinfo")
    if unified is None:
        mode = "v1"
    else:
        mode = "hybrid" if controllers else "v2"
    return Layout(mode, v1, unified, roots)


def detect(mountinfo: str = "/proc/self/mountinfo") -> Layout:
    """The cgroup layout this process sees."""
    try:
        text = read_raw(mountinfo)
    except OSError as e:
        raise CgroupError(f"read {mountinfo}: {e.strerror}") from None
    # A supervisor asks once per container, and the table rarely changes: the last parse is
    # reused while the text is the same (read each time, so a change is seen at once).
    if _last_layout is not None and _last_layout[0] == text:
        return _last_layout[1]
    layout = parse_mountinfo(text)
    globals()["_last_layout"] = (text, layout)
    return layout


_last_layout: tuple[str, Layout] | None = None


def own_cgroups(proc_self_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """Hierarchy key (same sorting as Layout) → this process's cgroup path in it."""
    try:
        with open(proc_self_cgroup) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CgroupError(f"read {proc_self_cgroup}: {e.strerror}") from None
    found = {}
    for line in lines:
        hid, names, path = line.split(":", 2)
        if hid == "0" and not names:
            found[UNIFIED] = path
        elif names:
            found[",".join(sorted(names.split(",")))] = path
    return found


def split_path(path: str, field: str = "linux.cgroupsPath") -> list[str]:
    """Components of a cgroup path; ``..`` is refused rather than resolved, so no path
    can climb out of the cgroup it is relative to."""
    if "\0" in path:
        raise ConfigError(field, f"{path!r} contains a NUL byte")
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise ConfigError(field, f"{path!r} must not contain '..'")
    return parts


def resolve(layout: Layout, cgroups_path: str | None, container_id: str,
            default_parent: str = "corral",
            proc_self_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """Key → host directory of the container's cgroup in every hierarchy, as runc does:
    absolute paths are taken from each hierarchy's (visible) root, relative ones from this
    process's own cgroup there, None means ``/<default_parent>/<id>``."""
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise ConfigError("id", f"{container_id!r} is not a valid container id")
    if not cgroups_path:
        cgroups_path = f"/{default_parent}/{container_id}"
    elif cgroups_path[0] != "/" and cgroups_path.count(":") == 2:
        raise ConfigError("linux.cgroupsPath", f"{cgroups_path!r} is a systemd "
                                               f"slice:prefix:name path: it needs "
                                               f"--systemd-cgroup")
    parts = split_path(cgroups_path)
    own = None if cgroups_path[0] == "/" else own_cgroups(proc_self_cgroup)
    dirs = {}
    for key, point in layout.hierarchies().items():
        base = [] if own is None else _own_base(layout, key, own)
        full = base + parts
        if not full:
            raise ConfigError("linux.cgroupsPath",
                              f"{cgroups_path!r} resolves to the root cgroup of {point}")
        dirs[key] = point.rstrip("/") + "/" + "/".join(full)
    return dirs


def _own_base(layout: Layout, key: str, own: dict[str, str]) -> list[str]:
    """This process's cgroup in hierarchy ``key``, relative to that hierarchy's mount."""
    if key not in own:
        raise ConfigError("linux.cgroupsPath",
                          f"relative path, but this process is in no cgroup of {key}")
    path = own[key]
    root = layout.roots.get(key, "/").rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        raise ConfigError("linux.cgroupsPath",
                          f"own cgroup {path} of {key} lies outside its mount (root {root})")
    return split_path(path[len(root):])
