"""The supervisor's engine: many containers in one trio event loop.

One ``Engine`` owns, for a state root: the keeper (embedded, or the daemon's own), a watcher
task per live container (a pidfd, plus the OOM eventfd of a v1 memory cgroup), the exec-fifo
waits of ``start``, and the event stream.  The daemon (``daemon.py``) serves it on a socket;
``corral.Supervisor`` embeds it.  It shares the state directories of the command line: it
lists, signals and deletes containers the command line made, and the command line sees its.

Exit statuses: the keeper reaps every container its spawner cloned and writes the status to
``exit.json`` (fsync) before reporting it; the engine learns it from the report, or from the
file for a container that exited while no daemon was running.
"""

from __future__ import annotations

import codecs
import math
import os
import signal as _signal
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from corral import jsonlite as json
from corral.errors import (ConfigError, ContainerExists, ContainerNotFound,
                           ContainerStateError, CorralError)
from corral.oci.state import StateDir, list_ids, rfc3339_now, validate_id
from corral.procfs import is_alive, parent_pid
from corral.runtime.containers import CREATED, CREATING, PAUSED, RUNNING, STOPPED, Container
from corral.runtime.exits import read_exit
from corral.supervisor.descriptors import Descriptors
from corral.supervisor.event_bus import EventBus
from corral.supervisor.logs import DEFAULT_KEEP, DEFAULT_MAX_BYTES, STREAMS, LogReader
from corral.supervisor.watching import MANAGED, Tracked, oom_watch, peak_memory
from corral.supervisor.keeper_handle import SUPERVISOR_DIR, KeeperHandle


OOM_EVENT_PERIOD = 0.1
JOURNAL = "creating"  # in the state root's .supervisor: creations in flight


