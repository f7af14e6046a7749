"""corral: a Linux container runtime and supervisor on trio.

Kept import-free on purpose: the one-shot command line pays for every import.
"""

from corral.version import OCI_VERSION, __version__  # noqa: F401


def __getattr__(name: str):
    """``corral.Job``, ``corral.Client``, ``corral.Supervisor`` and the results, imported
    when first used (the command line imports none of them)."""
    if name in ("Job", "Limits", "Bind"):
        from corral.jobs import job

        return getattr(job, name)
    if name == "Client":
        from corral.api.client import Client

        return Client
    if name == "Supervisor":
        from corral.api.embedded import Supervisor

        return Supervisor
    if name in ("JobResult", "ExecResult", "Container"):
        from corral.api import session

        return getattr(session, name)
    if name in ("CorralError", "ConfigError", "ContainerNotFound", "ContainerStateError"):
        from corral import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
