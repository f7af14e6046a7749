"""Container logs: stdout and stderr in files of the state directory, capped and rotated.

The keeper (no trio, a poll loop) owns the write side: it holds the read ends of the pipes
that are the container's stdout and stderr, so logging goes on while the daemon is down.
The daemon reads the files, following them across rotations, for ``logs``.
"""

from __future__ import annotations

import errno
import os

STREAMS = ("stdout", "stderr")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_KEEP = 1


def log_path(state_dir: str, stream: str, generation: int = 0) -> str:
    name = f"{stream}.log"
    return os.path.join(state_dir, name if generation == 0 else f"{name}.{generation}")


class LogFile:
    """One stream of one container.  At ``max_bytes`` the file becomes ``.1`` (older ones
    shift up, the one past ``keep`` is dropped) and a new file starts: the disk a container
    can fill is bounded by ``max_bytes * (keep + 1)``.  The file is made with the first
    output: a container that writes nothing has none (a reader finds nothing either way)."""

    def __init__(self, state_dir: str, stream: str, max_bytes: int, keep: int) -> None:
        if not os.path.isdir(state_dir):
            raise FileNotFoundError(2, "no such state directory", state_dir)
        self.state_dir = state_dir
        self.stream = stream
        self.max_bytes = max(max_bytes, 1)
        self.keep = max(keep, 0)
        self.fd = -1
        self.size = 0
        self.dropped = 0  # bytes lost to a full filesystem, not said yet
        self._unwritten = 0

    def _open(self) -> None:
        self.fd = os.open(log_path(self.state_dir, self.stream),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes) -> None:
        """Appends ``data``; on a full filesystem it is dropped (the container writes on,
        never blocked or killed by a pipe nobody reads) and a line saying how much was lost
        comes first once there is room again."""
        try:
            if self.dropped:
                self._write(b"[corral: %d bytes of %s dropped: no space left on device]\n"
                            % (self.dropped, self.stream.encode()))
                self.dropped = 0
            self._unwritten = len(data)
            self._write(data)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.dropped += self._unwritten if self.dropped == 0 else len(data)

    def _write(self, data: bytes) -> None:
        if self.fd < 0 and data:
            self._open()
        while data:
            room = self.max_bytes - self.size
            if room <= 0:
                self._rotate()
                continue
            written = os.write(self.fd, data[:room])
            self.size += written
            self._unwritten -= written
            data = data[written:]

    def _rotate(self) -> None:
        os.close(self.fd)
        self.fd = -1
        if self.keep == 0:
            os.unlink(log_path(self.state_dir, self.stream))
        else:
            for gen in range(self.keep, 0, -1):
                try:
                    os.replace(log_path(self.state_dir, self.stream, gen - 1),
                               log_path(self.state_dir, self.stream, gen))
                except FileNotFoundError:
                    pass
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LogReader:
    """Reads one stream from the oldest kept generation on, then the current file.  With
    ``follow``, across rotations: when the keeper rotates, the open file (now ``.1``) is
    read to its end before the new one is opened, so nothing is skipped or read twice.
    Without, the current file's end is the end: what a container writes faster than it is
    read cannot keep a reader going (it gets at most the cap's worth)."""

    def __init__(self, state_dir: str, stream: str, follow: bool = True) -> None:
        self.state_dir = state_dir
        self.stream = stream
        self.follow = follow
        try:
            names = os.listdir(state_dir)
        except FileNotFoundError:
            names = []
        prefix = f"{stream}.log."
        self._pending = sorted((int(n[len(prefix):]) for n in names
                                if n.startswith(prefix) and n[len(prefix):].isdigit()),
                               reverse=True)
        self.fd = -1
        self._current = False  # the open file was opened as the current one (not a .N)

    def read(self, size: int = 65536) -> bytes:
        """What is there now; b"" when nothing new (yet)."""
        while True:
            if self.fd < 0:
                generation = self._pending.pop(0) if self._pending else 0
                try:
                    self.fd = os.open(log_path(self.state_dir, self.stream, generation),
                                      os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if self._pending:
                        continue
                    return b""
                self._current = generation == 0
            data = os.read(self.fd, size)
            if data:
                return data
            if not self._current or (self.follow and self._rotated()):
                os.close(self.fd)
                self.fd = -1
                continue
            return b""

    def _rotated(self) -> bool:
        try:
            current = os.stat(log_path(self.state_dir, self.stream))
        except FileNotFoundError:
            return False
        mine = os.fstat(self.fd)
        return (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
