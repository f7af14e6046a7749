"""corral jobs on a Dask cluster: ``submit(job)`` and ``map(jobs)`` give Dask futures whose
result is the job's ``JobResult``, each job run by one node's ``corral supervise``.

``corral batch --dask ADDRESS`` (``corral.dask.batch``) runs a jobs file this way, with the
retries, timeouts, progress and results of a local batch.  The node side, a preload of
``dask worker``, is ``corral.dask.node``.  Only the command line imports this part; it
needs ``distributed`` (``pip install corral[dask]``).
"""

from __future__ import annotations

import uuid
from typing import Iterable

from corral.dask.node import SLOTS, run_job
from corral.errors import ConfigError
from corral.jobs.job import Job

__all__ = ["SLOTS", "map", "submit"]


def submit(job: Job, *, name: str | None = None, client=None, **options):
    """A Dask future of ``job`` run on one of the cluster's corral nodes: its result is a
    ``JobResult`` (``error`` set when it could not start; ``node`` the worker's address).
    ``client``: a ``distributed.Client`` (default: the current one).  ``options`` go to
    ``Client.submit`` (``priority``, ``workers``...).  Cancelling the future stops the job
    and its node deletes the container.  One run: ``job.retries`` is ``corral batch``'s,
    while Dask itself reruns a job whose worker was lost, up to its ``allowed-failures``."""
    if not isinstance(job, Job):
        raise ConfigError("job", f"{job!r} is not a corral.Job")
    if client is None:
        from distributed import get_client

        client = get_client()
    key = f"corral-{name or 'job'}-{uuid.uuid4().hex}"
    return client.submit(run_job, job, name or key, key, key=key, pure=False,
                         resources={SLOTS: 1}, **options)


def map(jobs: Iterable[Job | tuple[str, Job]], *, client=None, **options) -> list:  # noqa: A001
    """``submit`` for each job (or ``(name, job)`` pair), in order: a list of futures
    (``distributed.as_completed`` gives them as they end)."""
    from corral.api.session import named_jobs

    return [submit(job, name=name, client=client, **options)
            for name, job in list(named_jobs(jobs))]  # every item checked before any runs