class Engine:
    def __init__(self, root: str, keeper: KeeperHandle, nursery: trio.Nursery, *,
                 max_concurrent_creates: int = 16, create_timeout: float = 60.0,
                 log_max_bytes: int = DEFAULT_MAX_BYTES, log_keep: int = DEFAULT_KEEP,
                 cgroup_parent: str = "corral", stop_grace: float = 2.0,
                 networks: dict | None = None, cgroup_manager: str = "cgroupfs") -> None:
        from corral.net.registry import Networks, parse_options

        self.root = os.path.abspath(root)
        # bridge networks by name ({"corral0": {"subnet": ..., "nat": ...}}; docs/networks.md)
        self.networks = Networks(os.path.join(self.root, SUPERVISOR_DIR, "networks"),
                                 parse_options(networks), lambda: list_ids(self.root))
        self.cgroup_parent = cgroup_parent
        if cgroup_manager not in ("cgroupfs", "systemd"):
            raise ConfigError("cgroup_manager", f"{cgroup_manager!r} is not cgroupfs or systemd")
        # systemd: containers' cgroups are transient scopes (--systemd-cgroup), jobs' in the
        # slice the cgroup parent names ("corral" is corral.slice)
        self.systemd = cgroup_manager == "systemd"
        self.stop_grace = stop_grace  # SIGTERM to SIGKILL when a job's time is up
        self.keeper = keeper
        self._nursery = nursery
        self._creates = trio.CapacityLimiter(max_concurrent_creates)
        self.create_timeout = create_timeout
        self.log_max_bytes = log_max_bytes
        self.log_keep = log_keep
        self.tracked: dict[str, Tracked] = {}
        self._by_pid: dict[int, Tracked] = {}
        self.events = EventBus()
        self._busy: set[str] = set()  # ids being created or deleted by this engine
        self._background: set[trio.CancelScope] = set()
        # stdio of containers that neither log nor were given any
        self._null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.descriptors = Descriptors(self._null)  # a low RLIMIT_NOFILE (descriptors.py)
        self._job_templates: dict = {}  # a job template's config, parsed (_job_config)
        # cgroup parents our creations made (a job's cgroup parent): removed at the end
        # when no container is left in them
        self._made_parents: set[str] = set()
        self._staging = None  # host-root jobs' staging root (_host_root)
        self.journal: CreationJournal | None = None  # the daemon's (open_engine)

    def _spawn(self, fn, *args) -> None:
        """A background task (a watcher, a time limit) in the engine's nursery, shielded:
        whatever cancels the caller's work, the clean-up that follows still needs the
        watchers to see exits.  They end when the engine closes."""
        async def shielded() -> None:
            with trio.CancelScope(shield=True) as scope:
                self._background.add(scope)
                try:
                    await fn(*args)
                finally:
                    self._background.discard(scope)

        self._nursery.start_soon(shielded, name=getattr(fn, "__qualname__", None))

    def _close(self) -> None:
        for scope in list(self._background):
            scope.cancel()
        for path in sorted(self._made_parents, key=len, reverse=True):
            try:
                os.rmdir(path)  # EBUSY while a container is in it: it stays, as it should
            except OSError:
                pass
        self.descriptors.close()
        if self._null >= 0:
            os.close(self._null)
            self._null = -1
        if self.journal is not None:
            self.journal.close()

    # ---- events ----

    def subscribe(self):
        """Events from now on (an async context manager giving an async iterator): see
        ``EventBus``."""
        return self.events.subscribe()

    def _emit(self, kind: str, cid: str, **extra) -> None:
        self.events.emit(kind, cid, **extra)

    # ---- creating and starting ----

    async def create(self, cid: str, *, bundle: str | None = None, config: dict | None = None,
                     logs: bool = True, stdio: tuple[int, int, int] | None = None,
                     timeout: float | None = None, _extra: dict | None = None,
                     _host_step: tuple | None = None, _parsed=None,
                     _controllers: frozenset[str] | None = None) -> dict:
        """A container from a bundle directory, or from an inline OCI ``config`` (its
        ``root.path`` absolute: no bundle is written, its bundle is its state directory),
        created up to the exec-fifo wait.  Its stdout/stderr go to log files in its state
        dir (``logs``) or to ``stdio``.  ``_parsed``: a job's config, parsed (run_job)."""
        from corral.runtime.prepare import prepare
        from corral.runtime.trio_driver import create_container

        validate_id(cid)
        if _parsed is None and (bundle is None) == (config is None):
            raise ConfigError("bundle", "give exactly one of bundle and config")
        raw = config
        if config is not None:
            _parsed = _inline_config(config)
        elif _parsed is not None:
            _parsed, raw = _parsed
        await self._prune_one(cid)
        if cid in self._busy or cid in self.tracked:
            raise ContainerExists(cid)
        self._busy.add(cid)
        try:
            extra = {"managed": MANAGED, **(_extra or {})}
            if not logs and stdio is None:
                stdio = (self._null, self._null, self._null)
            async with self._creates:
                self.descriptors.check()  # refused now, rather than undone half-way
                prepared = prepare(self.root, cid, bundle, detach=True, record_extra=extra,
                                   journal=self.journal or _unjournaled, config=_parsed,
                                   raw=raw, controllers=_controllers,
                                   systemd_cgroup=self.systemd)
                if _host_step is not None:  # a job's network attach (run_job)
                    prepared.add_host_step(*_host_step)
                log_spec = ({"dir": prepared.state_dir.path, "max_bytes": self.log_max_bytes,
                             "keep": self.log_keep} if logs and stdio is None else None)
                try:
                    await create_container(
                        prepared, self.keeper, stdio=stdio, logs=log_spec, track=True,
                        deadline=self.create_timeout if timeout is None else timeout)
                except BaseException:
                    if log_spec is not None:
                        self.keeper.drop_log_copies(log_spec["dir"])
                    if os.path.lexists(prepared.state_dir.path):
                        # the undo itself ran out of descriptors: again, with the reserve
                        with self.descriptors.released():
                            prepared.undo_after_failure()  # rare: on the loop
                    raise
        finally:
            self._busy.discard(cid)
            if self.journal is not None:
                self.journal.end(cid)
        if prepared.cgroup is not None:
            for dirs in prepared.cgroup.prune.values():
                self._made_parents.update(dirs)
        tracked = self._track(cid, prepared.state_dir.path, prepared.record,
                              pidfd=prepared.init_pidfd, logs=log_spec is not None)
        prepared.init_pidfd = -1  # the watcher's now
        self._emit("created", cid, pid=tracked.pid)
        return _oci_state(prepared.record, CREATED)

    async def start(self, cid: str, timeout: float | None = None) -> dict:
        """Lets the init exec: opens the exec fifo for reading and waits for its byte."""
        tracked = self.tracked.get(cid)
        if tracked is not None and not tracked.exited.is_set() and not tracked.started_at:
            # ours, alive and never started: its record is in memory, its status known
            container = Container(StateDir(self.root, cid), tracked.record)
            if container.has_cgroup() and container._cgroup().frozen():
                raise ContainerStateError("cannot start a container in the paused state")
            try:
                fd = os.open(container.state_dir.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ContainerStateError("cannot start an already running container") from None
        else:
            container = self._load(cid)
            fd = container.open_fifo()
        started = False
        try:
            with trio.move_on_after(timeout if timeout else math.inf) as scope:
                async with trio.open_nursery() as nursery:
                    if tracked is not None:
                        # The init died before it could write (it did not get to exec).
                        nursery.start_soon(_cancel_when, tracked.exited, nursery.cancel_scope)
                    await _read_fifo(fd)
                    started = True
                    nursery.cancel_scope.cancel()
            # Cancelled by an exit: the byte may be there all the same (a process that
            # ran and ended at once).
            started = started or _fifo_byte(fd)
        finally:
            os.close(fd)
        if scope.cancelled_caught and not started:
            raise ContainerStateError("timed out waiting for the container to start")
        if not started:
            raise ContainerStateError("cannot start a container that has stopped")
        try:
            os.unlink(container.state_dir.fifo)
        except FileNotFoundError:
            pass
        if (container.record.get("hooks") or {}).get("poststart"):
            await trio.to_thread.run_sync(container._run_hooks, "poststart", RUNNING, container.pid)
        if tracked is not None:
            tracked.started_at = rfc3339_now()
            limit = (tracked.job or {}).get("timeLimit")
            if limit:
                self._spawn(self._enforce_time, tracked, limit)
        self._emit("started", cid, pid=container.pid)
        if tracked is not None and not tracked.exited.is_set():
            return _oci_state(container.record, RUNNING)
        return container.oci_state()

    async def _enforce_time(self, tracked: Tracked, limit: float) -> None:
        """A job's wall-time limit: SIGTERM, then SIGKILL after the grace period."""
        with trio.move_on_after(limit):
            await tracked.exited.wait()
            return
        tracked.timed_out = True
        self._emit("timeout", tracked.id, limit=limit)
        try:
            await self.stop(tracked.id, self.stop_grace)
        except CorralError:
            pass  # deleted or gone meanwhile

    # ---- jobs ----

    async def run_job(self, cid: str, job, *, logs: bool = True, start: bool = True) -> dict:
        """Creates (and starts) a container for a ``corral.jobs.job.Job``: its config in
        memory (``Job.config``; a host-root job on the engine's shared staging root), and for
        a job that needs one (a directory root, a bridge network) a work directory in
        ``<root>/.supervisor/jobs/<id>``, removed (but for a kept overlay layer) when the
        container is deleted."""
        from corral.jobs.job import Job

        if not isinstance(job, Job):
            raise ConfigError("job", f"{job!r} is not a corral.Job")
        validate_id(cid)
        workdir = (os.path.join(self.root, SUPERVISOR_DIR, "jobs", cid) if job.needs_workdir
                   else None)
        await self._prune_one(cid)
        if cid in self._busy or cid in self.tracked or (workdir and os.path.exists(workdir)):
            raise ContainerExists(cid)
        netns = self._joined_netns(job.joins) if job.joins else None
        if workdir is not None:
            os.makedirs(workdir, 0o700)
        upper = os.path.join(workdir, "upper") if job.root is not None else None
        info = {"workdir": workdir, "keep": job.keep, "upper": upper, "timeLimit": job.limits.time}
        try:
            config, raw = self._job_config(job, cid, workdir, netns)
            step = None
            if job.bridge is not None:
                step = await self._network_step(cid, job, workdir, raw)
                info["network"] = job.bridge
            state = await self.create(cid, bundle=workdir, logs=logs, _extra={"job": info},
                                      _host_step=step, _parsed=(config, raw),
                                      _controllers=_job_controllers(job))
        except BaseException:
            if workdir is not None:
                from corral.runtime.containers import remove_work_dir

                remove_work_dir(workdir, upper, False)
            raise
        if job.bridge is not None:  # no checkpoint since create returned (registry.py)
            self.networks.confirm(job.bridge, cid)
        if not start:
            return state
        return await self._start_or_delete(cid)

    def _job_config(self, job, cid: str, workdir: str | None, netns: str | None):
        """(the job's config parsed, as a dict or None).  The jobs of one template share a
        parse: only their cgroup path differs (a work directory or a joined namespace make
        each its own)."""
        from corral.oci.config import parse_config
        from corral.record import replace

        cgroups_path = f"/{self.cgroup_parent.strip('/')}/{cid}"
        if self.systemd:
            parent = self.cgroup_parent.strip("/")
            cgroups_path = f"{parent if parent.endswith('.slice') else parent + '.slice'}" \
                           f":corral:{cid}"
        if workdir is None and netns is None:
            key = (json.dumps(job.to_dict()), self.cgroup_parent)
            cached = self._job_templates.get(key)
            if cached is None:
                raw = job.config(cid, self.cgroup_parent, host_root=self._host_root())
                cached = (parse_config(raw), raw)
                if len(self._job_templates) >= 256:
                    self._job_templates.clear()
                self._job_templates[key] = cached
            template, raw = cached  # raw's cgroupsPath is another job's: exec reads not it
            return replace(template, linux=replace(template.linux,
                                                   cgroups_path=cgroups_path)), raw
        raw = job.config(cid, self.cgroup_parent, workdir=workdir,
                         host_root=self._host_root() if job.root is None else None, netns=netns)
        raw["linux"]["cgroupsPath"] = cgroups_path
        return parse_config(raw), raw

    def _host_root(self):
        """The staging root this engine's host-root jobs share (HostRoot), made once."""
        if self._staging is None:
            from corral.jobs.job import HostRoot

            self._staging = HostRoot.shared(os.path.join(self.root, SUPERVISOR_DIR),
                                            lambda: list_ids(self.root))
        return self._staging

    async def _network_step(self, cid: str, job, workdir: str, config: dict) -> tuple:
        """Opens the job's bridge network (the bridge is made on first use) and returns the
        creation step that attaches the container once its namespace exists."""
        from corral.jobs.job import NAMES_DIR

        if not self.networks.ready(job.bridge):
            await trio.to_thread.run_sync(self.networks.open, job.bridge, "job.network")
        return self.networks.attach_step(job.bridge, cid, os.path.join(workdir, NAMES_DIR),
                                         config.get("hostname") or cid, job.ports,
                                         job.peer_names)

    def _joined_netns(self, target: str) -> str:
        """A ``container:ID`` network: that container's namespace, by its init's pid."""
        try:
            container = self._load(target)
        except ContainerNotFound:
            raise ConfigError("job.network", f"container:{target}: no such container") from None
        status = container.status()
        if status not in (CREATED, RUNNING, PAUSED):
            raise ConfigError("job.network", f"container:{target}: it is {status}, not running")
        return f"/proc/{container.pid}/ns/net"

    def result(self, cid: str) -> dict:
        """What a caller of a finished job wants besides its output."""
        tracked = self.tracked.get(cid)
        if tracked is None:
            state = self._state_of(self._load(cid))
            return {"exitStatus": state.get("exitStatus"), "timedOut": False,
                    "peakMemory": None, "startedAt": None, "exitedAt": None}
        return {"exitStatus": tracked.exit_status, "timedOut": tracked.timed_out,
                "peakMemory": tracked.peak_memory, "startedAt": tracked.started_at,
                "exitedAt": tracked.exited_at}

    async def run(self, cid: str, **create_args) -> dict:
        """create + start; a failed start deletes what create made."""
        await self.create(cid, **create_args)
        return await self._start_or_delete(cid)

    async def _start_or_delete(self, cid: str) -> dict:
        try:
            return await self.start(cid)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.delete(cid, force=True)
            raise

    # ---- signals, stopping, deleting ----

    def kill(self, cid: str, sig: int, all_processes: bool = False) -> None:
        self._load(cid).kill(sig, all_processes)

    async def stop(self, cid: str, grace: float = 10.0, sig: int = _signal.SIGTERM) -> int | None:
        """``sig``, then SIGKILL to every process if the init is still there after
        ``grace`` seconds; returns the exit status (None when unknown)."""
        container = self._load(cid)
        tracked = self.tracked.get(cid)
        if container.status() in (CREATED, RUNNING, PAUSED):
            try:
                container.kill(sig)
                if container.status() == PAUSED:
                    container.resume()
            except ContainerStateError:
                pass  # exited meanwhile
            with trio.move_on_after(grace):
                if tracked is not None:
                    await tracked.exited.wait()
                else:  # the command line's, made while this engine ran: not watched
                    await _exited(container.pid, container.record.get("pid_start"))
            if container.status() != STOPPED:
                _kill_quietly(container, _signal.SIGKILL)
        if tracked is None:
            return None
        with trio.move_on_after(10):
            await tracked.exited.wait()
        return tracked.exit_status

    async def delete(self, cid: str, force: bool = False) -> None:
        tracked = self.tracked.get(cid)
        if (tracked is not None and tracked.exited.is_set() and cid not in self._busy
                and not (tracked.record.get("hooks") or {}).get("poststop")
                and not (tracked.job or {}).get("network")):
            if await self._delete_stopped(tracked):
                self._emit("deleted", cid)
                return
        container = self._load(cid)
        status = container.status()
        if status not in (STOPPED, CREATED) and not force:
            raise ContainerStateError(
                f"cannot delete container {cid} that is not stopped: {status}")
        if cid in self._busy:
            raise ContainerStateError(f"container {cid} is being created or deleted")
        self._busy.add(cid)
        tracked = self.tracked.get(cid)
        # Once begun, a delete finishes: a cancellation of the caller must not leave a
        # killed container half-removed (its cgroup, state dir or lease behind).
        try:
            with trio.CancelScope(shield=True):
                if status in (CREATED, RUNNING, PAUSED):
                    _kill_quietly(container, _signal.SIGKILL)
                    if tracked is not None:
                        with trio.move_on_after(10):
                            await tracked.exited.wait()
                if tracked is not None and tracked.managed:
                    await self.keeper.close_logs(container.state_dir.path)
                # Waiting for stragglers and cgroup rmdir retries block: not on the event
                # loop.  (It removes the inline bundle or the job's work directory too.)
                await trio.to_thread.run_sync(container.delete, True)
                network = (container.record.get("job") or {}).get("network")
                if network:  # a bridge job's veth, ports and lease
                    await trio.to_thread.run_sync(self.networks.detach, network, cid)
        finally:
            self._busy.discard(cid)
            if not os.path.isdir(container.state_dir.path):
                self._untrack(cid)
        self._emit("deleted", cid)

    async def _delete_stopped(self, tracked: Tracked) -> bool:
        """A stopped container of ours without hooks or network, removed on the event loop
        with the fewest syscalls: its cgroup (empty once the init is gone and it had its own
        pid namespace), its logs closed by the keeper, then its state dir.  False when it is
        not that simple (the general path then does it)."""
        record = tracked.record
        cgroup = None
        if record.get("cgroup"):
            from corral.cgroups import Cgroup

            cgroup = Cgroup.from_json(record["cgroup"])
            if not record.get("pid_ns") and cgroup.populated():
                return False  # leftovers of a container in the host's pid namespace
        self._busy.add(tracked.id)
        try:
            with trio.CancelScope(shield=True):
                if tracked.logs and tracked.managed:
                    await self.keeper.close_logs(tracked.state_dir)
                if cgroup is not None and cgroup.unit is not None:
                    from corral.cgroups import systemd_scope, systemd_trio

                    await systemd_trio.run(systemd_scope.stop(cgroup))
                    await trio.to_thread.run_sync(cgroup.remove_dirs)
                elif cgroup is not None:
                    # a cgroup whose last task just exited may say EBUSY for a moment
                    for delay in (0, 0.001, 0.004, 0.016, 0.05, 0.1, 0.2, 0.4, 0.8):
                        if delay:
                            await trio.sleep(delay)
                        if cgroup.try_destroy():
                            break
                    else:
                        await trio.to_thread.run_sync(cgroup.destroy)
                state_dir = StateDir(self.root, tracked.id)
                if not state_dir.try_remove(("state.json", "exit.json", "exec.fifo",
                                             "stdout.log", "stderr.log")):
                    await trio.to_thread.run_sync(state_dir.remove)
                Container(state_dir, record).remove_supervisor_files()
        finally:
            self._busy.discard(tracked.id)
            self._untrack(tracked.id)
        return True

    # ---- state ----

    def state(self, cid: str) -> dict:
        return self._state_of(self._load(cid))

    def list(self) -> list[dict]:
        out = []
        for cid in list_ids(self.root):
            try:
                out.append(self._state_of(self._load(cid)))
            except ContainerNotFound:
                continue  # deleted while we listed
        return out

    def _state_of(self, container: Container) -> dict:
        state = container.oci_state()
        tracked = self.tracked.get(container.id)
        if tracked is not None and tracked.exited.is_set():
            state["exitStatus"] = tracked.exit_status
        elif state["status"] == STOPPED:
            record = read_exit(container.state_dir.path)
            state["exitStatus"] = record["exitStatus"] if record else None
        state["managed"] = container.record.get("managed") == MANAGED
        return state

    async def wait(self, cid: str) -> int | None:
        """The exit status once the init has exited (None when nobody could know it: a
        container of the command line's, or one whose keeper died with it)."""
        tracked = self.tracked.get(cid)
        if tracked is None or not os.path.isdir(tracked.state_dir):
            self._forget_if_gone(cid)
            return self._state_of(self._load(cid)).get("exitStatus")
        await tracked.exited.wait()
        return tracked.exit_status

    def stats(self, cid: str) -> dict:
        from corral.runtime.events import stats_event

        container = self._load(cid)
        if container.status() not in (CREATED, RUNNING, PAUSED):
            raise ContainerStateError("container not running")
        return stats_event(container)["data"]

    def _load(self, cid: str) -> Container:
        validate_id(cid)
        return Container.load(self.root, cid)

    # ---- exec ----

    async def exec(self, cid: str, args: list[str] | None = None, *, process: dict | None = None,
                   env: list[str] = (), cwd: str | None = None, user: str | None = None,
                   timeout: float | None = None) -> dict:
        """Runs a process in the container to its end (``exec_capture.run_to_end``)."""
        from corral.supervisor.exec_capture import run_to_end

        return await run_to_end(self.root, self.keeper, cid, args, process=process, env=env,
                                cwd=cwd, user=user, timeout=timeout)

    async def wait_result(self, cid: str) -> dict:
        """``wait``, then ``result``: what a caller waiting for a job wants."""
        await self.wait(cid)
        return self.result(cid)

    # ---- logs ----

    async def text_logs(self, cid: str, which: str = "both",
                        follow: bool = False) -> AsyncIterator[tuple[str, str]]:
        """``logs`` as text (UTF-8, a character split across reads kept whole; invalid
        bytes replaced): ``which`` is stdout, stderr or both."""
        if which not in ("stdout", "stderr", "both"):
            raise ConfigError("stream", f"{which!r}: use stdout, stderr or both")
        streams = STREAMS if which == "both" else (which,)
        decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in streams}
        async for stream, data in self.logs(cid, streams, follow):
            text = decoders[stream].decode(data)
            if text:
                yield stream, text

    async def logs(self, cid: str, streams: tuple[str, ...] = STREAMS,
                   follow: bool = False, poll: float = 0.1) -> AsyncIterator[tuple[str, bytes]]:
        """(stream, bytes) from the start of the kept logs; with ``follow``, until the
        container has exited and its logs are drained."""
        for stream in streams:
            if stream not in STREAMS:
                raise ConfigError("stream", f"{stream!r}: use stdout or stderr")
        tracked = self.tracked.get(cid)
        state_dir = tracked.state_dir if tracked is not None else self._load(cid).state_dir.path
        readers = [LogReader(state_dir, s, follow) for s in streams]
        try:
            while True:
                ended = not follow or tracked is None or tracked.exited.is_set()
                got = False
                for reader in readers:
                    data = reader.read()
                    while data:
                        got = True
                        yield reader.stream, data
                        data = reader.read()
                if ended and not got:
                    return
                if not got:
                    with trio.move_on_after(poll):
                        await tracked.exited.wait()
        finally:
            for reader in readers:
                reader.close()

    # ---- watching ----

    def _track(self, cid: str, state_dir: str, record: dict, pidfd: int = -1,
               logs: bool = True) -> Tracked:
        tracked = Tracked(cid, state_dir, record)
        tracked.logs = logs
        self.tracked[cid] = tracked
        if tracked.pid:
            self._by_pid[tracked.pid] = tracked
        self._spawn(self._watch, tracked, record.get("cgroup"), pidfd)
        return tracked

    def _forget_if_gone(self, cid: str) -> Tracked | None:
        """A container deleted by someone else (the command line) is no longer ours;
        returns what was forgotten."""
        tracked = self.tracked.get(cid)
        if tracked is not None and cid not in self._busy and not os.path.isdir(tracked.state_dir):
            self._untrack(cid)
            return tracked
        return None

    def _untrack(self, cid: str) -> None:
        tracked = self.tracked.pop(cid, None)
        if tracked is not None and self._by_pid.get(tracked.pid) is tracked:
            del self._by_pid[tracked.pid]

    async def prune(self) -> None:
        """Forgets containers deleted behind the engine's back."""
        for cid in list(self.tracked):
            await self._prune_one(cid)

    async def _prune_one(self, cid: str) -> None:
        """If ``cid`` was deleted by someone else (the command line, which does not load
        the network code): forget it, and give back a bridge job's veth and lease."""
        gone = self._forget_if_gone(cid)
        if gone is None:
            return
        network = (gone.job or {}).get("network")
        if network:
            await trio.to_thread.run_sync(self.networks.detach, network, cid)
        self._emit("deleted", cid)

    def container_of(self, pid: int) -> str | None:
        """The id of the container whose init is ``pid``, if the engine watches it."""
        tracked = self._by_pid.get(pid)
        return tracked.id if tracked is not None else None

    async def _watch(self, tracked: Tracked, cgroup_json: dict | None, pidfd: int = -1) -> None:
        """Waits on the init's pidfd (the creation's own, or one opened for an adopted
        container); reports OOMs meanwhile (a memory limit's); then learns its status."""
        if pidfd >= 0:
            watched = True  # opened before the init could be reaped: it names the init
        else:
            try:
                pidfd = os.pidfd_open(tracked.pid)
            except (ProcessLookupError, ValueError):
                pidfd = -1
            watched = pidfd >= 0 and is_alive(tracked.pid, tracked.pid_start)
        oom = None
        try:
            if watched:
                oom = oom_watch(cgroup_json) if tracked.record.get("memoryLimit", True) else None
                if oom is None:
                    await trio.lowlevel.wait_readable(pidfd)
                else:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._report_ooms, tracked.id, oom)
                        await trio.lowlevel.wait_readable(pidfd)
                        nursery.cancel_scope.cancel()
                count = oom.check() if oom is not None else 0
                if count:
                    self._emit("oom", tracked.id, count=count)
            tracked.exited_at = rfc3339_now()
            tracked.peak_memory = peak_memory(cgroup_json)
            tracked.exit_status = await self._exit_status(tracked, watched)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            if oom is not None:
                oom.close()
            tracked.exited.set()
        self._emit("exited", tracked.id, exitStatus=tracked.exit_status)

    async def _report_ooms(self, cid: str, oom) -> None:
        while True:
            await trio.lowlevel.wait_readable(oom.fd)
            count = oom.check()
            if count:
                self._emit("oom", cid, count=count)
            if oom.gone():
                return
            # A v1 cgroup under memory pressure signals thousands of OOMs a second: at
            # most one event per OOM_EVENT_PERIOD, with the count since the last one.
            await trio.sleep(OOM_EVENT_PERIOD)

    async def _exit_status(self, tracked: Tracked, watched: bool) -> int | None:
        """From the keeper's report when this engine saw the init exit; from exit.json
        (written before any report) when it had exited already (adopted after a restart)."""
        if not tracked.keeper_child:  # reparented to the host's init: nobody reaps it for us
            record = read_exit(tracked.state_dir)
            return record["exitStatus"] if record and record.get("pid") == tracked.pid else None
        if watched and tracked.managed and (self.keeper.alive or self.keeper.replaceable):
            # the keeper reports right after it reaps (the daemon, a dead keeper's orphans)
            with trio.move_on_after(2):
                try:
                    return await self.keeper.wait(tracked.pid)
                except CorralError:
                    pass  # the (embedded) keeper died: exit.json, or unknown
            self.keeper.forget(tracked.pid)
        # No keeper to ask: the status is on disk (written by a keeper before it died, or
        # by the daemon's orphan reaper, which may be a moment behind this watcher).
        patience = 3.0 if tracked.managed else 0.0
        while True:
            record = read_exit(tracked.state_dir)
            if record is not None and record.get("pid") == tracked.pid:
                return record["exitStatus"]
            if patience <= 0:
                return None
            await trio.sleep(0.05)
            patience -= 0.05

    async def adopt(self) -> dict:
        """At start-up: watch every container of the root again; undo creations a dead
        daemon left half-made.  Returns counts for the log."""
        counts = {"running": 0, "exited": 0, "undone": 0}
        exited: list[str] = []
        # creations a dead daemon had in flight (its client never heard they were made),
        # with or without their state.json yet: undone, as a failed creation is
        for entry in CreationJournal.read(os.path.join(self.root, SUPERVISOR_DIR, JOURNAL)):
            try:
                validate_id(entry.get("id"))
            except ConfigError:
                continue  # not a line of ours
            cid = entry["id"]
            await trio.to_thread.run_sync(_undo_in_flight, self.root, cid, entry)
            counts["undone"] += 1
        if self.journal is not None:
            self.journal.clear()
        for cid in list_ids(self.root):
            try:
                container = Container.load(self.root, cid)
            except ContainerNotFound:
                continue
            record = container.record
            if container.status() == CREATING:
                if record.get("managed") == MANAGED:
                    await trio.to_thread.run_sync(_undo_half_made, container)
                    counts["undone"] += 1
                continue  # the command line's own creation, in progress: not ours
            tracked = self._track(cid, container.state_dir.path, record)
            alive = is_alive(tracked.pid, tracked.pid_start)
            if alive and tracked.managed:
                # not the keeper's child: its keeper and then its daemon died, and the
                # init went to the host's init (or another subreaper), which has its status
                tracked.keeper_child = parent_pid(tracked.pid) == self.keeper.pid
            counts["running" if alive else "exited"] += 1
            if not alive:
                exited.append(cid)
        # Network leases of containers that are gone or died mid-create (a daemon killed)
        freed = await trio.to_thread.run_sync(self.networks.reclaim, list_ids(self.root),
                                              exited)
        counts["network_leases_freed"] = sum(len(ids) for ids in freed.values())
        return counts

    def reap_orphan(self, pid: int, status: int) -> bool:
        """An init reparented to the daemon (its keeper died): record its status as the
        keeper would have.  False if ``pid`` is not a container's."""
        tracked = self._by_pid.get(pid)
        if tracked is None:
            return False
        from corral.runtime.exits import write_exit

        try:
            write_exit(tracked.state_dir, pid, status, rfc3339_now())
        except OSError:
            pass
        return True


