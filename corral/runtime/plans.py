"""Plans for configs: compiled once per config shape and options, filled per container.

The cache is keyed by what the compiler reads of a config: not the cgroup path, resources,
annotations or the runtime's own hooks (the parent's business), nor the hostname (a slot), so
containers whose configs differ only there share one plan; and a bundle directory is part of
the key only when the plan depends on it (relative paths).
"""

from __future__ import annotations

import os

from corral.plan.compiler import (Plan, PlanOptions, compile_plan, passwd_of, process_env,
                                  slot_values)

_CACHE_MAX = 256
_cache: dict = {}  # (shape of the config, options) -> plan


def plan_for(config, options: PlanOptions) -> Plan:
    if not _needs_bundle(config, options.bundle):
        options = PlanOptions(**{**options.__dict__, "bundle": ""}) if options.bundle else options
    key = (shape(config), options)
    plan = _cache.get(key)
    if plan is None:
        plan = compile_plan(config, options)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = plan
    return plan


def shape(config) -> tuple:
    """What the compiler reads of a config (compiler.py): the key of its plan."""
    linux, hooks = config.linux, config.hooks
    return (config.process, config.root_readonly, config.hostname is None, config.domainname,
            config.mounts, linux.namespaces, linux.uid_mappings, linux.gid_mappings,
            linux.devices, linux.rootfs_propagation, linux.masked_paths, linux.readonly_paths,
            tuple(linux.sysctl.items()), linux.seccomp, tuple(linux.time_offsets.items()),
            linux.personality, linux.mount_label, linux.memory_policy,
            hooks.create_container, hooks.start_container,
            bool(hooks.prestart or hooks.create_runtime), config.oci_version)


def _needs_bundle(config, bundle: str) -> bool:
    """Whether anything in the plan is relative to the bundle directory."""
    if not bundle:
        return False
    seccomp = config.linux.seccomp
    if seccomp is not None and seccomp.listener_path and not seccomp.listener_path.startswith("/"):
        return True
    for mount in config.mounts:
        if mount.source and not mount.source.startswith("/") and mount.type != "overlay":
            if mount.type not in ("tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup",
                                  "cgroup2") or "bind" in mount.options or "rbind" in mount.options:
                return True
        for option in mount.options:
            key, eq, value = option.partition("=")
            if eq and key in ("lowerdir", "upperdir", "workdir") and not value.startswith("/"):
                return True
    return False


def slots(config, extra_env=(), *, fifo: str = "", rootfs: str = "", console: str = "",
          keyring: str = "", cgroup_dirs=(), cgroup_procs=(), passwd: str | None = None) -> dict:
    """One container's values for its plan's slots.  ``passwd``: where the host reaches the
    container's /etc/passwd (for HOME); by default found in the rootfs and its mounts."""
    if passwd is None and rootfs:
        passwd = passwd_of(config, rootfs)
    return slot_values(None, fifo=fifo, console=console, keyring=keyring, rootfs=rootfs,
                       env=process_env(config, extra_env, passwd),
                       hostname=config.hostname or "", cgroup_dirs=list(cgroup_dirs),
                       cgroup_procs=list(cgroup_procs))


def host_pseudo_filesystems(rootfs: str) -> tuple[str, ...]:
    """--no-pivot: the host's full procfs and sysfs mounts, which the init detaches before
    it chroots (with them present the kernel would let the container mount fresh, unmasked
    ones; runc's msMoveRoot).  The rootfs's own are kept."""
    from corral.procfs import mountinfo

    root = os.path.realpath(rootfs).rstrip("/")
    return tuple(point for point, fs_root, fstype in mountinfo()
                 if fstype in ("proc", "sysfs") and fs_root == "/"
                 and not (point == root or point.startswith(root + "/")))
