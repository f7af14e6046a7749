"""A validated config compiled into a plan: every decision about a container's processes,
made here, in Python, once per config; the executor (``corral/nsenter/executor.c``) only
carries the steps out.

    launcher (the runtime's view):  not dumpable -> oom score, first cpus -> exec fifo,
        console and seccomp agent sockets -> idmapped and bind-mount sources (host
        privileges) -> time namespace -> join namespaces by path (user first) -> clone the
        init in every new namespace (CLONE_PARENT), report its pid, exit
    init:  [id maps written] -> session, root of its user namespace -> loopback, hostname
        -> the rootfs: / private, the rootfs bound, config.mounts in order, /dev ->
        [HooksDue .. HooksDone, createContainer hooks] -> pivot_root (chroot without a mount
        namespace) -> sysctl -> read-only /dev, read-only and masked paths, read-only root,
        the asked propagation -> rlimits -> cwd -> the executable
        -> terminal -> Ready .. Run -> umask, scheduler, I/O priority, cpus, LSM labels,
        memory policy, personality -> cgroup namespace, keyring, bounding set, user,
        capabilities, no_new_privs -> close-on-exec -> Waiting -> exec fifo -> signal
        defaults -> seccomp -> startContainer hooks -> exec

``corral exec`` compiles the same way without the rootfs: the launcher joins every namespace
of the container's init, the process waits for the parent to hang up instead of the fifo.

Per-container values are slots (``SLOTS``), so a template serves every container of a config:
``fill(plan, values)`` gives the plan's frame.
"""

from __future__ import annotations

import os

from corral.errors import ConfigError
from corral.oci.capabilities import caps_mask
from corral.plan import format as f
from corral.plan import mounts as m
from corral.plan.format import Slot, Template
from corral.record import Record

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NS_FLAGS = {"pid": CLONE_NEWPID, "network": CLONE_NEWNET, "mount": CLONE_NEWNS,
            "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "user": CLONE_NEWUSER,
            "cgroup": CLONE_NEWCGROUP, "time": CLONE_NEWTIME}

O_WRONLY = 0o1
O_NOFOLLOW = 0o400000
O_PATH = 0o10000000
O_DIRECTORY = 0o200000
AT_RECURSIVE = 0x8000

CREATE_NONE, CREATE_DIR, CREATE_FILE, CREATE_LIKE = range(4)
NO_REG = -1

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ROOT_PROPAGATION = m.MS_REC | m.MS_PRIVATE

# The only paths under /proc that may be mounted over (lxcfs-style); anything else could
# hide the kernel's own protections (runc's checkProcMount, CVE-2019-16884).
PROC_OVERRIDES = ("/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat",
                  "/proc/swaps", "/proc/uptime", "/proc/loadavg", "/proc/slabinfo",
                  "/proc/net/dev", "/proc/sys/kernel/ns_last_pid")

# The devices every container gets when it has its own /dev: (name, major, minor).
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                   ("urandom", 1, 9), ("tty", 5, 0))
DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
_DEVICE_TYPES = {"c": 0o020000, "u": 0o020000, "b": 0o060000, "p": 0o010000}

#: Filesystems that take linux.mountLabel as their context= option (SELinux hosts only).
LABELLED_TYPES = frozenset({"tmpfs", "devpts", "mqueue"})

# Blob registers: what the parent's messages carry.
BLOB_CREATE_STATE, BLOB_START_STATE, BLOB_LISTENER_STATE = 0, 1, 2

#: Per-container values of a template (``fill``): the exec fifo, the console socket, the
#: session keyring's name, the rootfs, the process's env (with HOME from the container's
#: passwd), the hostname, and ``cgroup0``.. for the host directories of a cgroup mount.
SLOTS = ("fifo", "console", "keyring", "rootfs", "env", "hostname")


class PlanOptions(Record):
    """How a config runs here.  ``bundle``: relative bind sources and the seccomp agent's
    path are relative to it; ``cgroup_mounts``: the names under a ``cgroup`` mount of the
    host cgroup directories bound there ("" alone: the one cgroup2 directory)."""

    bundle: str = ""
    exec: bool = False
    exec_join: tuple[tuple[int, str], ...] = ()  # exec: every namespace of the init
    no_pivot: bool = False
    preserve_fds: int = 0
    extra_env: tuple[str, ...] = ()
    console: bool = False
    keyring: bool = True
    rootless: bool = False
    cgroup_mounts: tuple[str, ...] = ()
    cgroup_procs: int = 0  # the launcher joins the init to this many cgroups (slots procs0..)
    hide_on_move: tuple[str, ...] = ()  # --no-pivot: the host's procfs and sysfs mounts


class PlanInfo(Record):
    """What the parent's creation machine needs to know of a plan."""

    new_user: bool = False
    create_hooks: bool = False
    exec: bool = False
    start_hooks: bool = False
    listener: bool = False
    listener_metadata: str | None = None
    joins_cgroup: bool = False  # the launcher joins the init to its cgroup, not the parent


class Plan(Record):
    template: Template
    info: PlanInfo