# The cgroup hierarchies of a job of ours (a host or directory root): the cgroup2 one (every
# process, kill, freeze, events), memory (its limit, its peak), pids (its limit, no fork bomb),
# devices (the default rules), and cpu for a CPU limit.  A bundle's job gets them all.
JOB_CONTROLLERS = frozenset({"unified", "memory", "pids", "devices"})


def _job_controllers(job) -> frozenset[str] | None:
    if job.bundle_dir is not None:
        return None
    return JOB_CONTROLLERS | ({"cpu"} if job.limits.cpus is not None else set())


def _inline_config(config: object):
    """An API caller's OCI config, parsed: there is no bundle to resolve a relative root
    path against."""
    from corral.oci.config import parse_config

    if not isinstance(config, dict):
        raise ConfigError("config", "must be a JSON object (an OCI config.json)")
    root_path = (config.get("root") or {}).get("path")
    if not isinstance(root_path, str) or not os.path.isabs(root_path):
        raise ConfigError("config.root.path", "an inline config needs an absolute root "
                                              "path (there is no bundle directory)")
    return parse_config(config)


def _unjournaled(record: dict) -> None:
    """An embedded engine's creations: nobody adopts them after a crash, so nothing is
    written before the init's pid (state.json is written once, then)."""


def _oci_state(record: dict, status: str) -> dict:
    """The OCI state of a container whose status the engine knows (Container.oci_state's
    fields and order, without probing /proc, the freezer and the fifo for it)."""
    state = {"ociVersion": record["ociVersion"], "id": record["id"],
             "pid": record.get("pid") or 0, "status": status, "bundle": record["bundle"],
             "rootfs": record["rootfs"], "created": record["created"]}
    if record.get("annotations"):
        state["annotations"] = record["annotations"]
    state["owner"] = record.get("owner", "")
    return state


