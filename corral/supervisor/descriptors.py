"""The daemon's file descriptors under a low RLIMIT_NOFILE: a creation is refused before it
makes anything when the daemon could not finish it (nor undo it), and a few descriptors are
held back so that undoing a creation that ran out midway can still open what it needs."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

CREATION_FDS = 32  # more than a creation holds at once (sockets, pipes, pidfds, files)
RESERVE = 16


class Descriptors:
    def __init__(self, spare: int) -> None:
        self._spare = spare  # any open descriptor, to dup (the engine's /dev/null)
        self._reserve: list[int] = []
        self._refill()

    def _refill(self) -> None:
        while len(self._reserve) < RESERVE:
            try:
                self._reserve.append(os.dup(self._spare))
            except OSError:
                return  # none left now: refilled after the next creation that ends

    def check(self, need: int = CREATION_FDS) -> None:
        """Raises (EMFILE or ENFILE, as the kernel says) unless ``need`` descriptors can be
        opened now, besides the reserve."""
        self._refill()
        taken: list[int] = []
        try:
            for _ in range(need):
                taken.append(os.dup(self._spare))
        except OSError as exc:
            raise OSError(exc.errno, f"{os.strerror(exc.errno)} (a creation needs {need} "
                                     f"free)") from None
        finally:
            for fd in taken:
                os.close(fd)

    @contextmanager
    def released(self) -> Iterator[None]:
        """The reserve, given back to the process for the duration."""
        for fd in self._reserve:
            os.close(fd)
        self._reserve.clear()
        try:
            yield
        finally:
            self._refill()

    def close(self) -> None:
        for fd in self._reserve:
            os.close(fd)
        self._reserve.clear()
