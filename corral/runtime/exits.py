"""A container's exit status on disk: written by whoever reaps its init (the keeper, or the
daemon for orphans), durably, before anyone is told; read by a restarted daemon and by
``state``.  One small JSON file in the state directory, so it goes with ``delete``."""

from __future__ import annotations

import os

from corral import jsonlite as json

EXIT_FILE = "exit.json"


def write_exit(state_dir: str, pid: int, status: int, when: str) -> None:
    """Atomic and fsync'ed: a status the daemon was told about survives a crash."""
    from corral.oci.state import write_atomically

    write_atomically(os.path.join(state_dir, EXIT_FILE),
                     json.dumps({"pid": pid, "exitStatus": status, "exitedAt": when}).encode(),
                     durable=True)


def read_exit(state_dir: str) -> dict | None:
    """``{"pid", "exitStatus", "exitedAt"}`` or None when nobody recorded one."""
    try:
        with open(os.path.join(state_dir, EXIT_FILE), "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):  # none, or none readable now (no descriptor left)
        return None
