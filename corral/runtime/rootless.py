"""Rootless containers: what ``prepare`` checks and does when corral itself runs as a non-root
user (effective uid != 0), as runc's rootless mode does.

- The container needs a user namespace (new, or joined by path).  An unprivileged parent may
  write only a single-id map of its own uid (and, after writing ``deny`` to
  ``/proc/<pid>/setgroups``, as the kernel requires, of its own gid).  Anything wider goes
  through the setuid helpers ``newuidmap``/``newgidmap`` (package ``uidmap``), which check
  the ranges ``/etc/subuid`` and ``/etc/subgid`` give the caller; without them the config is
  refused naming ``linux.uidMappings`` / ``linux.gidMappings`` and what the host lacks.
- Cgroups: used only when delegated (every hierarchy's nearest existing ancestor of the
  container's cgroup is writable by the caller).  Otherwise the container runs without one,
  with a warning, as runc does; its record says ``"cgroup": null`` and ``linux.resources``
  limits are refused (device rules are moot: in a user namespace no device node can be made,
  and host nodes are bind-mounted with the host's permissions).
- Mounts an unprivileged user can never make are refused up front, naming ``mounts[i]``: a
  fresh sysfs without a network namespace of the container's own (the kernel requires one;
  ``corral spec --rootless`` binds /sys instead), and ``uid=``/``gid=`` options naming ids
  the user namespace does not map (the ``gid=5`` of a default devpts mount).
"""

from __future__ import annotations

import os
import shutil

from corral.errors import ConfigError, CorralError
from corral.oci.config import id_map_text

NO_CGROUP = "container has no cgroup (rootless without a delegated cgroup)"


def _own_single(mappings, own: int) -> bool:
    return len(mappings) == 1 and mappings[0].host_id == own and mappings[0].size == 1


def _user_name(uid: int) -> str | None:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 2 and parts[2] == str(uid):
                    return parts[0]
    except OSError:
        pass
    return None


def _sub_ranges(path: str, uid: int) -> list[tuple[int, int]]:
    """(first, count) ranges ``/etc/subuid`` or ``/etc/subgid`` grant to uid (by name or
    number)."""
    names = {str(uid), _user_name(uid)}
    found = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names:
                    try:
                        found.append((int(parts[1]), int(parts[2])))
                    except ValueError:
                        continue
    except OSError:
        pass
    return found


def _needs_helper(field: str, mappings, own: int, helper: str, subfile: str) -> None:
    """Refuses a map wider than the caller's own id when the host lacks what writing it
    needs: the setuid helper and a range for the caller in the sub-id file."""
    uid = os.geteuid()
    lacks = []
    if shutil.which(helper) is None:
        lacks.append(f"{helper} (package uidmap) is not installed")
    if not _sub_ranges(subfile, uid):
        lacks.append(f"{subfile} has no range for uid {uid}")
    if lacks:
        kind = "uid" if field.endswith("uidMappings") else "gid"
        raise ConfigError(field, f"rootless (uid {uid}): mapping more than the caller's own "
                          f"{kind} {own} (as a single id) needs {helper} and a range in "
                          f"{subfile}, and this host lacks them: {'; '.join(lacks)}")


def check_config(config) -> None:
    """What a non-root caller can't do at all, refused before anything is made."""
    linux = config.linux
    user = linux.namespace("user")
    uid, gid = os.geteuid(), os.getegid()
    if user is None:
        raise ConfigError("linux.namespaces", f"rootless (corral run as uid {uid}): the "
                          "container needs a user namespace (corral spec --rootless)")
    if user.path is None:
        if not _own_single(linux.uid_mappings, uid):
            _needs_helper("linux.uidMappings", linux.uid_mappings, uid, "newuidmap",
                          "/etc/subuid")
        if not _own_single(linux.gid_mappings, gid):
            _needs_helper("linux.gidMappings", linux.gid_mappings, gid, "newgidmap",
                          "/etc/subgid")
    _check_mounts(config)


def _mapped(mappings, container_id: int) -> bool:
    return any(m.container_id <= container_id < m.container_id + m.size for m in mappings)


def _check_mounts(config) -> None:
    linux = config.linux
    netns = linux.namespace("network")
    user = linux.namespace("user")
    for i, mount in enumerate(config.mounts):
        if mount.type == "sysfs" and (netns is None or netns.path is not None):
            raise ConfigError(f"mounts[{i}]", f"rootless: a sysfs on {mount.destination} "
                              "needs a new network namespace (the kernel refuses it to an "
                              "unprivileged user otherwise); bind /sys instead (type none, "
                              "options rbind, as corral spec --rootless writes)")
        if user is None or user.path is not None:
            continue
        for option in mount.options:
            key, _, value = option.partition("=")
            if key not in ("uid", "gid") or not value.isdigit():
                continue
            maps = linux.uid_mappings if key == "uid" else linux.gid_mappings
            if not _mapped(maps, int(value)):
                field = "linux.uidMappings" if key == "uid" else "linux.gidMappings"
                raise ConfigError(f"mounts[{i}]", f"rootless: option {option} on "
                                  f"{mount.destination} names a {key} that {field} does not "
                                  f"map (drop the option, as corral spec --rootless does)")


def cgroup_delegated(cgroup) -> bool:
    """Whether the caller may make (or use) the container's cgroup in every hierarchy."""
    for path in cgroup.paths.values():
        here = path
        while not os.path.isdir(here):
            parent = os.path.dirname(here)
            if parent == here:
                return False
            here = parent
        if not os.access(here, os.W_OK | os.X_OK):
            return False
        if here == path and not os.access(path + "/cgroup.procs", os.W_OK):
            return False
    return True


def check_no_cgroup(config) -> None:
    if not config.linux.resources.empty():
        raise ConfigError("linux.resources", f"rootless (uid {os.geteuid()}): limits need a "
                          "cgroup, and this host delegates none to this user (the cgroup "
                          "parent is not writable)")


# ---- the id maps, written by the parent (root or not) ---------------------------------------


def write_id_maps(pid: int, uid_mappings, gid_mappings) -> None:
    """The parent's half of a new user namespace, for every parent: root writes any map;
    an unprivileged one writes only a single-id map of its own id and leaves wider maps to
    newgidmap/newuidmap.  gid first: the kernel refuses an unprivileged gid_map until
    setgroups says deny."""
    privileged = os.geteuid() == 0
    _write_map(pid, "gid", gid_mappings, os.getegid(), privileged, "linux.gidMappings")
    _write_map(pid, "uid", uid_mappings, os.geteuid(), privileged, "linux.uidMappings")


def _write_map(pid: int, kind: str, mappings, own: int, privileged: bool, field: str) -> None:
    if not privileged and not _own_single(mappings, own):
        _helper(f"new{kind}map", pid, mappings, field)
        return
    if not privileged and kind == "gid":
        _write(f"/proc/{pid}/setgroups", "deny", field)
    _write(f"/proc/{pid}/{kind}_map", id_map_text(mappings), field)


def _write(path: str, text: str, field: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise ConfigError(field, f"writing {path}: {exc.strerror}") from None


def _helper(name: str, pid: int, mappings, field: str) -> None:
    import subprocess

    argv = [name, str(pid)]
    for m in mappings:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(field, f"rootless: {name}: {exc}") from None
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace").strip().replace("\n", "; ")
        raise ConfigError(field, f"rootless: {' '.join(argv)} exited {proc.returncode}: {out}")


def no_cgroup() -> CorralError:
    return CorralError(NO_CGROUP)
