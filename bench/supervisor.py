"""The measurements that need `corral supervise` (issue 6).  Each one raises NotMeasured until
the daemon exists; the report then says "<what>: not measured (issue 6)", never a number.

To plug the supervisor in, replace each function's body (keep the signature; the suite calls
them interleaved with the other runtimes, and cleans up ``ws`` afterwards):

- ``throughput``: N containers (create, start, wait, delete) through the daemon's API with at
  most ``concurrency`` in flight; bundles from ``ws.bundle(f"j{i}")`` (cgroups under the
  suite's own parent); return a ``Batch`` (wall time of the whole batch, each job's latency);
- ``rss``: the daemon's RSS (KiB) while ``live`` containers are created and alive;
- ``soak``: ``jobs`` jobs through `corral batch`: its time and the daemon's RSS, open fds
  and task count at the start and at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import NotMeasured
from bench.throughput import Batch
from bench.workspace import Workspace

ISSUE = "issue 6"


@dataclass
class SoakResult:
    jobs: int
    seconds: float
    rss_kb: tuple[int, int]  # (start, end)
    fds: tuple[int, int]
    tasks: tuple[int, int]


def throughput(ws: Workspace, n: int, concurrency: int) -> Batch:
    raise NotMeasured(f"supervisor: not measured ({ISSUE})")


def rss(ws: Workspace, live: int) -> int:
    raise NotMeasured(f"supervisor RSS: not measured ({ISSUE})")


def soak(ws: Workspace, jobs: int) -> SoakResult:
    raise NotMeasured(f"soak: not measured ({ISSUE})")
