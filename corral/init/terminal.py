"""``process.terminal`` with ``--console-socket``: a pty of the container's own devpts.

    child (host's view):  connect_console(path)  -- before the namespaces, the path is the host's
    init / exec process:  setup_terminal()       -- after pivot_root (or setns into the mount
                          namespace): open /dev/pts/ptmx, unlock, the slave becomes stdio and
                          controlling terminal, consoleSize, the master goes to the socket
                          (payload "/dev/ptmx" like runc, SCM_RIGHTS), before Ready: so before
                          create or exec returns.

Imported before the namespaces (by connect_console): nothing here may import later.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys

from corral.errors import ChildError

# asm-generic ioctl numbers (x86_64, arm64, ...)
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414


def connect_console(path: str) -> socket.socket:
    """The engine's console socket, connected while its path means the host's."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ChildError(f"--console-socket: connect {path}: {exc.strerror.lower()}",
                         exc.errno, "console") from None
    return sock


def setup_terminal(sock: socket.socket, size: tuple[int, int] | None, uid: int,
                   gid: int) -> None:
    """Called by a session leader (the C stage's setsid) inside the container's root."""
    step = "open /dev/pts/ptmx"
    master = slave = -1
    try:
        master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        step = "unlockpt"
        fcntl.ioctl(master, TIOCSPTLCK, (0).to_bytes(4, sys.byteorder))
        step = "ptsname (TIOCGPTN)"
        number = int.from_bytes(fcntl.ioctl(master, TIOCGPTN, bytes(4)), sys.byteorder)
        name = f"/dev/pts/{number}"
        step = f"open {name}"
        slave = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        step = f"chown {name}"
        os.fchown(slave, uid, gid)  # the container's own devpts: the process's terminal
        if size is not None:
            step = "process.consoleSize: TIOCSWINSZ"
            height, width = size
            winsize = b"".join(v.to_bytes(2, sys.byteorder) for v in (height, width, 0, 0))
            fcntl.ioctl(slave, TIOCSWINSZ, winsize)
        step = "make the pty stdio"
        for fd in (0, 1, 2):
            os.dup2(slave, fd)  # dup2 clears close-on-exec on the copies
        step = "TIOCSCTTY"
        fcntl.ioctl(0, TIOCSCTTY, 0)
        step = "--console-socket: send the pty master"
        sock.sendmsg([b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       master.to_bytes(4, sys.byteorder))])
    except OSError as exc:
        raise ChildError(f"process.terminal: {step}: {(exc.strerror or str(exc)).lower()}",
                         exc.errno or 0, "terminal") from None
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
        sock.close()
