"""What the parent makes on the host for a container before its child exists, and its undoing.

``prepare`` validates the config, compiles its plan (``corral.plan``: cached by the config's
content, so a thousand containers of one config compile once), then makes the state
directory, the exec fifo and the cgroup.  ``PreparedContainer`` owns them from the moment they
are made until creation succeeds; on any failure ``undo()`` removes all of them (and every
process in the cgroup).  Both creation drivers carry out the machine's host-side actions
(join cgroup, id maps, record pid, resources) through its methods.
"""

from __future__ import annotations

import os
import sys
import _signal as signal  # `signal` itself imports enum: ~3 ms

from corral.cgroups import Cgroup, detect
from corral.errors import CgroupError, ConfigError, CorralError
from corral.oci.config import Config, DeviceRule, load_bundle
from corral.oci.state import StateDir, rfc3339_now, validate_id
from corral.plan.compiler import NS_FLAGS, PlanOptions
from corral.procfs import is_alive, start_time
from corral.runtime import plans
from corral.runtime.creation import ContainerState
from corral.runtime.protocol import Plan

TYPE_CHECKING = False  # typing and collections.abc cost ms on the CLI's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable

class PreparedContainer:
    """``cgroup`` is None for a rootless container without a delegated cgroup.  ``plan``
    and ``slots``: the compiled plan and this container's values for it (``plan_message``)."""

    def __init__(self, state_dir: StateDir, config: Config, record: dict, cgroup: Cgroup | None,
                 plan, slots: dict) -> None:
        self.state_dir = state_dir
        self.config = config
        self.record = record
        self.cgroup = cgroup
        self.cgroup_made = False
        self.scope_started = False  # a systemd scope (--systemd-cgroup) started for the init
        self.plan = plan
        self.slots = slots
        self.init_pidfd = -1  # the trio driver's pidfd of the init, once created
        # linux.netDevices moved so far, and the container's network namespace, held open
        # until creation is over so that a failure can move them back (netdevices.py)
        self.moved_devices: list = []
        self.netns_fd = -1
        # the caller's own host-side steps (add_host_step): the undoing of those begun,
        # and the completion of those still running
        self.host_steps: list[tuple[Callable[[int], None], Callable[[], None],
                                    Callable[[], None] | None]] = []
        self._undo_steps: list[Callable[[], None]] = []
        self._unfinished_steps: list[Callable[[], None]] = []

    @property
    def id(self) -> str:
        return self.state_dir.id

    @property
    def info(self):
        return self.plan.info

    def plan_message(self) -> Plan:
        return Plan(self.plan.template.fill(self.slots))

    def container_state(self) -> ContainerState:
        record = self.record
        return ContainerState(record["ociVersion"], record["id"], record["bundle"],
                              record.get("annotations") or {})

    # ---- the machine's host-side actions ----

    def carry_out(self, action) -> None:
        """Does one host-side action of the creation machine (Send, Done and Fail are the
        driver's own, since they are I/O or control flow)."""
        from corral.runtime import creation as c

        if isinstance(action, c.JoinCgroup):
            self.join_cgroup(action.pid)
        elif isinstance(action, c.WriteIdMaps):
            self.write_id_maps(action.pid)
        elif isinstance(action, c.RecordPid):
            self.record_pid(action.pid)
            self.move_net_devices(action.pid)
            self.run_host_steps(action.pid)
        elif isinstance(action, c.RunCreateRuntimeHooks):
            self.run_create_runtime_hooks(action.pid)
        elif isinstance(action, c.ApplyResources):
            self.apply_resources(action.pid)
        else:
            raise TypeError(f"not a host-side action: {action!r}")

    def join_cgroup(self, pid: int) -> None:
        if self.cgroup is None:
            return
        try:
            self.cgroup.add(pid)
        except CgroupError:
            if is_alive(pid, None):
                raise
            # The init already died: its own Error message (or EOF) follows and says why.

    def write_id_maps(self, pid: int) -> None:
        from corral.runtime.rootless import write_id_maps

        write_id_maps(pid, self.config.linux.uid_mappings, self.config.linux.gid_mappings)

    def record_pid(self, pid: int) -> None:
        self.record["pid"] = pid
        self.record["pid_start"] = start_time(pid)
        self.state_dir.write(self.record)

    def run_create_runtime_hooks(self, pid: int) -> None:
        """prestart (deprecated, run at the same moment) then createRuntime, in the runtime's
        namespaces, while the init waits before pivot_root."""
        self.finish_host_steps()
        hooks = self.config.hooks
        if not (hooks.prestart or hooks.create_runtime):
            return
        from corral.runtime.hooks import run_hooks, state_from_record

        # "created", as crun gives these hooks (the OCI validation suite checks it; runc
        # says "creating")
        state = state_from_record(self.record, "created", pid)
        bundle = self.record["bundle"]  # every hook's working directory, as in runc
        run_hooks("prestart", hooks.prestart, state, bundle)
        run_hooks("createRuntime", hooks.create_runtime, state, bundle)

    def move_net_devices(self, pid: int) -> None:
        """linux.netDevices, into the init's network namespace as soon as it exists: before
        the create-time hooks, which may configure them."""
        if not self.config.linux.net_devices:
            return
        from corral.runtime import netdevices as devices

        self.netns_fd = devices.open_netns(pid)
        devices.move_in(self.config.linux.net_devices, self.netns_fd, self.moved_devices)

    def add_host_step(self, do: Callable[[int], None], undo: Callable[[], None],
                      finish: Callable[[], None] | None = None) -> None:
        """A host-side step of the caller's own (the engine attaches a job to its bridge
        network here): ``do(pid)`` runs once the init's namespaces exist (on RecordPid,
        after linux.netDevices moved), in the order added.  It may only begin the work
        (on a thread of its own, beside the cgroup join and the init's rootfs): then
        ``finish()`` completes it before the next host-side step that may rely on it, the
        create-time hooks or else the resources, right before Run.  ``undo()`` runs if
        creation fails after ``do`` returned, in reverse order, whatever the stage of the
        failure (up to the init's last message); it must wait for work still running.
        ``do`` and ``finish`` undo their own partial work when they raise."""
        self.host_steps.append((do, undo, finish))

    def run_host_steps(self, pid: int) -> None:
        for do, undo, finish in self.host_steps:
            do(pid)
            self._undo_steps.append(undo)
            if finish is not None:
                self._unfinished_steps.append(finish)

    @property
    def steps_running(self) -> bool:
        """A host step begun on a thread of its own (a network attach) is not done yet:
        finishing waits for it, which a trio driver does off its event loop."""
        return bool(self._unfinished_steps)

    def finish_host_steps(self) -> None:
        while self._unfinished_steps:
            self._unfinished_steps.pop(0)()

    def _undo_host_steps(self) -> None:
        """Every step's undo runs even if one fails; the first error is raised after."""
        error = None
        while self._undo_steps:
            try:
                self._undo_steps.pop()()
            except Exception as exc:  # noqa: BLE001
                error = error or exc
        if error is not None:
            raise error

    def _release_netns(self) -> None:
        if self.netns_fd >= 0:
            os.close(self.netns_fd)
            self.netns_fd = -1

    def scope_start(self, pid: int):
        """The conversation that starts the container's systemd scope with the init's pid
        and its resources (``corral.cgroups.systemd_scope``), or None when there is none
        to start: the blocking driver runs it in ``apply_resources``, the trio driver on
        its event loop before."""
        if self.cgroup is None or self.cgroup.unit is None or self.scope_started:
            return None
        from corral.cgroups import systemd_scope

        return systemd_scope.start(self.cgroup, pid, self.config.linux.resources,
                                   device_rules(self.config), f"corral container {self.id}",
                                   self.config.annotations)

    def apply_resources(self, pid: int) -> None:
        """After the scope (if any) exists, as runc: what systemd took as properties is
        written to cgroupfs too, with what it has no property for."""
        self.finish_host_steps()
        scope = self.scope_start(pid)
        if scope is not None:
            from corral.cgroups import systemd_blocking

            systemd_blocking.run(scope)
            self.scope_started = True
        if self.cgroup is not None:  # None: rootless, and prepare refused any resources
            resources = self.config.linux.resources
            if not resources.empty():
                self.cgroup.set_resources(resources)
            if self.config.linux.device_rules:
                self.cgroup.set_devices(device_rules(self.config))
        # the last host-side step done: the moved devices are the container's from here on
        self.moved_devices = []
        self._release_netns()

    # ---- failure ----

    def undo_after_failure(self) -> None:
        """undo() on a failure path: an error of the clean-up is reported beside the error
        that caused it (on stderr), never instead of it."""
        try:
            self.undo()
        except Exception as exc:  # noqa: BLE001
            sys.stderr.write(f"corral: cleaning up {self.id}: {exc}\n")

    def undo(self) -> None:
        """Removes everything made for this container; safe to call on any partial state.
        The cgroup only once create() made it: before, its path may be someone else's.
        The caller's host steps are undone first, then moved network devices go back to
        the runtime's namespace."""
        try:
            try:
                self._undo_host_steps()
            finally:
                if self.moved_devices:
                    from corral.runtime import netdevices as devices

                    devices.move_back(self.moved_devices, self.netns_fd)
        finally:
            self._release_netns()
            try:
                if self.cgroup_made and self.cgroup is not None:
                    try:
                        self.cgroup.kill_all(signal.SIGKILL)
                    finally:
                        self.cgroup.destroy()
            finally:
                try:
                    if self.record.get("shared_mounts"):
                        from corral.runtime import shared_mounts

                        shared_mounts.release(self.record["shared_mounts"],
                                              self.record["rootfs"])
                finally:
                    self.state_dir.remove()


