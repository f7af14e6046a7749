"""corral: a Linux container runtime and supervisor on trio.

Kept import-free on purpose: the one-shot command line pays for every import.
"""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2-dev"


def __getattr__(name: str):
    """``corral.Job``, ``corral.Client``, ``corral.Supervisor`` and the results, imported
    when first used (the command line imports none of them)."""
    if name in ("Job", "Limits", "Bind"):
        from corral import job

        return getattr(job, name)
    if name == "Client":
        from corral.client import Client

        return Client
    if name == "Supervisor":
        from corral.supervisor.embedded import Supervisor

        return Supervisor
    if name in ("JobResult", "ExecResult", "Container"):
        from corral import session

        return getattr(session, name)
    if name in ("CorralError", "ConfigError", "ContainerNotFound", "ContainerStateError"):
        from corral import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
