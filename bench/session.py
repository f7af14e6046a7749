"""One benchmark session: the workspace, the runtimes found, their helper processes, and the
clean-up that removes every container, process and cgroup the session made, also after Ctrl-C
(SIGINT and SIGTERM become ``Interrupted``; a second Ctrl-C cannot stop the clean-up)."""

from __future__ import annotations

import ctypes
import os
import signal

from bench.runtimes import Helper, Runtime, discover
from bench.workspace import Workspace, reap_orphans

PR_SET_CHILD_SUBREAPER = 36


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the session is being cleaned up."""


def _on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


class Session:
    """Use as a context manager; ``leftovers`` then says what a clean exit found left behind
    by the runs (containers not deleted, processes or cgroups remaining), all removed."""

    def __init__(self) -> None:
        self.ws: Workspace | None = None
        self.runtimes: list[Runtime] = []
        self.absent: dict[str, str] = {}
        self.helpers: list[Helper] = []
        self.host: Helper | None = None
        self.leftovers: list[str] = []

    def __enter__(self) -> Session:
        # Container inits come back to us if a helper dies, and we reap them.
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        try:
            self.ws = Workspace()
            self.runtimes, self.absent = discover(self.ws.state)
            timer = self.ws.compile("timer")
            self.host = self._helper(False, timer, "host")
            for rt in self.runtimes:
                rt.helper = self._helper(True, timer, rt.name) if rt.hide_cgroup2 else self.host
        except BaseException:
            self.__exit__(Interrupted, None, None)
            raise
        return self

    def _helper(self, hide_cgroup2: bool, timer: str, name: str) -> Helper:
        helper = Helper(hide_cgroup2, timer, os.path.join(self.ws.dir, name))
        self.helpers.append(helper)
        return helper

    def __exit__(self, exc_type, _exc, _tb) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self.ws:
                left = self._cleanup(kill=exc_type is not None)
                self.leftovers = [] if exc_type else left
        finally:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _cleanup(self, kill: bool) -> list[str]:
        """Stop the helpers (``kill``: with whatever they run), delete every container, kill
        what is left in our cgroups, remove them and the workspace."""
        from bench import supervisor

        try:
            left = supervisor.stop(self.ws)
        except Exception as e:  # noqa: BLE001 - the rest of the clean-up must still run
            left = [f"corral supervise: {e}"]
        for helper in self.helpers:
            helper.stop(kill=kill)
        for rt in self.runtimes:
            for cid in rt.leftover_ids():
                left.append(f"{rt.name} container {cid}")
                rt.direct("delete", "--force", cid)
        leaves, killed = self.ws.remove_cgroups()
        if killed:
            left.append(f"processes {killed}")
        left += [f"cgroup {path}" for path in leaves]
        reap_orphans()
        self.ws.close()
        return left