class CreationJournal:
    """The daemon's record of creations in flight: a line when one begins (appended before
    its cgroup is made: its state.json is then written once, with the init's pid) and a
    line when it ends, made or undone.  A daemon killed in between leaves what ``adopt``
    needs to undo the creation (the state dir and the cgroup); an ended one is never undone,
    so a later container at its cgroup path is safe.  Compacted to the creations in flight
    past ``MAX_BYTES``."""

    MAX_BYTES = 1 << 20

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = self._open()
        self._in_flight: dict[str, bytes] = {}  # id -> its begin line
        self._unwritten = b""  # lines a full filesystem had no room for

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _reserve(fd, 2 * self.MAX_BYTES)
        return fd

    def __call__(self, record: dict) -> None:
        entry = {"id": record["id"], "cgroup": record.get("cgroup")}
        if record.get("job"):  # its work directory, made before
            entry["job"] = record["job"]
        line = (json.dumps(entry) + "\n").encode()
        self._write(line)
        self._in_flight[record["id"]] = line

    def _write(self, line: bytes, keep: bool = False) -> None:
        """Appends ``line`` after any end line a full filesystem held back (``keep``: hold
        this one back too if it cannot be written now)."""
        data = self._unwritten + line
        try:
            written = os.write(self.fd, data)
        except OSError as exc:
            if keep:
                self._unwritten = data
            raise OSError(exc.errno, exc.strerror, self.path) from None
        self._unwritten = data[written:]

    def end(self, cid: str) -> None:
        """The creation of ``cid`` is over (a journaled one: else nothing to write).  Never
        raises: an end line the filesystem has no room for is written with the next line
        (meanwhile a daemon restart would undo the creation: see "Promises under
        faults")."""
        if self._in_flight.pop(cid, None) is None:
            return
        try:
            self._write((json.dumps({"id": cid, "end": True}) + "\n").encode(), keep=True)
            if os.lseek(self.fd, 0, os.SEEK_END) > self.MAX_BYTES:
                self._compact()
        except OSError:
            pass  # held back in _unwritten

    def _compact(self) -> None:
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(b"".join(self._in_flight.values()))
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return  # no room to compact: the journal goes on growing into its reserve
        os.close(self.fd)
        self.fd = self._open()

    def clear(self) -> None:
        """Nothing in flight (``adopt`` has undone what a dead daemon left)."""
        os.ftruncate(self.fd, 0)
        _reserve(self.fd, 2 * self.MAX_BYTES)
        self._in_flight.clear()

    @staticmethod
    def read(path: str) -> list[dict]:
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        begun: dict = {}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by the crash
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            if entry.get("end"):
                begun.pop(entry["id"], None)
            else:
                begun[entry["id"]] = entry
        return list(begun.values())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _reserve(fd: int, size: int) -> None:
    """Disk blocks for the journal beyond its end (fallocate KEEP_SIZE), so that its lines
    are written even on a full filesystem (where creations fail further on, and their end
    lines must be written).  A filesystem without fallocate goes without."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(size))  # 1: FALLOC_FL_KEEP_SIZE


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _exited(pid: int, pid_start: int | None) -> None:
    """Returns once the process ``pid`` (started at ``pid_start``) has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, ValueError):
        return
    try:
        if is_alive(pid, pid_start):  # the pidfd names it, not a process that reused pid
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def _read_fifo(fd: int) -> None:
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            continue
        if data:
            return
        # The writer came and went, and another `start` took its byte.
        raise ContainerStateError("cannot start an already running container")


