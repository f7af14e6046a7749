"""Freezing a container's cgroup (``corral pause`` / ``resume``).

v1 (also on a hybrid host, like runc): ``freezer.state`` FROZEN/THAWED; a write of FROZEN can
leave the cgroup FREEZING while tasks keep forking, so it is rewritten until the state reads
FROZEN, thawing now and then, as runc does; if it never gets there it is thawed back and the
error raised. v2: ``cgroup.freeze`` 1/0, done when ``cgroup.events`` says ``frozen 1``.
"""

from __future__ import annotations

import time

from ..errors import CgroupError
from .files import fail, read, read_raw, write
from .hierarchy import UNIFIED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hierarchy import Placement

FREEZE_TIMEOUT = 5.0


def where(cgroup: Placement) -> tuple[str, str]:
    """("v1", freezer dir) or ("v2", unified dir): the v1 freezer wherever one is mounted."""
    if cgroup.mode != "v2":
        for key, path in cgroup.paths.items():
            if key != UNIFIED and "freezer" in key.split(","):
                return "v1", path
    if UNIFIED in cgroup.paths:
        return "v2", cgroup.paths[UNIFIED]
    raise CgroupError("no freezer: this host mounts neither a freezer hierarchy nor cgroup2")


def _v2_frozen_event(path: str) -> bool:
    for line in read(path + "/cgroup.events").splitlines():
        if line.startswith("frozen "):
            return line.split()[1] == "1"
    return False


def freeze(cgroup: Placement, timeout: float = FREEZE_TIMEOUT) -> None:
    kind, path = where(cgroup)
    deadline = time.monotonic() + timeout
    if kind == "v2":
        write(path + "/cgroup.freeze", "1")
        delay = 0.0005
        while not _v2_frozen_event(path):
            if time.monotonic() > deadline:
                write(path + "/cgroup.freeze", "0")
                raise CgroupError(f"{path}: unable to freeze")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return
    state_file = path + "/freezer.state"
    attempt = 0
    while time.monotonic() <= deadline:
        attempt += 1
        if attempt % 50 == 0:  # new tasks keep appearing: thaw, breathe, try again
            write(state_file, "THAWED")
            time.sleep(0.01)
        write(state_file, "FROZEN")
        state = read(state_file).strip()
        if state == "FROZEN":
            return
        if state != "FREEZING":
            raise CgroupError(f"{state_file}: unexpected state {state} after writing FROZEN")
        time.sleep(0.0005 if attempt < 20 else 0.005)
    write(state_file, "THAWED")  # never leave it half-frozen
    raise CgroupError(f"{path}: unable to freeze")


def thaw(cgroup: Placement, timeout: float = FREEZE_TIMEOUT) -> None:
    kind, path = where(cgroup)
    deadline = time.monotonic() + timeout
    if kind == "v2":
        write(path + "/cgroup.freeze", "0")
        while _v2_frozen_event(path):
            if time.monotonic() > deadline:
                raise CgroupError(f"{path}: unable to thaw")
            time.sleep(0.001)
        return
    state_file = path + "/freezer.state"
    while True:
        write(state_file, "THAWED")
        if read(state_file).strip() == "THAWED":
            return
        if time.monotonic() > deadline:
            raise CgroupError(f"{path}: unable to thaw")
        time.sleep(0.001)


def frozen(cgroup: Placement) -> bool:
    """Whether the container's own cgroup is frozen (not merely an ancestor); a cgroup that
    no longer exists is not."""
    kind, path = where(cgroup)
    try:
        if kind == "v2":
            return read_raw(path + "/cgroup.freeze").strip() == "1"
        if read_raw(path + "/freezer.state").strip() == "THAWED":
            return False
        return read_raw(path + "/freezer.self_freezing").strip() == "1"
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise fail("read freezer state of", path, e) from None
