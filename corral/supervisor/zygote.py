"""The zygote: a single-threaded helper that forks container children for a trio program.

Forking a threaded process is unsafe, and a trio program may have threads, so the supervisor
starts this process once (with corral's init code already imported) and hands it, for each
container, the child end of a sync socketpair and the container's stdio over SCM_RIGHTS.  The
children it forks run ``child_main``; their inits are its children too (the C stage clones with
CLONE_PARENT), so it reaps them and reports every exit status back.

Control socket (SOCK_SEQPACKET, one JSON object per packet):
    supervisor -> zygote  {"op": "spawn", "seq": N}  + fds [sync, stdin, stdout, stderr]
    zygote -> supervisor  {"op": "spawned", "seq": N, "pid": P} + fd [pidfd of P] |
                          {"op": "failed", "seq": N,
                          "error": "..."} | {"op": "exited", "pid": P, "status": S}
EOF on the control socket ends the zygote (its children live on).
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import sys

FDS_PER_SPAWN = 4
MAX_PACKET = 65536


def zygote_main(control_fd: int) -> None:
    # Preloaded: every fork starts with the init code imported.
    import corral.init.rootfs  # noqa: F401
    import corral.oci.capabilities  # noqa: F401
    import corral.oci.config  # noqa: F401
    from corral.init.child import child_main

    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
                _reap(control)
                continue
            msg, fds = _recv(control)
            if msg is None:
                _reap(control)
                return
            _spawn(control, msg, fds, child_main)
        _reap(control)


def _recv(control: socket.socket) -> tuple[dict | None, list[int]]:
    fds = array.array("i")
    # MSG_CMSG_CLOEXEC: a received descriptor never crosses an exec by accident.
    data, ancdata, _flags, _addr = control.recvmsg(
        MAX_PACKET, socket.CMSG_SPACE(FDS_PER_SPAWN * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


def _spawn(control: socket.socket, msg: dict, fds: list[int], child_main) -> None:
    seq = msg.get("seq")
    if msg.get("op") != "spawn" or len(fds) != FDS_PER_SPAWN:
        for fd in fds:
            os.close(fd)
        _send(control, {"op": "failed", "seq": seq, "error": "malformed spawn request"})
        return
    sync_fd, *stdio = fds
    try:
        pid = os.fork()
    except OSError as exc:
        pid = -1
        error = str(exc)
    if pid == 0:
        control.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        child_main(sync_fd)
    for fd in fds:
        os.close(fd)
    if pid < 0:
        _send(control, {"op": "failed", "seq": seq, "error": error})
        return
    # Opened before this process can reap the child: the pidfd names it, never a reused pid.
    pidfd = os.pidfd_open(pid)
    try:
        _send(control, {"op": "spawned", "seq": seq, "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"op": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(raw)})


def _send(control: socket.socket, msg: dict, fds: list[int] = ()) -> None:
    try:
        control.sendmsg([json.dumps(msg).encode()],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
    except OSError:
        pass  # the supervisor is gone; statuses are its keeper's job (see DESIGN.md)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


if __name__ == "__main__":
    zygote_main(int(sys.argv[1]))