def _fifo_byte(fd: int) -> bool:
    try:
        return bool(os.read(fd, 1))
    except BlockingIOError:
        return False


def _kill_quietly(container: Container, sig: int) -> None:
    """A signal to the container, and to a paused one's thawed processes; one that exited
    meanwhile is not an error (delete and stop want it gone, and it is)."""
    try:
        container.kill(sig, all_processes=container.has_cgroup())
        if container.status() == PAUSED:
            container.resume()
    except ContainerStateError:
        pass


def _undo_in_flight(root: str, cid: str, entry: dict) -> None:
    """A creation a dead daemon had in flight (its journal line comes before its state dir):
    no state dir, nothing was made; a state dir without state.json, or with a record of
    ours, is this creation's (the id was busy until the creation's end line): its
    processes, cgroup and state dir go.  A record not ours is the command line's container
    (our creation found the id taken): left alone."""
    state_dir = StateDir(root, cid)
    journaled = {"id": cid, "cgroup": entry.get("cgroup"), "job": entry.get("job"),
                 "managed": MANAGED}
    if not os.path.isdir(state_dir.path):  # but a job's work directory, made before
        Container(state_dir, journaled).remove_supervisor_files(keep=False)
        return
    try:
        container = Container.load(root, cid)
    except ContainerNotFound:  # no state.json yet
        container = Container(state_dir, journaled)
    if container.record.get("managed") != MANAGED:
        return
    if not container.record.get("cgroup"):
        container.record["cgroup"] = journaled["cgroup"]
    _undo_half_made(container)