# What every container may use whatever its rules say, appended after them as runc does:
# mknod of anything, and the default devices (null, zero, full, random, urandom, tty, ptmx,
# the pty slaves, tun).
_ALWAYS_ALLOWED = (
    DeviceRule(True, "c", None, None, "m"), DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3), DeviceRule(True, "c", 1, 5), DeviceRule(True, "c", 1, 7),
    DeviceRule(True, "c", 1, 8), DeviceRule(True, "c", 1, 9), DeviceRule(True, "c", 5, 0),
    DeviceRule(True, "c", 5, 2), DeviceRule(True, "c", 136, None), DeviceRule(True, "c", 10, 200),
)


def device_rules(config: Config) -> list[DeviceRule]:
    """The device cgroup rules: the config's own, then the default devices.  The nodes of
    ``linux.devices`` get no rule of their own (runc's): only the config's rules allow
    them."""
    return list(config.linux.device_rules) + list(_ALWAYS_ALLOWED)


def prepare(root: str, container_id: str, bundle: str | None, *, no_pivot: bool = False,
            preserve_fds: int = 0, listen_fds: int = 0,
            new_keyring: bool = True, console_socket: str | None = None,
            detach: bool = True, record_extra: dict | None = None,
            journal: Callable[[dict], None] | None = None,
            config: Config | None = None, raw: dict | None = None,
            controllers: frozenset[str] | None = None,
            systemd_cgroup: bool = False) -> PreparedContainer:
    """Validates everything that can be validated before touching the host, then makes the
    state dir (claiming the id), the exec fifo and the cgroup.  ``detach``: the caller
    returns before the process ends (create, run -d).  ``record_extra``: more fields for
    state.json (the supervisor marks its own containers).  ``journal(record)``: the
    supervisor's record of creations in flight, instead of a first state.json (pid 0)
    before the cgroup: state.json is then written once, with the pid.  ``config``: the
    config itself, parsed, instead of a bundle's (an absolute root path; ``bundle`` is then
    only the directory the record names, and hooks run in: the state dir by default; ``raw``,
    its JSON, goes into the record, for a later ``exec``).  ``controllers``: the cgroup
    hierarchies to make (all by default).  ``systemd_cgroup``: the cgroup is a systemd
    scope's (``--systemd-cgroup``, a ``slice:prefix:name`` cgroupsPath)."""
    validate_id(container_id)
    if config is None:
        bundle = os.path.abspath(bundle)
        config, _raw = load_bundle(bundle)
    else:
        bundle = os.path.abspath(bundle) if bundle else os.path.join(os.path.abspath(root),
                                                                     container_id)
        if not os.path.isdir(config.root_path):
            problem = "is not a directory" if os.path.exists(config.root_path) else "does not exist"
            raise ConfigError("root.path", f"rootfs {config.root_path} {problem}")
    _check_terminal(config, console_socket, detach)
    from corral.oci.host import check_host

    check_host(config)
    rootless = os.geteuid() != 0
    if rootless:
        from corral.runtime import rootless as rl

        rl.check_config(config)
    if config.linux.net_devices:
        if rootless:
            raise ConfigError("linux.netDevices", f"rootless (corral run as uid "
                                                  f"{os.geteuid()}): moving network devices "
                                                  f"needs root")
        from corral.runtime.netdevices import check_present

        check_present(config.linux.net_devices)
    rootfs = os.path.realpath(os.path.join(bundle, config.root_path))
    _check_rootfs(rootfs)
    _check_namespaces(config)
    if preserve_fds < 0:
        raise ConfigError("--preserve-fds", "must not be negative")
    layout = detect()
    if config.linux.resources.unified:  # (resources.py is not needed before then)
        from corral.cgroups.resources import check_unified

        check_unified(layout.mode, config.linux.resources)
    for warning in config.linux.resources.warnings:  # ignored fields, as runc warns of them
        sys.stderr.write(f"corral: warning: {warning}\n")
    cgroup = Cgroup.for_container(layout, config.linux.cgroups_path, container_id,
                                  controllers=controllers, systemd=systemd_cgroup)
    if systemd_cgroup:
        _check_systemd(rootless, config)
    if rootless and not rl.cgroup_delegated(cgroup):
        rl.check_no_cgroup(config)
        sys.stderr.write(f"corral: warning: rootless: no cgroup for {container_id} (the "
                         f"cgroup parent of {cgroup.path} is not writable by uid "
                         f"{os.geteuid()}: not delegated)\n")
        cgroup = None
    if cgroup is not None:
        cgroup.refuse_reuse()  # before anything is made, as runc checks
    cgroup_mounts = cgroup.mount_sources() if cgroup is not None else []
    extra_env = (f"LISTEN_FDS={listen_fds}",) if listen_fds else ()
    console = bool(console_socket) or (config.process.terminal and not detach)
    options = PlanOptions(
        bundle=bundle, no_pivot=no_pivot, preserve_fds=preserve_fds + listen_fds,
        extra_env=extra_env, console=console, keyring=new_keyring, rootless=rootless,
        cgroup_mounts=tuple(name for name, _ in cgroup_mounts),
        cgroup_procs=len(cgroup.paths) if cgroup is not None else 0,
        hide_on_move=plans.host_pseudo_filesystems(rootfs) if no_pivot else ())
    plan = plans.plan_for(config, options)

    state_dir = StateDir(root, container_id)
    record = {
        "ociVersion": config.oci_version,
        "id": container_id,
        "pid": 0,
        "pid_start": None,
        "bundle": bundle,
        "rootfs": rootfs,
        "created": rfc3339_now(),
        "annotations": dict(config.annotations),
        "owner": "",
        "pid_ns": config.linux.namespace("pid") is not None,
        "cgroup": cgroup.to_json() if cgroup is not None else None,
        "memoryLimit": (config.linux.resources.memory is not None
                        and config.linux.resources.memory.limit is not None),
        **(record_extra or {}),
    }
    if config.linux.namespace("mount") is None:  # its mounts go in ours: noted, undone
        from corral.runtime import shared_mounts

        record["shared_mounts"] = shared_mounts.note(rootfs)
    if raw is not None:
        record["config"] = raw
    hooks = config.hooks
    if hooks.poststart or hooks.poststop:  # what `start` and `delete` run, without the config
        from corral.runtime.hooks import hooks_to_json

        record["hooks"] = {"poststart": hooks_to_json(hooks.poststart),
                           "poststop": hooks_to_json(hooks.poststop)}
    slots = plans.slots(
        config, extra_env, fifo=state_dir.fifo, rootfs=rootfs,
        console=os.path.abspath(console_socket) if console_socket else "",
        keyring=f"_ses.{container_id}", cgroup_dirs=[path for _, path in cgroup_mounts],
        cgroup_procs=[path + "/cgroup.procs" for path in cgroup.paths.values()]
        if cgroup is not None else [])
    prepared = PreparedContainer(state_dir, config, record, cgroup, plan, slots)
    if journal is not None:
        # first (a crash from here on leaves what it names): before the state dir, so that
        # no state dir is ever left that nobody knows of
        journal(record)
    state_dir.create()
    try:
        state_dir.make_fifo()
        if journal is None:  # the cgroup's paths: what a crash from here on leaves
            state_dir.write(record)
        if cgroup is not None:
            cgroup.create()  # on failure it removes what it made itself
            prepared.cgroup_made = True
            # The parents it made (to prune at delete) reach state.json with the pid, one
            # write later: a crash in between leaves at most those empty parents.
            record["cgroup"] = cgroup.to_json()
    except BaseException:
        prepared.undo()
        raise
    return prepared


