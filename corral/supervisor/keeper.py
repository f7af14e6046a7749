"""The keeper: a single-threaded helper that is the parent of every container of a trio
program, and keeps their exit statuses and logs.

Forking a threaded process is unsafe, and a trio program may have threads, so containers
are not forked by the supervisor.  Nor by the keeper: its spawner (``corral-exec spawner``, a
small C process, its child) forks each launcher with CLONE_PARENT, and the launcher clones the
init with CLONE_PARENT too, so both are the keeper's children without a copy of a Python
heap.  The supervisor sends its spawn requests (the child end of a sync socketpair and stdio,
SCM_RIGHTS) to the spawner directly, on a connection the keeper hands it in its hello, so no
creation waits on the keeper's loop.  The keeper reaps the children, writes each tracked
init's exit status to its state directory (fsync) and only then reports it, and copies the
containers' stdout and stderr pipes into their log files.

Two modes.  Embedded (``corral.Supervisor``, tests): the control socket is one end of a
socketpair and its EOF ends the keeper.  Keeper (``corral supervise``): the keeper is given a
listening socket; when the daemon goes away it keeps reaping, recording statuses and writing
logs, and a restarted daemon connects again.  It exits once it has no daemon, no child and no
log left.

Control socket (SOCK_SEQPACKET, one JSON object per packet):
    supervisor -> keeper  {"op": "logs", "dir", "max_bytes", "keep"[, "streams"]}
                                + fds [stdout, stderr] (or those of "streams")
                                                    the read ends of a container's pipes
                          {"op": "track", "pid": P, "dir": D}   the init of the container in D
                          {"op": "close_logs", "seq": N, "dir": D}
                          {"op": "hello"}   a new connection to the spawner, please
                          {"op": "share_logs", "seq": N}   the log pipes, please
    keeper -> supervisor  {"op": "hello", "pid": P, "version": V} + fd [the spawner]  (on connect)
                          {"op": "logs_closed", "seq": N} |
                          {"op": "log_pipes", "dir", "max_bytes", "keep", "streams"}
                                + fds (one per stream) ... {"op": "logs_shared", "seq": N} |
                          {"op": "exited", "pid": P, "status": S}
The spawner's own framing is executor.c's (spawn_one).
"""

from __future__ import annotations

import _signal as signal  # the keeper lives long: `signal`, `socket` and `json` would
import _socket as socket  # cost it ~2 MiB (enum, re, selectors) for nothing it uses
import array
import errno
import os
import select
import sys
import time

from corral import jsonlite as json

from corral.plan.format import EXECUTOR
from corral.runtime.foreground import exit_status


FDS_PER_SPAWN = 4
MAX_PACKET = 65536
KEEPER_VERSION = 3  # 3: share_logs, hello on request, logs of some streams
KEEPER_VERSIONS = (2, 3)  # what a daemon talks to (a keeper that outlived an upgrade)
SPAWNER_ADD = 0xFFFFFFFF  # a request to the spawner: serve this connection too
_PENDING_MAX = 1024  # statuses of pids not (yet) tracked: kept briefly for a late "track"
_PENDING_TTL = 10.0  # seconds: a reused pid never gets an old status
PR_SET_CHILD_SUBREAPER = 36
_DRAIN_READS = 16  # 16 reads of 64 KiB: a pipe at the kernel's default pipe-max-size
RETRY_MS = 1000  # writing an exit status again (a full filesystem)