def _undo_half_made(container: Container) -> None:
    from corral.cgroups import Cgroup

    record = container.record
    if record.get("cgroup"):
        cgroup = Cgroup.from_json(record["cgroup"])
        cgroup.kill_all(_signal.SIGKILL)
        cgroup.destroy()
    container.state_dir.remove()
    container.remove_supervisor_files(keep=False)


@asynccontextmanager
async def open_engine(root: str, *, daemon: bool = False, log=None,
                      **options) -> AsyncIterator[Engine]:
    """An engine on ``root``.  ``daemon``: the daemon's shape (one per root, a keeper that
    outlives this process, containers adopted at start); otherwise an embedded keeper that
    ends with the ``async with`` (its containers are the caller's to delete)."""
    from corral.supervisor.keeper_handle import DaemonLock, open_keeper, open_embedded_keeper

    os.makedirs(root, 0o711, exist_ok=True)
    lock = DaemonLock(root) if daemon else None
    try:
        async with (open_keeper(root, log) if daemon else open_embedded_keeper()) as keeper:
            async with trio.open_nursery() as nursery:
                engine = Engine(root, keeper, nursery, **options)
                if daemon:
                    engine.journal = CreationJournal(os.path.join(root, SUPERVISOR_DIR,
                                                                  JOURNAL))
                try:
                    yield engine
                finally:
                    engine._close()
                    nursery.cancel_scope.cancel()
                    with trio.CancelScope(shield=True):  # unused bridges go (registry.py)
                        await trio.to_thread.run_sync(engine.networks.close)
                    if engine._staging is not None and not list_ids(root):
                        engine._staging.remove()  # no job left that could be using it
    finally:
        if lock is not None:
            lock.release()
        if not daemon:  # an embedded engine's own files, once empty
            for name in ("jobs", "bundles", ""):
                try:
                    os.rmdir(os.path.join(root, SUPERVISOR_DIR, name))
                except OSError:
                    pass