def _check_systemd(rootless: bool, config: Config) -> None:
    """Before anything is made: the org.systemd.property.* annotations parse, systemd and
    its bus are there, for root."""
    from corral.cgroups.systemd_bus import check_running
    from corral.cgroups.systemd_units import annotation_properties

    annotation_properties(dict(config.annotations))
    if rootless:
        raise CgroupError(f"--systemd-cgroup as uid {os.geteuid()}: a user's systemd "
                          f"instance (runc's rootless systemd driver) is not implemented; "
                          f"run as root or without --systemd-cgroup")
    check_running()


def _check_terminal(config: Config, console_socket: str | None, detach: bool) -> None:
    """runc's rules (and messages): a terminal goes to the console socket; without one only
    a foreground run can have it (the caller relays it: runtime/tty_relay.py)."""
    if config.process.terminal and not console_socket and detach:
        raise CorralError("cannot allocate tty if runc will detach without setting "
                          "console socket")
    if console_socket and not config.process.terminal:
        raise CorralError("cannot use console socket if runc will not allocate tty")


def _check_rootfs(rootfs: str) -> None:
    """A /proc or /sys symlink in the rootfs would redirect the container's procfs or sysfs
    mount: refused before anything is made (the executor checks again, on what it mounts)."""
    import stat

    for name in ("proc", "sys"):
        try:
            st = os.lstat(os.path.join(rootfs, name))
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError("root.path", f"{rootfs}/{name} is a symlink: refused")


def _check_namespaces(config: Config) -> None:
    for i, ns in enumerate(config.linux.namespaces):
        flag = NS_FLAGS.get(ns.type)
        if flag is None:
            raise CorralError(f"linux.namespaces: {ns.type} namespace: not supported yet")
        if ns.type == "time" and not os.path.exists("/proc/self/ns/time"):
            raise ConfigError(f"linux.namespaces[{i}].type",
                              "time namespaces are not supported by this kernel (Linux 5.6+ "
                              "with CONFIG_TIME_NS)")
        if ns.path:
            _check_namespace_path(i, ns.path, ns.type, flag)


def _check_namespace_path(index: int, path: str, ns_type: str, flag: int) -> None:
    """The path must name a namespace of that type (NS_GET_NSTYPE); the executor checks it
    again on the descriptor it joins."""
    field = f"linux.namespaces[{index}].path"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(field, f"{path}: {exc.strerror.lower()}") from None
    try:
        from corral import nsenter

        found = nsenter.ns_type(fd)
    except OSError:
        found = None
    finally:
        os.close(fd)
    if found != flag:
        raise ConfigError(field, f"{path} is not a {ns_type} namespace")
