"""Operations on existing containers through their state directories: state, start, kill,
pause, resume, ps, delete.  Shared by the command line and the supervisor; no trio, few imports."""

from __future__ import annotations

import os
import select
import _signal as signal  # `signal` itself imports enum: ~2 ms of every command
import time

from corral.errors import ContainerNotFound, ContainerStateError, CorralError
from corral.oci.state import StateDir, list_ids, validate_id
from corral.procfs import is_alive

CREATING, CREATED, RUNNING, PAUSED, STOPPED = (
    "creating", "created", "running", "paused", "stopped")


class Container:
    def __init__(self, state_dir: StateDir, record: dict) -> None:
        self.state_dir = state_dir
        self.record = record

    @classmethod
    def load(cls, root: str, container_id: str) -> Container:
        validate_id(container_id)
        state_dir = StateDir(root, container_id)
        return cls(state_dir, state_dir.read())

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def pid(self) -> int:
        return self.record.get("pid") or 0

    def status(self) -> str:
        if not self.pid:
            return CREATING
        if not is_alive(self.pid, self.record.get("pid_start")):
            return STOPPED
        if self.record.get("cgroup") and self._cgroup().frozen():
            return PAUSED  # runc: a frozen cgroup says paused, created or running
        # The exec fifo lives from create until start has opened it.
        return CREATED if os.path.exists(self.state_dir.fifo) else RUNNING

    def oci_state(self) -> dict:
        """The OCI state, with runc's extra fields, in runc's key order."""
        status = self.status()
        state = {
            "ociVersion": self.record["ociVersion"],
            "id": self.id,
            "pid": self.pid if status in (CREATED, RUNNING, PAUSED) else 0,
            "status": status,
            "bundle": self.record["bundle"],
            "rootfs": self.record["rootfs"],
            "created": self.record["created"],
        }
        if self.record.get("annotations"):
            state["annotations"] = dict(sorted(self.record["annotations"].items()))  # a Go map
        state["owner"] = self.record.get("owner", "")
        return state

    def _cgroup(self):
        """The container's cgroup; a rootless container without a delegated cgroup has
        none (``"cgroup": null`` in its record): what needs one fails clearly."""
        from corral.cgroups import Cgroup

        if not self.record.get("cgroup"):
            from corral.runtime.rootless import no_cgroup

            raise no_cgroup()
        return Cgroup.from_json(self.record["cgroup"])

    def has_cgroup(self) -> bool:
        return bool(self.record.get("cgroup"))

    # ---- start ----

    def open_fifo(self) -> int:
        """The exec fifo opened for reading (non-blocking), after runc's state checks:
        the first step of every `start`."""
        status = self.status()
        if status == STOPPED:
            raise ContainerStateError("cannot start a container that has stopped")
        if status != CREATED:
            raise ContainerStateError(f"cannot start a container in the {status} state")
        try:
            return os.open(self.state_dir.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerStateError("cannot start an already running container") from None

    def start(self, timeout: float | None = None) -> None:
        """Lets init exec: opening the fifo for reading releases its blocked write."""
        fd = self.open_fifo()
        try:
            self._await_fifo(fd, timeout)
        finally:
            os.close(fd)
        try:
            os.unlink(self.state_dir.fifo)
        except FileNotFoundError:
            pass
        self._run_hooks("poststart", RUNNING, self.pid)

    def _run_hooks(self, kind: str, status: str, pid: int) -> None:
        """poststart and poststop, in the bundle directory: a failure is logged and the rest
        still run (runtime-spec: 'the runtime MUST log a warning', the operation goes on)."""
        items = (self.record.get("hooks") or {}).get(kind)
        if not items:
            return
        import sys

        from corral.runtime.hooks import HookError, hooks_from_json, run_hook, state_from_record

        state = state_from_record(self.record, status, pid)
        for index, hook in enumerate(hooks_from_json(items)):
            try:
                run_hook(kind, index, hook, state, self.record["bundle"])
            except HookError as exc:
                sys.stderr.write(f"corral: warning: {exc}\n")

    def _await_fifo(self, fd: int, timeout: float | None) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if poller.poll(100):
                if os.read(fd, 1):
                    return
                # The writer came and went, and another `start` took its byte.
                raise ContainerStateError("cannot start an already running container")
            if not is_alive(self.pid, self.record.get("pid_start")):
                raise ContainerStateError("cannot start a container that has stopped")
            if end is not None and time.monotonic() > end:
                raise ContainerStateError("timed out waiting for the container to start")

    # ---- kill ----

    def kill(self, sig: int, all_processes: bool = False) -> None:
        """``sig`` as given (0 checks for the init; runc refuses no number, the kernel
        does: what it says of one out of range is said here)."""
        status = self.status()
        live = status in (CREATED, RUNNING, PAUSED)
        if not 0 <= sig < signal.NSIG and (all_processes or live):
            raise CorralError("unable to signal init: invalid argument")
        if all_processes:
            if self.has_cgroup():
                self._cgroup().kill_all(sig)
            elif live:
                self._signal_without_cgroup(sig)
            return
        if not live:
            raise ContainerStateError("container not running")
        self._signal_init(sig)
        # A paused init gets the signal when resumed; SIGKILL thaws it so it dies now (runc).
        if status == PAUSED and sig == signal.SIGKILL and self.has_cgroup():
            self._cgroup().thaw()

    # ---- pause, resume, ps ----

    def pause(self) -> None:
        """Freezes every process of a created or running container (runc allows both)."""
        if self.status() not in (CREATED, RUNNING):
            raise ContainerStateError("container not running")
        self._cgroup().freeze()

    def resume(self) -> None:
        if self.status() != PAUSED:
            raise ContainerStateError("container not paused")
        self._cgroup().thaw()

    def processes(self) -> list[int]:
        """Host pids of every process in the container's cgroup."""
        return self._cgroup().pids()

    def _signal_without_cgroup(self, sig: int) -> None:
        """kill --all with no cgroup (rootless): every process of the init's own pid
        namespace (the init first), or, sharing the host's, the init alone."""
        self._signal_init(sig)
        if not self.record.get("pid_ns"):
            return
        try:
            ns = os.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            return
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.pid:
                continue
            try:
                if os.readlink(f"/proc/{name}/ns/pid") != ns:
                    continue
                pidfd = os.pidfd_open(int(name))
            except OSError:
                continue  # gone, or not ours to see
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except OSError:
                pass
            finally:
                os.close(pidfd)

    def _signal_init(self, sig: int) -> None:
        """Through a pidfd checked against the start time: never signals a reused pid."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            raise ContainerStateError("container not running") from None
        try:
            if not is_alive(self.pid, self.record.get("pid_start")):
                raise ContainerStateError("container not running")
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            raise ContainerStateError("container not running") from None
        finally:
            os.close(pidfd)

    # ---- delete ----

    def delete(self, force: bool = False) -> None:
        status = self.status()
        # runc deletes a created container (never started) without --force too.
        if status not in (STOPPED, CREATED) and not force:
            raise ContainerStateError(
                f"cannot delete container {self.id} that is not stopped: {status}")
        cgroup = self._cgroup() if self.has_cgroup() else None
        # Leftovers (a container without its own pid namespace keeps them after init exits).
        # Without a cgroup (rootless) the init's pid namespace dies with it; without one of
        # those either, nothing tracks them (as with runc).
        if cgroup is not None:
            cgroup.kill_all(signal.SIGKILL)
        if status in (CREATED, RUNNING, PAUSED):
            self._wait_gone(5.0)
        if cgroup is not None:
            cgroup.destroy()
        self.state_dir.remove()
        self.remove_supervisor_files()
        self._run_hooks("poststop", STOPPED, 0)

    def remove_supervisor_files(self, keep: bool | None = None) -> None:
        """What was made beside the state dir, named in the record (a supervisor's job work
        directory; the mounts of a container without a mount namespace of its own): gone
        with the container whoever deletes it, once its processes are."""
        if self.record.get("shared_mounts"):
            from corral.runtime import shared_mounts

            shared_mounts.release(self.record["shared_mounts"], self.record["rootfs"])
        job = self.record.get("job")
        if job and job.get("workdir"):
            remove_work_dir(job["workdir"], job.get("upper"),
                            bool(job.get("keep")) if keep is None else keep)

    def _wait_gone(self, timeout: float) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if is_alive(self.pid, self.record.get("pid_start")):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)


def remove_work_dir(path: str, upper: str | None, keep: bool) -> None:
    """A job's work directory (idempotent); with ``keep`` its overlay ``upper`` layer stays.
    Refused while anything is mounted below it: removing files there would reach into that
    mount (the host's own files, for a bind)."""
    import shutil

    from corral.procfs import mount_points

    if not os.path.isdir(path):
        return
    prefix = path.rstrip("/") + "/"
    below = [m for m in mount_points() if m == path or m.startswith(prefix)]
    if below:
        raise CorralError(f"{path}: still mounted below it: {below[0]} "
                          "(delete the container first)")
    if not keep:
        shutil.rmtree(path)
        return
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if full == upper:
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def list_containers(root: str) -> list[Container]:
    out = []
    for cid in list_ids(root):
        try:
            out.append(Container.load(root, cid))
        except ContainerNotFound:
            continue  # deleted while we listed
    return out