class Keeper:
    def __init__(self, control: socket.socket | None, listener: socket.socket | None) -> None:
        self.control = control
        self.listener = listener
        self.tracked: dict[int, str] = {}
        self.pending: dict[int, tuple[int, float]] = {}  # pid -> (status, when reaped)
        self.logs: dict[int, object] = {}  # pipe read fd -> LogFile
        self.poller = select.poll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.spawner: socket.socket | None = None
        self.spawner_pid = 0
        # statuses not on disk yet (a full filesystem): state dir -> (pid, status, when),
        # written again every RETRY_MS until they are, or their state dir is gone
        self.unrecorded: dict[str, tuple[int, int, str]] = {}

    # ---- the loop ----

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poller.register(self.wake_r, select.POLLIN)
        if self.control is not None:
            self.poller.register(self.control, select.POLLIN)
        if self.listener is not None:
            self.poller.register(self.listener, select.POLLIN)
        self._start_spawner()
        if self.control is not None:
            self._hello()
        while True:
            # Without a daemon, look now and then whether the keeper's work is done.
            timeout = None if self.control is not None or self.listener is None else 5000
            if self.unrecorded:
                timeout = RETRY_MS
            for fd, _events in self.poller.poll(timeout):
                if fd == self.wake_r:
                    _drain(self.wake_r)
                elif self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif self.control is not None and fd == self.control.fileno():
                    if not self._serve_one():
                        self._drop_control()
                        if self.listener is None:
                            self._stop_spawner()
                            self._reap()
                            return
                elif self.spawner is not None and fd == self.spawner.fileno():
                    self._spawner_died()  # it never writes to us: EOF
                elif fd in self.logs:
                    self._relay(fd)
            self._reap()
            if self.unrecorded:
                self._record_again()
            if self.listener is not None and self._idle():
                try:  # no daemon will find a dead keeper's socket
                    os.unlink(self.listener.getsockname())
                except OSError:
                    pass
                self._stop_spawner()
                return

    def _idle(self) -> bool:
        """Nobody to serve and nothing to keep: the keeper's work is done."""
        if self.control is not None or self.logs or self.unrecorded:
            return False
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                children = {int(pid) for pid in f.read().split()}
        except OSError:
            return False
        return children <= {self.spawner_pid}

    # ---- the spawner ----

    def _start_spawner(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.set_inheritable(theirs.fileno(), True)
            self.spawner_pid = os.posix_spawn(
                EXECUTOR, [EXECUTOR, "spawner", str(theirs.fileno())], {})
        finally:
            theirs.close()
        self.spawner = ours
        self.poller.register(ours, select.POLLIN)

    def _stop_spawner(self) -> None:
        if self.spawner is None:
            return
        self.poller.unregister(self.spawner)
        self.spawner.close()  # its EOF ends it
        self.spawner = None
        if self.spawner_pid > 0:
            try:
                os.waitpid(self.spawner_pid, 0)
            except ChildProcessError:
                pass
        self.spawner_pid = 0

    def _spawner_died(self) -> None:
        """A new one, and the daemon's connection to it (its requests in flight failed:
        their replies never come, and the daemon's spawns say so)."""
        self._stop_spawner()
        self._start_spawner()
        if self.control is not None:
            self._hello()

    def _spawner_connection(self) -> int:
        """A new connection to the spawner, for the daemon: its end, to send in the hello."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.spawner.sendmsg([SPAWNER_ADD.to_bytes(4, "little")],
                                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   array.array("i", [theirs.fileno()]))])
        finally:
            theirs.close()
        return ours.detach()

    def _hello(self) -> None:
        conn = self._spawner_connection()
        try:
            self._send({"op": "hello", "pid": os.getpid(), "version": KEEPER_VERSION}, [conn])
        finally:
            os.close(conn)

    # ---- the daemon's connection ----

    def _accept(self) -> None:
        fd, _ = self.listener._accept()  # _socket's accept: a descriptor (close-on-exec)
        conn = socket.socket(fileno=fd)
        if self.control is not None:
            conn.close()  # one daemon at a time (the daemon's lock file makes that the rule)
            return
        self.control = conn
        self.poller.register(conn, select.POLLIN)
        self._hello()

    def _drop_control(self) -> None:
        self.poller.unregister(self.control)
        self.control.close()
        self.control = None

    def _serve_one(self) -> bool:
        try:
            msg, fds = _recv(self.control)
        except (OSError, ValueError):
            return False
        if msg is None:
            return False
        op = msg.get("op")
        if op == "logs":
            self._add_logs(msg, fds)
        elif op == "track":
            for fd in fds:
                os.close(fd)
            self._track(int(msg["pid"]), str(msg["dir"]))
        elif op == "share_logs":
            for fd in fds:
                os.close(fd)
            self._share_logs()
            self._send({"op": "logs_shared", "seq": msg.get("seq")})
        elif op == "hello":  # the daemon lost its spawner connection: another one
            for fd in fds:
                os.close(fd)
            self._hello()
        elif op == "close_logs":
            for fd in fds:
                os.close(fd)
            self._close_logs(str(msg["dir"]))
            self._send({"op": "logs_closed", "seq": msg.get("seq")})
        else:
            for fd in fds:
                os.close(fd)
        return True

    def _send(self, msg: dict, fds: list[int] = ()) -> None:
        if self.control is None:
            return  # no daemon now: statuses are on disk for the next one
        try:
            self.control.sendmsg(
                [json.dumps(msg).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
        except OSError:
            pass  # the daemon is gone; the EOF on the next poll drops it

    # ---- spawning ----

    def _add_logs(self, msg: dict, fds: list[int]) -> None:
        """A container's stdout and stderr pipes (their read ends), copied into its
        ``stdout.log`` and ``stderr.log`` from now on, whoever else is there."""
        from corral.supervisor.logs import STREAMS, LogFile

        streams = msg.get("streams", STREAMS)
        if len(fds) != len(streams) or not set(streams) <= set(STREAMS):
            for fd in fds:
                os.close(fd)
            return
        for fd, stream in zip(fds, streams):
            try:
                log = LogFile(str(msg["dir"]), stream, int(msg["max_bytes"]), int(msg["keep"]))
            except (OSError, KeyError, ValueError):
                os.close(fd)  # the container writes into a closed pipe: nobody to read it
                continue
            self.logs[fd] = log
            self.poller.register(fd, select.POLLIN)

    # ---- logs ----

    def _share_logs(self) -> None:
        """The log pipes' read ends, for a daemon that connects: it keeps them for the
        keeper that would replace this one if it died."""
        by_dir: dict[str, list] = {}
        for fd, log in self.logs.items():
            by_dir.setdefault(log.state_dir, []).append((log.stream, fd, log))
        for state_dir, entries in by_dir.items():
            log = entries[0][2]
            self._send({"op": "log_pipes", "dir": state_dir, "max_bytes": log.max_bytes,
                        "keep": log.keep, "streams": [stream for stream, _, _ in entries]},
                       [fd for _, fd, _ in entries])

    def _relay(self, fd: int) -> None:
        log = self.logs[fd]
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if data:
            try:
                log.write(data)
                return
            except OSError:
                pass  # the state dir went away (deleted): stop logging this stream
        self._stop_relay(fd)

    def _stop_relay(self, fd: int) -> None:
        self.poller.unregister(fd)
        os.close(fd)
        self.logs.pop(fd).close()

    def _drain_logs(self, state_dir: str) -> None:
        """Relays what a container's pipes already hold (the reap may come before poll saw
        them readable): a caller told of the exit then reads the complete logs.  At most a
        full pipe's worth: a process the init left behind may write on without end."""
        for fd in [fd for fd, log in self.logs.items() if log.state_dir == state_dir]:
            os.set_blocking(fd, False)
            try:
                for _ in range(_DRAIN_READS):
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    self.logs[fd].write(data)
            except OSError:
                pass  # empty for now (BlockingIOError), or the log is gone
            os.set_blocking(fd, True)

    def _close_logs(self, state_dir: str) -> None:
        """Before the daemon removes a state dir: nothing of ours may write there after."""
        self._drain_logs(state_dir)
        for fd in [fd for fd, log in self.logs.items() if log.state_dir == state_dir]:
            self._stop_relay(fd)

    # ---- exits ----

    def _track(self, pid: int, state_dir: str) -> None:
        early = self.pending.pop(pid, None)
        if early is None or time.monotonic() - early[1] > _PENDING_TTL:
            self.tracked[pid] = state_dir
        else:
            self._drain_logs(state_dir)
            self._record(pid, state_dir, early[0])

    def _reap(self) -> None:
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.spawner_pid:
                self.spawner_pid = 0
                self._spawner_died()
                continue
            status = exit_status(raw)
            state_dir = self.tracked.pop(pid, None)
            if state_dir is not None:
                self._drain_logs(state_dir)  # what it wrote before exiting, before anyone hears
                self._record(pid, state_dir, status)
            else:
                if len(self.pending) >= _PENDING_MAX:
                    self.pending.pop(next(iter(self.pending)))
                self.pending[pid] = (status, time.monotonic())
            self._send({"op": "exited", "pid": pid, "status": status})

    def _record(self, pid: int, state_dir: str, status: int, when: str | None = None) -> None:
        from corral.oci.state import rfc3339_now
        from corral.runtime.exits import write_exit

        when = when or rfc3339_now()
        try:
            write_exit(state_dir, pid, status, when)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
                self.unrecorded[state_dir] = (pid, status, when)  # again, when there is room
            # else deleted meanwhile (delete --force): nobody will ask

    def _record_again(self) -> None:
        for state_dir, (pid, status, when) in list(self.unrecorded.items()):
            del self.unrecorded[state_dir]
            if os.path.isdir(state_dir):
                self._record(pid, state_dir, status, when)


def keeper_main(control_fd: int, listen: bool = False) -> None:
    """``control_fd`` is a connected control socket, or with ``listen`` a listening one."""
    os.set_inheritable(control_fd, False)  # the spawner gets none of our descriptors
    sock = socket.socket(fileno=control_fd)
    if listen:
        from corral import nsenter

        os.chdir("/")  # a keeper outlives its daemon: pin no directory
        # Orphans of containers without a pid namespace come here, not to the host's init.
        nsenter.prctl(PR_SET_CHILD_SUBREAPER, 1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        Keeper(None, sock).run()
    else:
        Keeper(sock, None).run()


def _recv(control: socket.socket) -> tuple[dict | None, list[int]]:
    fds = array.array("i")
    # MSG_CMSG_CLOEXEC: a received descriptor never crosses an exec by accident.
    data, ancdata, _flags, _addr = control.recvmsg(
        MAX_PACKET, socket.CMSG_SPACE(FDS_PER_SPAWN * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def main() -> None:
    """``CONTROL_FD [--listen]`` (``keeper_handle.keeper_argv`` starts it so)."""
    keeper_main(int(sys.argv[1]), listen=sys.argv[2:] == ["--listen"])


if __name__ == "__main__":
    main()