class _Regs:
    """Descriptor registers of the executor: numbers handed out and given back."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0

    def take(self) -> int:
        if self._free:
            return self._free.pop()
        if self._next >= f.REGS:
            raise ConfigError("mounts", f"the plan needs more than {f.REGS} descriptors")
        self._next += 1
        return self._next - 1

    def give(self, t: Template, *regs: int) -> None:
        for reg in regs:
            t.add("CLOSE", reg)
            self._free.append(reg)


def compile_plan(config, options: PlanOptions) -> Plan:
    """The plan of ``config`` (validated by ``corral.oci.config``) with ``options``.
    Raises ``ConfigError`` naming the field for what the plan cannot do."""
    return _Compiler(config, options).compile()


class _Compiler:
    def __init__(self, config, options: PlanOptions) -> None:
        self.config = config
        self.o = options
        self.t = Template()
        self.regs = _Regs()
        linux = config.linux
        self.new_user = (not options.exec and linux.namespace("user") is not None
                         and linux.namespace("user").path is None)
        self.in_user = (linux.namespace("user") is not None) if not options.exec else any(
            flag == CLONE_NEWUSER for flag, _ in options.exec_join)
        self.join_gate = NO_REG  # read by JOINED, once, before the hooks or Ready

    # ---- the whole ---------------------------------------------------------------------

    def compile(self) -> Plan:
        c, t = self.config, self.t
        hooks = c.hooks
        create_hooks = not self.o.exec and bool(hooks.prestart or hooks.create_runtime
                                                or hooks.create_container)
        start_hooks = not self.o.exec and bool(hooks.start_container)
        listener = c.linux.seccomp is not None and c.linux.seccomp.notifies
        seccomp = self._seccomp()
        regs = self._launcher(listener)
        self._init_start()
        if not self.o.exec:
            self._rootfs(regs, create_hooks)
        self._process(regs, seccomp, start_hooks)
        info = PlanInfo(new_user=self.new_user, create_hooks=create_hooks, exec=self.o.exec,
                        start_hooks=start_hooks, listener=listener,
                        listener_metadata=c.linux.seccomp.listener_metadata if listener else None,
                        joins_cgroup=self.o.cgroup_procs > 0)
        return Plan(t, info)

    def _seccomp(self):
        if self.config.linux.seccomp is None:
            return None
        from corral.plan.seccomp import compile_filter

        return compile_filter(self.config.linux.seccomp)

    # ---- the launcher ------------------------------------------------------------------

    def _launcher(self, listener: bool) -> dict:
        """Steps in the runtime's namespaces, with its credentials; the registers they fill."""
        c, t, o = self.config, self.t, self.o
        proc, linux = c.process, c.linux
        regs: dict = {"binds": {}}
        # A non-dumpable process's /proc/self files are root's: a non-root runtime writes
        # its oom score first (nothing of the container exists yet to see it dumpable).
        oom = None if proc.oom_score_adj is None else (
            "/proc/self/oom_score_adj", 0, str(proc.oom_score_adj).encode(), "process.oomScoreAdj")
        if oom and o.rootless:
            t.add("WRITE", *oom)
        t.add("DUMPABLE", 0)
        if oom and not o.rootless:
            t.add("WRITE", *oom)
        affinity = proc.exec_cpu_affinity
        if affinity is not None and affinity.initial is not None:
            t.add("AFFINITY", _cpu_mask(affinity.initial),
                  f"process.execCPUAffinity.initial: sched_setaffinity({affinity.initial})")
        if not o.exec:
            regs["fifo"] = self.regs.take()
            t.add("OPEN", regs["fifo"], Slot("fifo"), O_PATH, 0, "open the exec fifo")
        if o.console:
            regs["console"] = self.regs.take()
            t.add("CONNECT", regs["console"], Slot("console"), "--console-socket: connect")
        if listener:
            path = os.path.join(o.bundle, linux.seccomp.listener_path)
            regs["listener"] = self.regs.take()
            t.add("CONNECT", regs["listener"], path,
                  f"linux.seccomp.listenerPath: connect to the seccomp agent at {path}")
        if not o.exec:
            self._mount_sources(regs["binds"])
        # the init's cgroup.procs, opened with our credentials and the host's view (before
        # any namespace is joined): the launcher writes the init's pid there while the init
        # works, so the parent's loop never waits on a migration
        joins = []
        for k in range(o.cgroup_procs):
            reg = self.regs.take()
            t.add("OPEN", reg, Slot(f"procs{k}"), O_WRONLY, 0, "join the container's cgroup")
            joins.append(reg)
        if joins:
            self.join_gate = self.regs.take()
        if o.exec:
            join = list(o.exec_join)
        else:
            join = [(NS_FLAGS[ns.type], ns.path) for ns in linux.namespaces if ns.path]
        time_fd = None
        new_time = (not o.exec and linux.namespace("time") is not None
                    and linux.namespace("time").path is None)
        if new_time and linux.time_offsets:
            # opened with our credentials, before any namespace: the write is checked
            # against the opener's capabilities
            time_fd = self.regs.take()
            t.add("OPEN", time_fd, "/proc/self/timens_offsets", O_WRONLY, 0,
                  "linux.timeOffsets: open /proc/self/timens_offsets")
        opened = []
        for flag, path in join:
            reg = self.regs.take()
            opened.append((reg, flag, path))
            t.add("OPEN_NS", reg, path, flag, "linux.namespaces")
        # the user namespace first: the others are joined with its privileges
        for reg, flag, path in sorted(opened, key=lambda x: x[1] != CLONE_NEWUSER):
            t.add("SETNS", reg, flag, f"linux.namespaces: {path}")
            self.regs._free.append(reg)
        if new_time:
            t.add("UNSHARE", CLONE_NEWTIME, "unshare the time namespace")
            if time_fd is not None:
                text = "".join(f"{clock} {off.secs} {off.nanosecs}\n"
                               for clock, off in linux.time_offsets.items())
                t.add("WRITE_FD", time_fd, text.encode(),
                      "linux.timeOffsets: write /proc/self/timens_offsets")
                self.regs._free.append(time_fd)
        flags = 0
        if not o.exec:
            for ns in linux.namespaces:
                flag = NS_FLAGS[ns.type]
                if ns.path is None and flag not in (CLONE_NEWCGROUP, CLONE_NEWTIME):
                    flags |= flag
        if self.new_user and o.rootless:
            # an unprivileged parent can write the maps only of a dumpable process
            t.add("DUMPABLE", 1)
        t.add("CLONE_INIT", flags, self.join_gate,
              b"".join(reg.to_bytes(4, "little") for reg in joins))
        self.regs._free.extend(joins)  # the init closes them: they are the launcher's
        return regs

    def _joined(self) -> None:
        """The init is in its cgroup from here on (the launcher's join is done)."""
        if self.join_gate != NO_REG:
            self.t.add("JOINED", self.join_gate)
            self.regs._free.append(self.join_gate)
            self.join_gate = NO_REG

    def _mount_sources(self, binds: dict) -> None:
        """Bind-mount sources, opened with the host's credentials before any namespace (a
        source only the host's root can reach works with a user namespace too).  Rootless,
        the launcher has no privilege to copy a mount: the init opens them, as root of its
        own user and mount namespaces (``_mount``)."""
        c, t, o = self.config, self.t, self.o
        if o.rootless:
            for i, mount in enumerate(c.mounts):
                if mount.idmap is not None:  # never a plain bind in its place
                    raise ConfigError(f"mounts[{i}]", "an idmapped mount needs root (the "
                                      "host's CAP_SYS_ADMIN over the source's filesystem)")
            return
        for i, mount in enumerate(c.mounts):
            opts = m.parse_mount_options(mount.options, f"mounts[{i}].options")
            what = f"mounts[{i}]: mount {mount.source or mount.type} on {mount.destination}"
            if mount.idmap is not None:
                binds[i] = self._idmap_tree(i, mount, opts, what)
            elif _is_bind(mount, opts) and not _root_overlay_at(c.mounts, i):
                if not mount.source:
                    raise ConfigError(f"mounts[{i}]", "a bind mount needs a source")
                recursive = bool(_bind_flags(mount, opts) & m.MS_REC)
                reg = self.regs.take()
                t.add("TREE", reg, os.path.join(o.bundle, mount.source),
                      AT_RECURSIVE if recursive else 0, what)
                binds[i] = reg
            elif mount.type in ("cgroup", "cgroup2"):
                regs = []
                for k, name in enumerate(o.cgroup_mounts):
                    reg = self.regs.take()
                    t.add("TREE", reg, Slot(f"cgroup{k}"), AT_RECURSIVE,
                          f"{what}: bind the container's cgroup {name or '(cgroup2)'}")
                    regs.append(reg)
                binds[i] = regs

    def _idmap_tree(self, i: int, mount, opts, what: str) -> int:
        from corral.oci.config import id_map_text

        linux = self.config.linux
        uid_map, gid_map, userns_path = mount.uid_mappings, mount.gid_mappings, ""
        if not uid_map:  # the container's own mapping (config.md: idmap without mappings)
            user = linux.namespace("user")
            uid_map, gid_map, userns_path = linux.uid_mappings, linux.gid_mappings, user.path or ""
        reg = self.regs.take()
        self.t.add("IDMAP_TREE", reg, os.path.join(self.o.bundle, mount.source or ""),
                   int(bool(_bind_flags(mount, opts) & m.MS_REC)), int(mount.idmap == "ridmap"),
                   id_map_text(uid_map), id_map_text(gid_map), userns_path,
                   f"mounts[{i}]: idmapped mount of {mount.source}")
        return reg

    # ---- the init ------------------------------------------------------------------------

    def _init_start(self) -> None:
        c, t = self.config, self.t
        if self.new_user:
            t.add("AWAIT", f.MSG_USERMAP_DONE, 0, "the id maps")
            if self.o.rootless:
                t.add("DUMPABLE", 0)
        t.add("SETSID")
        if self.in_user:
            t.add("BECOME_ROOT")
        if self.o.exec:
            return
        netns = c.linux.namespace("network")
        if netns is not None and netns.path is None:
            t.add("LOOPBACK_UP")
        # before the rootfs: createContainer hooks run in the namespaces as set up
        if c.hostname is not None:
            t.add("SETHOSTNAME", Slot("hostname"))
        if c.domainname is not None:
            t.add("SETDOMAINNAME", c.domainname)

    # ---- the rootfs ------------------------------------------------------------------------

    def _rootfs(self, regs: dict, create_hooks: bool) -> None:
        """Model: runc's prepareRootfs / finalizeRootfs, crun's linux.c."""
        c, t, o = self.config, self.t, self.o
        linux = c.linux
        own = linux.namespace("mount") is not None
        if not own:
            self._check_shared_mounts()
        asked = _propagation(linux.rootfs_propagation)
        overlay = _root_overlay(c.mounts)
        if own:
            self._own_root(asked, overlay)
        root = self.regs.take()
        regs["root"] = root
        t.add("ROOT_OPEN", root, Slot("rootfs"), "root.path")
        for name in ("proc", "sys"):  # would redirect the container's procfs / sysfs
            t.add("NOT_SYMLINK", root, name, f"root.path: the rootfs's /{name} is a symlink: "
                                             "refused")
        dev_reg = NO_REG
        for i, mount in enumerate(c.mounts):
            if i == overlay:
                continue
            reg = self._mount(i, mount, root, regs["binds"].get(i))
            if reg is not None:
                dev_reg = reg  # /dev's own tmpfs: made read-only after its nodes
        self._dev(root)
        if create_hooks:
            self._joined()
            t.add("REPORT", f.MSG_HOOKS_DUE)
            t.add("AWAIT", f.MSG_HOOKS_DONE, BLOB_CREATE_STATE, "the runtime's hooks")
            for i, hook in enumerate(c.hooks.create_container):
                # in the rootfs, as runc runs them (before pivot_root, by its host path)
                t.add("HOOK", "createContainer", i, hook.path, list(hook.args) or [hook.path],
                      list(hook.env) or _environ(), hook.timeout or 0, BLOB_CREATE_STATE,
                      Slot("rootfs"))
        if not own:
            t.add("CHROOT", Slot("rootfs"), "root.path: chroot into the rootfs")
        elif o.no_pivot:
            t.add("MOVE_ROOT", Slot("rootfs"), tuple(o.hide_on_move), "root.path: move the "
                                                                    "rootfs to /")
        else:
            t.add("PIVOT", Slot("rootfs"), "root.path: pivot_root into the rootfs")
        self.regs.give(t, root)
        self._finish_root(asked, dev_reg)

    def _check_shared_mounts(self) -> None:
        """Without a mount namespace of its own the container's mounts are made in the
        runtime's, under the rootfs, as runc makes them (and they stay there); what would
        change the runtime's own mounts is refused (runc refuses masked and read-only paths
        too; it would also change the propagation of the runtime's /)."""
        c, linux = self.config, self.config.linux
        why = ("needs a mount namespace of the container's own (linux.namespaces has no "
               "\"mount\"): it would change the runtime's own mounts")
        for field, value in (("linux.maskedPaths", linux.masked_paths),
                             ("linux.readonlyPaths", linux.readonly_paths),
                             ("linux.rootfsPropagation", linux.rootfs_propagation),
                             ("root.readonly", c.root_readonly)):
            if value:
                raise ConfigError(field, why)
        if _root_overlay(c.mounts) is not None:
            raise ConfigError("mounts[0]", f"an overlay on / {why}")

    def _own_root(self, asked: int, overlay: int | None) -> None:
        """In the container's mount namespace: / made private (or as asked), the rootfs
        bound onto itself (or a job's overlay mounted on it)."""
        c, t, o = self.config, self.t, self.o
        # / first, before anything is mounted, so that no mount below reaches the host; an
        # unbindable / would refuse the rootfs's own bind: that one is applied after the pivot
        first = asked if asked and not asked & m.MS_UNBINDABLE else DEFAULT_ROOT_PROPAGATION
        t.add("MOUNT", "", "/", "", "", first, NO_REG, "set the propagation of /")
        if not (first & m.MS_REC and first & (m.MS_PRIVATE | m.MS_SLAVE)):
            t.add("PARENT_PRIVATE", Slot("rootfs"), "root.path")
        here = self.regs.take()
        t.add("ROOT_OPEN", here, Slot("rootfs"), "root.path")
        if overlay is None:
            tree = self.regs.take()
            t.add("TREE", tree, Slot("rootfs"), AT_RECURSIVE, "root.path: bind the rootfs")
            t.add("MOVE", tree, here, "root.path: bind the rootfs")
            self.regs.give(t, tree, here)
        else:
            mount = c.mounts[overlay]
            opts = m.parse_mount_options(mount.options, f"mounts[{overlay}].options")
            if opts.is_bind or opts.propagation or opts.recursive:
                raise ConfigError(f"mounts[{overlay}].options", "an overlay on / takes no "
                                  "bind, propagation or recursive options")
            tree = self.regs.take()
            what = f"mounts[{overlay}]: mount {mount.source or 'overlay'} on /"
            t.add("FSMOUNT", tree, "overlay", mount.source or "overlay",
                  tuple(self._fs_parameters(opts, relative_to=o.bundle)),
                  m.mount_attributes(opts.flags)[0], NO_REG, what)
            t.add("MOVE", tree, here, what)
            self.regs.give(t, tree, here)

    def _finish_root(self, asked: int, dev_reg: int) -> None:
        """After the pivot: sysctl, read-only /dev, read-only and masked paths, read-only
        root, the asked propagation."""
        c, t = self.config, self.t
        linux = c.linux
        from corral.oci.config import sysctl_path

        for key, value in linux.sysctl.items():
            t.add("WRITE", "/proc/sys/" + sysctl_path(key), O_NOFOLLOW, value.encode(),
                  f'linux.sysctl["{key}"]')
        if dev_reg != NO_REG:
            index, _mount = _dev_mount(c)
            t.add("SETATTR", dev_reg, m.MOUNT_ATTR_RDONLY, 0, 0, 0, "",
                  f"mounts[{index}]: remount /dev read-only")
            self.regs.give(t, dev_reg)
        # runc's order: read-only first, so a masked path inside a read-only one stays masked
        for i, path in enumerate(linux.readonly_paths):
            t.add("READONLY", path, f"linux.readonlyPaths[{i}]: make {path} read-only")
        for i, path in enumerate(linux.masked_paths):
            t.add("MASK", path, f"linux.maskedPaths[{i}]: mask {path}")
        if c.root_readonly:
            t.add("SETATTR", NO_REG, m.MOUNT_ATTR_RDONLY, 0, 0, 0, "/",
                  "root.readonly: remount / read-only")
        if asked:
            # asked explicitly: the new / gets it too (pivot_root refuses a shared parent),
            # last, once nothing more is bound from it (an unbindable tree refuses the binds
            # of read-only and masked paths)
            t.add("MOUNT", "", "/", "", "", asked, NO_REG,
                  f"linux.rootfsPropagation: {linux.rootfs_propagation}")

    def _fs_parameters(self, opts, relative_to: str = "") -> list[str]:
        """fsconfig's parameters: the superblock flags, then the filesystem's own (overlay
        directories relative to the bundle made absolute)."""
        params = m.superblock_flags(opts.flags)
        for item in opts.data:
            key, eq, value = item.partition("=")
            if relative_to and eq and key in ("lowerdir", "upperdir", "workdir"):
                value = ":".join(os.path.join(relative_to, v) for v in value.split(":"))
                item = f"{key}={value}"
            params.append(item)
        return params

    def _mount(self, i: int, mount, root: int, source) -> int | None:
        """``config.mounts[i]``; returns the register of /dev's own tmpfs, kept open."""
        c, t = self.config, self.t
        opts = m.parse_mount_options(mount.options, f"mounts[{i}].options")
        what = f"mounts[{i}]: mount {mount.source or mount.type} on {mount.destination}"
        dest = _clean(mount.destination)
        if mount.idmap is not None or _is_bind(mount, opts):
            tree = source
            if tree is None:  # rootless: the init opens it, in its namespaces
                if not mount.source:
                    raise ConfigError(f"mounts[{i}]", "a bind mount needs a source")
                tree = self.regs.take()
                recursive = bool(_bind_flags(mount, opts) & m.MS_REC)
                t.add("TREE", tree, os.path.join(self.o.bundle, mount.source),
                      AT_RECURSIVE if recursive else 0, what)
            attr_set, attr_clr = m.mount_attributes(opts.flags, opts.cleared)
            if m.needs_setattr(opts) and (attr_set or attr_clr):
                t.add("SETATTR", tree, attr_set, attr_clr, 0, 0, "", what)
            procfs = dest == "/proc"
            if procfs:  # a bind of a procfs is one (runc's checkProcMount); nothing else
                t.add("PROCFS", tree, f"mounts[{i}]: /proc can only be a proc mount (or a "
                                      f"bind of one): {mount.source} is not a procfs")
            target = self._target(root, dest, CREATE_LIKE, tree, mount, what, procfs)
            t.add("MOVE", tree, target, what)
            self._after_mount(i, mount, opts, tree, what)
            self.regs.give(t, target, tree)
            return None
        if mount.type in ("cgroup", "cgroup2"):
            self._cgroup_mount(i, mount, opts, root, source, what)
            return None
        label = (c.linux.mount_label if mount.type in LABELLED_TYPES and _host("selinux")
                 else None)
        params = self._fs_parameters(opts)
        if label:
            params.append(f'context="{label}"')
        attr_set = m.mount_attributes(opts.flags)[0]
        if opts.flags & m.MS_REMOUNT:
            target = self._target(root, dest, CREATE_DIR, NO_REG, mount, what)
            t.add("MOUNT", mount.source or "", "", mount.type or "", ",".join(opts.data),
                  opts.flags, target, what)
            self.regs.give(t, target)
            return None
        target = self._target(root, dest, CREATE_DIR, NO_REG, mount, what)
        is_dev = dest == "/dev"
        fallback = NO_REG
        if mount.type == "sysfs" and not self._may_mount_sysfs():
            # sysfs may only be mounted by the owner of the network namespace: without a
            # network namespace of our own, the host's /sys (read-only as asked), as runc does
            fallback = self.regs.take()
            t.add("TREE", fallback, "/sys", AT_RECURSIVE, what)
        tree = self.regs.take()
        keep_writable = mount.type == "tmpfs" and opts.flags & m.MS_RDONLY
        attrs = attr_set & ~m.MOUNT_ATTR_RDONLY if keep_writable or is_dev else attr_set
        below = NO_REG
        if mount.type == "tmpfs" and opts.tmpcopyup:
            below = self.regs.take()  # still the covered directory after the mount
            t.add("OPEN_DIR", below, target, f"{what}: tmpcopyup")
        t.add("FSMOUNT", tree, mount.type or "", mount.source or mount.type or "", tuple(params),
              attrs, fallback, what)
        if fallback != NO_REG:
            self.regs._free.append(fallback)
        if mount.type == "tmpfs":
            # a tmpfs keeps the mode of the directory it covers (a tmpfs on /tmp stays 1777)
            if not any(p.startswith("mode=") for p in opts.data):
                t.add("CHMOD_LIKE", tree, target, what)
            if below != NO_REG:
                t.add("COPY_UP", below, tree, what)
                self.regs.give(t, below)
        t.add("MOVE", tree, target, what)
        if keep_writable and not is_dev:
            t.add("SETATTR", tree, m.MOUNT_ATTR_RDONLY, 0, 0, 0, "", what)
        self._after_mount(i, mount, opts, tree, what)
        self.regs.give(t, target)
        if is_dev and opts.flags & m.MS_RDONLY:
            return tree  # made read-only once its device nodes are in
        self.regs.give(t, tree)
        return None

    def _after_mount(self, i: int, mount, opts, tree: int, what: str) -> None:
        """Propagation changes, then the recursive options, on the mount in place."""
        t = self.t
        for flag in opts.propagation:
            t.add("SETATTR", tree, 0, 0, flag & ~m.MS_REC, int(bool(flag & m.MS_REC)), "",
                  f"{what}: propagation")
        if opts.recursive:
            t.add("SETATTR", tree, opts.rec_set, opts.rec_clear, 0, 1, "",
                  f"mounts[{i}].options: {', '.join(opts.recursive)} on {mount.destination}")

    def _target(self, root: int, dest: str, create: int, like: int, mount, what: str,
                procfs: bool = False) -> int:
        """The destination inside the rootfs, made as needed; only procfs goes on /proc (a
        proc mount, or a bind checked to be one: ``procfs``), and only a few files under
        /proc may be covered: checked here on the path, and by the executor on where a path
        through a symlink lands."""
        allowed = PROC_OVERRIDES + (("/proc",) if mount.type == "proc" or procfs else ())
        field = what.split(": ", 1)[0]
        if dest == "/proc" and dest not in allowed:
            raise ConfigError(field, f"{mount.destination} can only be a proc mount")
        if dest.startswith("/proc/") and dest not in allowed:
            raise ConfigError(field, f"{mount.destination} is under /proc: refused")
        reg = self.regs.take()
        self.t.add("RESOLVE", reg, root, dest, create, like, 1, mount.destination, allowed,
                   what)
        return reg

    def _may_mount_sysfs(self) -> bool:
        """Whether a fresh sysfs is ours to mount: the owner of the network namespace may."""
        linux = self.config.linux
        netns = linux.namespace("network")
        if netns is not None and netns.path is None:
            return True  # ours, made in the one clone with (and after) the user namespace
        return linux.namespace("user") is None and not self.o.rootless

    def _cgroup_mount(self, i: int, mount, opts, root: int, sources, what: str) -> None:
        """The container's /sys/fs/cgroup: its host cgroup directories, bound into a tmpfs."""
        t = self.t
        dest = _clean(mount.destination)
        attr_set, attr_clr = m.mount_attributes(opts.flags, opts.cleared)
        names = self.o.cgroup_mounts
        if sources is None:  # rootless: the init opens them
            sources = []
            for k, name in enumerate(names):
                reg = self.regs.take()
                t.add("TREE", reg, Slot(f"cgroup{k}"), AT_RECURSIVE,
                      f"{what}: bind the container's cgroup {name or '(cgroup2)'}")
                sources.append(reg)
        if len(names) == 1 and names[0] == "":
            tree = sources[0]
            if attr_set or attr_clr:
                t.add("SETATTR", tree, attr_set, attr_clr, 0, 1, "", what)
            target = self._target(root, dest, CREATE_DIR, NO_REG, mount, what)
            t.add("MOVE", tree, target, what)
            self.regs.give(t, target, tree)
            return
        tmpfs = self.regs.take()
        # read-only at the end: the tmpfs must stay writable for the directories in it
        t.add("FSMOUNT", tmpfs, "tmpfs", "tmpfs", ("mode=755",),
              attr_set & ~m.MOUNT_ATTR_RDONLY, NO_REG, what)
        target = self._target(root, dest, CREATE_DIR, NO_REG, mount, what)
        t.add("MOVE", tmpfs, target, what)
        self.regs.give(t, target)
        for name, tree in zip(names, sources):
            if attr_set or attr_clr:
                t.add("SETATTR", tree, attr_set, attr_clr, 0, 1, "", what)
            sub = self._target(root, f"{dest}/{name}", CREATE_DIR, NO_REG, mount, what)
            t.add("MOVE", tree, sub, what)
            self.regs.give(t, sub, tree)
            if "," in name:  # cpu,cpuacct is also reachable as cpu and cpuacct (as on the host)
                for part in name.split(","):
                    if not part.startswith("name="):
                        t.add("SYMLINK", root, dest, part, name, 0, f"{what}: link {part}")
        if attr_set & m.MOUNT_ATTR_RDONLY:
            t.add("SETATTR", tmpfs, m.MOUNT_ATTR_RDONLY, 0, 0, 0, "", what)
        self.regs.give(t, tmpfs)

    def _dev(self, root: int) -> None:
        """/dev: ``linux.devices`` unless /dev is a bind (the host's own /dev, as runc's
        needsSetupDev judges); the defaults, symlinks and ptmx only when the container has
        a /dev of its own.  In a user namespace mknod is refused: the host's node is bound."""
        c, t = self.config, self.t
        _index, devm = _dev_mount(c)
        dev_is_bind = devm is not None and _is_bind(devm, m.parse_mount_options(devm.options))
        bind = int(self.in_user)
        if not dev_is_bind:
            for i, dev in enumerate(c.linux.devices):
                path = _device_path(i, dev)
                perm = 0o666 if dev.file_mode is None else dev.file_mode & 0o777
                t.add("MKNOD", root, path, _device_type(i, dev) | perm, dev.major, dev.minor,
                      -1 if dev.uid is None else dev.uid, -1 if dev.gid is None else dev.gid,
                      bind, f"linux.devices[{i}]: create {path}")
        if devm is None or dev_is_bind:
            return
        listed = {_clean(d.path) for d in c.linux.devices}
        for name, major, minor in DEFAULT_DEVICES:
            path = "/dev/" + name
            if path not in listed:
                t.add("MKNOD", root, path, 0o020666, major, minor, 0, 0, bind, f"create {path}")
        links = list(DEV_SYMLINKS)
        if _host("kcore"):  # the host's kernel has it
            links.append(("core", "/proc/kcore"))
        for name, target in links:
            t.add("SYMLINK", root, "/dev", name, target, 0, "create /dev symlinks")
        if any(_clean(mm.destination) == "/dev/pts" for mm in c.mounts):
            # ptys from the container's own devpts instance
            t.add("SYMLINK", root, "/dev", "ptmx", "pts/ptmx", 1, "create /dev/ptmx")

    # ---- the process -------------------------------------------------------------------

    def _process(self, regs: dict, seccomp, start_hooks: bool) -> None:
        """From the container's root to exec: shared by the init and `corral exec`."""
        from corral.oci import config as spec

        c, t, o = self.config, self.t, self.o
        proc = c.process
        if o.exec and c.linux.namespace("mount") is None:
            # the container shares the runtime's mount namespace: its root is the init's
            t.add("CHROOT", Slot("rootfs"), "chroot into the container's root")
        for rl in proc.rlimits:
            t.add("RLIMIT", spec.RLIMITS[rl.type], rl.soft, rl.hard,
                  f"process.rlimits: setrlimit {rl.type}")
        if o.exec:
            t.add("CHDIR", proc.cwd, 0, f'chdir to cwd ("{proc.cwd}") set in config.json failed')
        else:
            t.add("CHDIR", proc.cwd, 1, f"process.cwd: {proc.cwd}")
        t.add("FIND_EXEC", proc.args[0], _search_path(list(proc.env) + list(o.extra_env)))
        if o.console:
            size = proc.console_size or (0, 0)
            t.add("TERMINAL", regs["console"], proc.user.uid, size[0], size[1], "process.terminal")
            self.regs._free.append(regs["console"])
        self._joined()
        t.add("REPORT", f.MSG_READY)
        t.add("AWAIT", f.MSG_RUN, BLOB_START_STATE, "Run")
        if proc.user.umask is not None:
            t.add("UMASK", proc.user.umask)
        self._attributes()
        linux = c.linux
        cgroupns = linux.namespace("cgroup")
        if not o.exec and cgroupns is not None and cgroupns.path is None:
            # only now: the init is in its cgroup (the launcher put it there, JOINED said so)
            t.add("UNSHARE", CLONE_NEWCGROUP, "unshare the cgroup namespace")
        if o.keyring:
            t.add("KEYRING", Slot("keyring"))
        caps = proc.capabilities
        masks = (0, 0, 0, 0, 0) if caps is None else (
            caps_mask(caps.bounding), caps_mask(caps.effective), caps_mask(caps.permitted),
            caps_mask(caps.inheritable), caps_mask(caps.ambient))
        t.add("BOUNDING", masks[0])
        groups = b"".join(g.to_bytes(4, "little") for g in proc.user.additional_gids)
        t.add("USER", proc.user.uid, proc.user.gid, 1, groups)
        t.add("DUMPABLE", 0)  # changing uids reset it: hidden until exec
        cap_sys_admin = 1 << 21
        keep_sysadmin = int(seccomp is not None and not proc.no_new_privileges
                            and not masks[1] & cap_sys_admin)
        t.add("CAPS", masks[1], masks[2], masks[3], masks[4], keep_sysadmin)
        if proc.no_new_privileges:
            t.add("NNP")
        t.add("CHECK_EXEC")
        t.add("CLOEXEC_FROM", 3 + o.preserve_fds)
        t.add("REPORT", f.MSG_WAITING)
        t.add("FIFO", regs.get("fifo", NO_REG))
        t.add("SIGNALS")
        if seccomp is not None:
            # before the startContainer hooks, as runc loads it: the filter applies to them
            program, flags = seccomp
            t.add("SECCOMP", program, flags, keep_sysadmin, regs.get("listener", NO_REG),
                  BLOB_LISTENER_STATE)
        if start_hooks:
            for i, hook in enumerate(c.hooks.start_container):
                t.add("HOOK", "startContainer", i, hook.path, list(hook.args) or [hook.path],
                      list(hook.env) or Slot("env"), hook.timeout or 0, BLOB_START_STATE, "")
        t.add("EXEC", tuple(proc.args), Slot("env"))

    def _attributes(self) -> None:
        """Scheduling, I/O priority, cpus, LSM labels, memory policy and execution domain:
        inherited through exec, and so set only after the init's own setup."""
        from corral.oci import config as spec

        c, t = self.config, self.t
        proc = c.process
        sched = proc.scheduler
        if sched is not None:
            flags = 0
            for name in sched.flags:
                flags |= spec.SCHED_FLAGS[name]
            t.add("SCHED", spec.SCHED_POLICIES[sched.policy], flags, sched.nice, sched.priority,
                  sched.runtime, sched.deadline, sched.period,
                  f"process.scheduler: sched_setattr {sched.policy}")
        prio = proc.io_priority
        if prio is not None:
            t.add("IOPRIO", spec.IOPRIO_CLASSES[prio.io_class] << 13 | prio.priority,
                  f"process.ioPriority: ioprio_set {prio.io_class} {prio.priority}")
        affinity = proc.exec_cpu_affinity
        if affinity is not None and affinity.final is not None:
            t.add("AFFINITY", _cpu_mask(affinity.final),
                  f"process.execCPUAffinity.final: sched_setaffinity({affinity.final})")
        if proc.apparmor_profile:
            path = ("/proc/thread-self/attr/apparmor/exec" if _host("apparmor_attr")
                    else "/proc/thread-self/attr/exec")
            t.add("WRITE", path, 0, f"exec {proc.apparmor_profile}".encode(),
                  "process.apparmorProfile")
        if proc.selinux_label:
            t.add("WRITE", "/proc/thread-self/attr/exec", 0, proc.selinux_label.encode(),
                  "process.selinuxLabel")
        policy = c.linux.memory_policy
        if policy is not None:
            mode = spec.MEMPOLICY_MODES[policy.mode]
            for flag in policy.flags:
                mode |= spec.MEMPOLICY_FLAGS[flag]
            bits = 64
            words = (max(policy.nodes, default=0) // bits) + 1
            mask = [0] * words
            for node in policy.nodes:
                mask[node // bits] |= 1 << (node % bits)
            raw = b"".join(w.to_bytes(8, "little") for w in mask) if policy.nodes else b""
            shown = "|".join((policy.mode, *policy.flags))
            nodes = ",".join(map(str, policy.nodes)) or "none"
            t.add("MEMPOLICY", mode, raw, words * bits + 1 if policy.nodes else 0,
                  f"linux.memoryPolicy: set_mempolicy({shown}, nodes {nodes})")
        persona = c.linux.personality
        if persona is not None:
            value = spec.PERSONALITY_DOMAINS[persona.domain]
            for name in persona.flags:
                value |= spec.PERSONALITY_FLAGS[name]
            t.add("PERSONALITY", value, f"linux.personality: personality(0x{value:x})")


# ---- filling a template -------------------------------------------------------------------


def slot_values(plan: Plan, *, fifo: str = "", console: str = "", keyring: str = "",
                rootfs: str = "", env: list[str] | None = None, hostname: str = "",
                cgroup_dirs: list[str] = (), cgroup_procs: list[str] = ()) -> dict:
    values = {"fifo": fifo, "console": console, "keyring": keyring, "rootfs": rootfs,
              "env": env or [], "hostname": hostname}
    for k, path in enumerate(cgroup_dirs):
        values[f"cgroup{k}"] = path
    for k, path in enumerate(cgroup_procs):
        values[f"procs{k}"] = path
    return values


def fill(plan: Plan, values: dict) -> bytes:
    return plan.template.fill(values)


def process_env(config, extra_env=(), passwd: str | None = None) -> list[str]:
    """The process's environment: the config's, the caller's extras, and HOME from the
    container's /etc/passwd (``passwd``: that file as the host reaches it) when neither sets
    it, as runc does."""
    env = list(config.process.env) + list(extra_env)
    if any(item.startswith("HOME=") for item in env):
        return env
    return env + [f"HOME={home_of(config.process.user.uid, passwd)}"]


_homes: dict = {}


def home_of(uid: int, passwd: str | None) -> str:
    """The home directory of ``uid`` in the passwd file at ``passwd``, "/" when not there.
    Read again only when the file changed."""
    if not passwd:
        return "/"
    try:
        st = os.stat(passwd)
    except OSError:
        return "/"
    key = (passwd, st.st_ino, st.st_mtime_ns, st.st_size)
    table = _homes.get(key)
    if table is None:
        table = {}
        try:
            with open(passwd, errors="replace") as fh:
                for line in fh:
                    parts = line.rstrip("\n").split(":")
                    if len(parts) >= 6 and parts[2].isdigit():
                        table.setdefault(int(parts[2]), parts[5] or "/")
        except OSError:
            pass
        if len(_homes) > 64:
            _homes.clear()
        _homes[key] = table
    return table.get(uid, "/")


def passwd_of(config, rootfs: str) -> str | None:
    """Where the host reaches the container's /etc/passwd: a bind mount's source when one
    covers it (the last such mount wins, as it would in the container), else the rootfs's
    own file, resolved inside the rootfs."""
    key = (id(config.mounts), rootfs)
    hit = _passwds.get(key)
    if hit is not None and hit[0] is config.mounts:
        return hit[1]
    found = _passwd_of(config, rootfs)
    if len(_passwds) > 256:
        _passwds.clear()
    _passwds[key] = (config.mounts, found)
    return found


_passwds: dict = {}


def _passwd_of(config, rootfs: str) -> str | None:
    found = None
    for mount in config.mounts:
        dest = _clean(mount.destination)
        if dest not in ("/etc", "/etc/passwd", "/"):
            continue
        opts = m.parse_mount_options(mount.options)
        if not _is_bind(mount, opts) or not mount.source:
            if dest in ("/etc", "/etc/passwd", "/"):
                found = None  # covered by something we cannot read from here
            continue
        if dest == "/etc/passwd":
            found = mount.source
        elif dest == "/etc":
            found = os.path.join(mount.source, "passwd")
        elif dest == "/":
            found = os.path.join(mount.source, "etc/passwd")
    if found is not None:
        return found
    return _in_root(rootfs, "/etc/passwd")


def _in_root(root: str, path: str) -> str | None:
    """``path`` resolved inside ``root`` as the kernel would with ``root`` as /, or None."""
    parts: list[str] = []
    todo = path.split("/")[::-1]
    links = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        candidate = root + "/" + "/".join(parts + [name])
        try:
            target = os.readlink(candidate)
        except OSError:
            parts.append(name)
            continue
        links += 1
        if links > 40:
            return None
        if target.startswith("/"):
            parts = []
        todo.extend(target.split("/")[::-1])
    return root + "/" + "/".join(parts)


# ---- helpers ------------------------------------------------------------------------------


def _clean(path: str) -> str:
    """A container path made absolute and lexically clean (``/dev/../x`` -> ``/x``)."""
    return "/" + os.path.normpath("/" + path).lstrip("/")


def _is_bind(mount, opts) -> bool:
    """OCI: a bind mount has option bind/rbind; type "bind" and a missing type or "none"
    (with a source) are treated as bind too, as crun does."""
    return opts.is_bind or mount.type in ("bind", "rbind", "none", None)


def _bind_flags(mount, opts) -> int:
    return opts.flags | m.MS_BIND | (m.MS_REC if mount.type == "rbind" else 0)


def _root_overlay(mounts) -> int | None:
    """The index of an overlay mount on ``/`` (a job's writable layer over a directory
    root), or None.  It is mounted onto the rootfs inside the container's mount namespace,
    before every other mount, so it goes with the namespace and is never left on the host;
    anywhere but first it would hide the mounts before it, and is refused."""
    for i, mount in enumerate(mounts):
        if mount.type == "overlay" and _clean(mount.destination) == "/":
            if i != 0:
                raise ConfigError(f"mounts[{i}]", "an overlay on / (the root filesystem) must "
                                                  "be the first mount")
            return i
    return None


def _root_overlay_at(mounts, i: int) -> bool:
    return i == 0 and _root_overlay(mounts) == 0


def _dev_mount(config):
    """(index, mount) of the last mount exactly at /dev, or (-1, None)."""
    found = (-1, None)
    for i, mount in enumerate(config.mounts):
        if _clean(mount.destination) == "/dev":
            found = (i, mount)
    return found


def _device_path(index: int, device) -> str:
    field = f"linux.devices[{index}].path"
    if not device.path.startswith("/"):
        raise ConfigError(field, f"{device.path!r} is not an absolute path")
    path = _clean(device.path)
    if not path.startswith("/dev/"):
        raise ConfigError(field, f"{device.path!r} is not under /dev")
    return path


def _device_type(index: int, device) -> int:
    if device.type not in _DEVICE_TYPES:
        raise ConfigError(f"linux.devices[{index}].type", f"unknown device type {device.type!r}")
    return _DEVICE_TYPES[device.type]


def _propagation(value: str | None) -> int:
    if not value:
        return 0
    try:
        return m.PROPAGATION_OPTIONS[value]
    except KeyError:
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {value!r}") from None


def _cpu_mask(cpus: str) -> bytes:
    from corral.oci.config import cpu_set

    chosen = cpu_set(cpus)
    mask = bytearray(max(128, (max(chosen, default=0) // 8) + 1))
    for cpu in chosen:
        mask[cpu // 8] |= 1 << (cpu % 8)
    return bytes(mask)


def _search_path(env: list[str]) -> str:
    search = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            search = item[5:]
    return search


def _environ() -> list[str]:
    """A hook without ``env`` gets the runtime's environment (Go's exec.Cmd with a nil Env,
    as runc)."""
    return [f"{k}={v}" for k, v in os.environ.items()]


_HOST_PATHS = {"kcore": "/proc/kcore", "selinux": "/sys/fs/selinux/enforce",
               "apparmor_attr": "/proc/self/attr/apparmor"}
_host_facts: dict[str, bool] = {}


def _host(fact: str) -> bool:
    """What this host's kernel has (it does not change while corral runs)."""
    if fact not in _host_facts:
        _host_facts[fact] = os.path.exists(_HOST_PATHS[fact])
    return _host_facts[fact]
