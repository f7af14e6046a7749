"""The trio program's handle on its keeper (``keeper.py``): spawn children (through the
keeper's spawner, on a connection of our own), track inits, learn exits.  ``open_embedded_keeper`` starts an embedded keeper that ends with the program; ``open_keeper``
connects the daemon to the keeper of a state root, starting one if none is running, so that
containers and their statuses outlive the daemon.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import socket as _socket
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from corral.errors import CorralError
from corral.supervisor.keeper import FDS_PER_SPAWN, KEEPER_VERSION, KEEPER_VERSIONS, MAX_PACKET

SUPERVISOR_DIR = ".supervisor"  # in the state root: not a container (no state.json)
UNEXPECTED_MAX = 256
UNEXPECTED_TTL = 10.0  # seconds: pids are not reused that fast
REPLACE_RETRY = 1.0  # seconds between attempts to start a keeper in place of a dead one
_FORK_HINT = (" (a pids limit is reached: the pids.max of the daemon's cgroup, RLIMIT_NPROC "
              "or kernel.pid_max)")


class KeeperHandle:
    """Spawns children through the keeper's spawner and learns their exits from the keeper."""

    def __init__(self, control: trio.socket.SocketType, pid: int) -> None:
        self._control = control
        self.pid = pid
        self._seq = 0
        self._replies: dict[int, tuple[trio.Event, list]] = {}
        self._spawner: trio.socket.SocketType | None = None  # from the hello
        self._spawner_ready = trio.Event()
        self._spawns: dict[int, tuple[trio.Event, list]] = {}
        self._spawn_seq = 0
        self._null = -1  # the stdin of containers that log
        self._exits: dict[int, int] = {}  # statuses of expected pids, until waited for
        self._exit_events: dict[int, trio.Event] = {}
        self._expected: set[int] = set()
        # Statuses nobody expects (yet): the keeper reports every child it reaps, orphans of
        # jobs included.  Bounded, and kept briefly for an ``expect`` that comes late.
        self._unexpected: dict[int, tuple[int, float]] = {}
        self._dead = False
        # The daemon's keeper is replaced when it dies (open_keeper): the read ends of the
        # log pipes are kept here too, for the next keeper (without a reader a container's
        # next write to stdout would kill it), and waiters of its children's statuses wait
        # on (the daemon, their new parent, reaps them: orphan_exited).
        self.replaceable = False
        self.version = KEEPER_VERSION  # the hello's
        self._log_copies: dict[str, tuple[dict, list[int]]] = {}  # state dir -> (spec, fds)
        self._spawned: set[int] = set()  # launchers of this keeper, until forgotten

    async def spawn(self, sync_fd: int, stdio: tuple[int, int, int] | None = None,
                    logs: dict | None = None) -> tuple[int, int]:
        """Has the keeper's spawner clone a launcher (``corral-exec launch``) on ``sync_fd``
        with ``stdio``, or with its stdout/stderr logged by the keeper (``logs``: dir,
        max_bytes, keep).  Returns its pid and a pidfd (opened by the spawner before the
        keeper could reap the child: never a reused pid); the caller owns the pidfd."""
        self._check_alive()
        made: list[int] = []
        try:
            if logs:
                # the keeper holds the read ends (so logging goes on without us)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                made += [out_r, out_w]
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                made += [err_r, err_w]
                await self._send_control({"op": "logs", **logs}, [out_r, err_r])
                if self.replaceable:
                    self._store_log_copies(dict(logs), [os.dup(out_r), os.dup(err_r)])
                if self._null < 0:
                    self._null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                stdio = (self._null, out_w, err_w)
            self._spawn_seq = (self._spawn_seq + 1) % 0xFFFFFFFF
            seq = self._spawn_seq
            done, slot = trio.Event(), []
            spawner = self._spawner
            self._spawns[seq] = (done, slot, spawner)
            try:
                await spawner.sendmsg(
                    [seq.to_bytes(4, "little")],
                    [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                      array.array("i", [sync_fd, *(stdio or (0, 1, 2))]))])
            finally:
                for fd in made:
                    os.close(fd)
                made = []
            try:
                await done.wait()
            finally:
                del self._spawns[seq]
        finally:
            for fd in made:
                os.close(fd)
        if not slot:
            raise CorralError("the keeper's spawner exited; no container can be created")
        pid, pidfd = slot[0]
        if pid <= 0:
            if pidfd >= 0:
                os.close(pidfd)
            raise CorralError(f"the keeper's spawner could not fork: {os.strerror(-pid)}"
                              f"{_FORK_HINT if -pid == errno.EAGAIN else ''}")
        self._spawned.add(pid)
        return pid, pidfd

    def _store_log_copies(self, spec: dict, fds: list[int]) -> None:
        old = self._log_copies.pop(spec["dir"], None)
        if old is not None:
            for fd in old[1]:
                os.close(fd)
        self._log_copies[spec["dir"]] = (spec, fds)

    async def share_logs(self) -> None:
        """Copies of the log pipes the keeper reads (a daemon that connects to a running
        keeper: the containers it adopts)."""
        await self._request({"op": "share_logs"}, [])

    def spawned_by_this_keeper(self, pid: int) -> bool:
        """Whether the keeper that spawned ``pid`` is the one running now (a creation during
        which the keeper died is undone: its processes were the dead keeper's)."""
        return pid in self._spawned

    async def read_spawns(self) -> None:
        """The spawner's answers, to the spawns waiting for them; a spawner that exits is
        replaced by the keeper (a new hello), whose answers come next."""
        while True:
            await self._spawner_ready.wait()
            spawner = self._spawner
            await self._read_spawner(spawner)
            if self._spawner is spawner:  # not replaced yet: wait for the next hello
                self._spawner_ready = trio.Event()
                if not self._dead:
                    # the spawner hung up on us (it lives on, or the keeper says hello
                    # with its successor): ask the keeper for another connection
                    try:
                        await self._send_control({"op": "hello"})
                    except CorralError:
                        pass  # the keeper is gone: its replacement says hello

    async def _read_spawner(self, spawner: trio.socket.SocketType) -> None:
        try:
            while True:
                fds = array.array("i")
                try:
                    data, ancdata, _flags, _addr = await spawner.recvmsg(
                        8, _socket.CMSG_SPACE(fds.itemsize), _socket.MSG_CMSG_CLOEXEC)
                except (OSError, trio.ClosedResourceError):
                    return  # closed by take_spawner: a new spawner took its place
                for level, kind, payload in ancdata:
                    if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                        fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                if len(data) != 8:
                    for fd in fds:
                        os.close(fd)
                    return
                seq = int.from_bytes(data[:4], "little")
                pid = int.from_bytes(data[4:], "little", signed=True)
                waiter = self._spawns.get(seq)
                if waiter is None:
                    for fd in fds:
                        os.close(fd)
                    continue
                waiter[1].append((pid, fds[0] if fds else -1))
                waiter[0].set()
        finally:
            for done, _slot, asked in self._spawns.values():
                if asked is spawner:
                    done.set()  # no answer will come: they raise

    def take_spawner(self, fds: list[int]) -> None:
        """The spawner connection of a hello (a new one after a spawner died)."""
        if not fds:
            raise CorralError("the keeper's hello brought no connection to its spawner")
        old = self._spawner
        self._spawner = trio.socket.from_stdlib_socket(
            _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, fileno=fds[0]))
        for fd in fds[1:]:
            os.close(fd)
        if old is not None:
            old.close()  # its reader sees the end, and reads the new one
        self._spawner_ready.set()

    def close(self) -> None:
        for _spec, fds in self._log_copies.values():
            for fd in fds:
                os.close(fd)
        self._log_copies.clear()
        if self._spawner is not None:
            self._spawner.close()
        if self._null >= 0:
            os.close(self._null)
            self._null = -1

    async def track(self, pid: int, state_dir: str) -> None:
        """From now on the keeper records ``pid``'s exit status in ``state_dir``."""
        self._check_alive()
        await self._send_control({"op": "track", "pid": pid, "dir": state_dir})

    async def close_logs(self, state_dir: str) -> None:
        """Returns once the keeper has stopped writing logs into ``state_dir`` (at once
        without a keeper: nobody writes there)."""
        self.drop_log_copies(state_dir)
        if self._dead:
            return
        try:
            await self._request({"op": "close_logs", "dir": state_dir}, [])
        except CorralError:
            pass  # it died meanwhile: it writes nothing more (nor its successor: no copy)

    def drop_log_copies(self, state_dir: str) -> None:
        """Forgets the copies of ``state_dir``'s log pipes (a creation that failed: nothing
        of it is handed to a next keeper)."""
        copies = self._log_copies.pop(state_dir, None)
        if copies is not None:
            for fd in copies[1]:
                os.close(fd)

    def expects(self, pid: int) -> bool:
        """Whether someone will wait for ``pid``'s status (the orphan reaper's question)."""
        return pid in self._expected

    def orphan_exited(self, pid: int, status: int) -> None:
        """A status the daemon reaped itself: a child of a keeper that died."""
        self._on_exit(pid, status)

    def expect(self, pid: int) -> None:
        """Someone will ``wait`` for ``pid`` (an init, an exec'd process): keep its status.
        Only expected statuses are kept, so a pid the kernel reuses never inherits an old
        one."""
        early = self._unexpected.pop(pid, None)
        if early is not None and trio.current_time() - early[1] < UNEXPECTED_TTL:
            self._exits[pid] = early[0]
        elif pid not in self._exits:
            self._expected.add(pid)

    def exited(self, pid: int) -> bool:
        return pid in self._exits

    async def wait(self, pid: int) -> int:
        """Exit status of a child of the keeper (128+N for signal N)."""
        if pid not in self._exits:
            self.expect(pid)
        while pid not in self._exits:
            if not self.replaceable:  # else the orphan reaper reports it
                self._check_alive()
            event = self._exit_events.setdefault(pid, trio.Event())
            await event.wait()
        return self._exits.pop(pid)

    def forget(self, pid: int) -> None:
        """Nobody will wait for ``pid`` (the intermediate process, a status given up on)."""
        self._exits.pop(pid, None)
        self._expected.discard(pid)
        self._exit_events.pop(pid, None)
        self._spawned.discard(pid)

    @property
    def alive(self) -> bool:
        return not self._dead

    def _check_alive(self) -> None:
        if self._dead:
            self._dead_error()

    def _dead_error(self) -> None:
        raise CorralError("the keeper process exited; no container can be created"
                          + ("" if not self.replaceable else
                             " until its replacement is running (retry)"))

    async def _request(self, msg: dict, fds: list[int]) -> tuple[dict, list[int]]:
        self._check_alive()
        self._seq += 1
        seq = self._seq
        done, slot = trio.Event(), []
        self._replies[seq] = (done, slot)
        try:
            await self._send_control({**msg, "seq": seq}, fds)
            await done.wait()
        finally:
            del self._replies[seq]
        if not slot:  # it died meanwhile (and may be replaced already)
            self._dead_error()
        return slot[0]

    async def _send_control(self, msg: dict, fds: list[int] = ()) -> None:
        self._check_alive()
        try:
            await self._control.sendmsg(
                [json.dumps(msg).encode()],
                [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
        except (OSError, trio.ClosedResourceError):
            self._dead_error()  # it died, and we have not read its end yet

    async def read_replies(self) -> None:
        try:
            while True:
                try:
                    msg, fds = await self._recv()
                except OSError:  # (ECONNRESET: it died with our packets unread)
                    return
                if msg is None:
                    return
                if msg["op"] == "exited":
                    self._on_exit(msg["pid"], msg["status"])
                elif msg["op"] == "hello":
                    self.take_spawner(fds)  # the keeper's spawner was replaced
                elif msg["op"] == "log_pipes" and self.replaceable:
                    spec = {k: msg[k] for k in ("dir", "max_bytes", "keep", "streams")}
                    self._store_log_copies(spec, fds)
                elif msg.get("seq") in self._replies:
                    done, slot = self._replies[msg["seq"]]
                    slot.append((msg, fds))
                    done.set()
                else:
                    for fd in fds:
                        os.close(fd)
        finally:
            # Nothing more will come: wake every waiter, which then raises (but those of
            # statuses, when the daemon reaps the keeper's orphans itself).
            self._dead = True
            for done, _ in self._replies.values():
                done.set()
            if not self.replaceable:
                for event in self._exit_events.values():
                    event.set()

    async def _recv(self) -> tuple[dict | None, list[int]]:
        fds = array.array("i")
        data, ancdata, _flags, _addr = await self._control.recvmsg(
            MAX_PACKET, _socket.CMSG_SPACE(FDS_PER_SPAWN * fds.itemsize), _socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        return (json.loads(data) if data else None), list(fds)

    def _on_exit(self, pid: int, status: int) -> None:
        if pid not in self._expected:
            if len(self._unexpected) >= UNEXPECTED_MAX:
                self._unexpected.pop(next(iter(self._unexpected)))
            self._unexpected[pid] = (status, trio.current_time())
            return
        self._expected.discard(pid)
        self._exits[pid] = status
        event = self._exit_events.pop(pid, None)
        if event is not None:
            event.set()


@asynccontextmanager
async def open_embedded_keeper() -> AsyncIterator[KeeperHandle]:
    """An embedded keeper: closing its control socket on exit ends it (its children, the
    containers, live on until their owner deletes them)."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        process = await trio.lowlevel.open_process(
            keeper_argv(str(theirs.fileno())),
            pass_fds=(theirs.fileno(),))
    finally:
        theirs.close()
    control = trio.socket.from_stdlib_socket(ours)
    handle = KeeperHandle(control, process.pid)
    try:
        with trio.fail_after(10):
            msg, fds = await handle._recv()
        if msg is None or msg.get("op") != "hello":
            for fd in fds:
                os.close(fd)
            raise CorralError(f"the keeper did not start (it answered {msg!r})")
        handle.take_spawner(fds)
        async with _reading(handle):
            yield handle
    finally:
        handle.close()
        control.close()
        with trio.CancelScope(shield=True):
            await process.wait()


@asynccontextmanager
async def _reading(handle: KeeperHandle) -> AsyncIterator[None]:
    # shielded: clean-up after a cancellation still needs the keeper's and spawner's replies
    reader = trio.CancelScope(shield=True)

    async def readers() -> None:
        with reader:
            async with trio.open_nursery() as both:
                both.start_soon(handle.read_replies)
                both.start_soon(handle.read_spawns)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(readers)
        try:
            yield
        finally:
            reader.cancel()


class DaemonLock:
    """One daemon per state root: an flock held for the daemon's life (released by the
    kernel when it dies, even by SIGKILL)."""

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, SUPERVISOR_DIR)
        os.makedirs(self.dir, 0o700, exist_ok=True)
        path = os.path.join(self.dir, "daemon.lock")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise CorralError(f"another corral supervise is running on {root} (pid {holder})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


@asynccontextmanager
async def open_keeper(root: str, log=None) -> AsyncIterator[KeeperHandle]:
    """Connects to the keeper of ``root`` (the caller holds the ``DaemonLock``), starting a
    new one when none answers; one that dies is replaced at once (``log``: told so).  On
    exit only the connection closes: the keeper lives on while it has containers."""
    path = os.path.join(root, SUPERVISOR_DIR, "keeper.sock")
    handle = await _hello(path)
    if handle is None:  # none there, or one that was just ending: start ours
        await _start_keeper(path)
        handle = await _hello(path)
        if handle is None:
            raise CorralError(f"the keeper process did not answer on {path}")
    handle.replaceable = True
    reader = trio.CancelScope(shield=True)  # as in _reading

    async def readers() -> None:
        with reader:
            async with trio.open_nursery() as both:
                both.start_soon(handle.read_spawns)
                while True:
                    await handle.read_replies()  # returns when the keeper is gone
                    await _replace(handle, path, log or (lambda level, msg: None))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readers)
            try:
                if handle.version >= 3:
                    await handle.share_logs()  # (none from a keeper just started)
                yield handle
            finally:
                reader.cancel()
    finally:
        handle.close()
        handle._control.close()


async def _replace(handle: KeeperHandle, path: str, log) -> None:
    """A new keeper for a dead one's daemon: its spawner serves the spawns from now on, it
    is handed the log pipes (their read ends, from the handle's copies).  The dead one's
    children are the daemon's now (a subreaper): it reaps them and reports their statuses
    (``orphan_exited``)."""
    old = handle.pid
    handle._spawned.clear()  # a creation it had in flight fails (spawned_by_this_keeper)
    while True:
        try:
            await _start_keeper(path)
            if await _hello(path, handle) is not None:
                break
            problem = "it did not answer"
        except (OSError, CorralError, trio.TooSlowError) as exc:
            problem = str(exc) or "it did not say hello within 10 s"
        log("error", f"the keeper (pid {old}) died; starting another failed: {problem}; "
                     f"retrying in {REPLACE_RETRY:g} s")
        await trio.sleep(REPLACE_RETRY)
    log("warning", f"keeper pid {handle.pid}; it replaces the keeper that died (pid {old})")
    for spec, fds in list(handle._log_copies.values()):
        try:
            await handle._send_control({"op": "logs", **spec}, fds)
        except CorralError:
            return  # this one died too: read_replies sees it, and we come back here


async def _hello(path: str, handle: KeeperHandle | None = None) -> KeeperHandle | None:
    """A handle on the keeper listening on ``path`` (``handle``: that one, reconnected)."""
    control = await _connect(path)
    if control is None:
        return None
    if handle is None:
        handle = KeeperHandle(control, 0)
    else:
        handle._control.close()
        handle._control = control
    try:
        with trio.fail_after(10):
            msg, fds = await handle._recv()
    except BaseException:
        control.close()
        raise
    if msg is None:
        for fd in fds:
            os.close(fd)
        control.close()
        return None
    if msg.get("op") != "hello" or msg.get("version") not in KEEPER_VERSIONS:
        for fd in fds:
            os.close(fd)
        control.close()
        raise CorralError(f"the keeper on {path} answered {msg!r}, not a hello of "
                          f"version {KEEPER_VERSION}")
    handle.pid = msg["pid"]
    handle.version = msg["version"]
    handle.take_spawner(fds)
    handle._dead = False
    return handle


async def _connect(path: str) -> trio.socket.SocketType | None:
    sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        await sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


async def _start_keeper(path: str) -> None:
    """The listening socket is made here and handed over, so it accepts as soon as this
    returns.  posix_spawn (not fork) because this process may have threads; setsid so the
    daemon's terminal (Ctrl-C) never reaches the keeper."""
    try:
        os.unlink(path)  # stale: its keeper is gone
    except FileNotFoundError:
        pass
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        old = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old)
        listener.listen(16)
        fd = listener.fileno()
        os.set_inheritable(fd, True)
        os.posix_spawn(sys.executable, keeper_argv(str(fd), "--listen"), os.environ,
                       setsid=True)
    finally:
        listener.close()


def keeper_argv(*args: str) -> list[str]:
    """The keeper's command: this interpreter isolated and without ``site`` (``-I -S``: no
    .pth hooks, ~2 MiB less for a process that lives long), with exactly the directories of
    corral (an uninstalled checkout too) and of cffi's backend on its path, as scripts/corral
    does for the command line."""
    import _cffi_backend

    paths = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
             os.path.dirname(os.path.abspath(_cffi_backend.__file__))]
    code = (f"import sys; sys.path += {paths!r}; "
            "from corral.supervisor.keeper import main; main()")
    return [sys.executable, "-IS", "-c", code, *args]


