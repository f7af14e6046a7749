"""A container's exit status on disk: written by whoever reaps its init (the keeper, or the
daemon for orphans), durably, before anyone is told; read by a restarted daemon and by
``state``.  One small JSON file in the state directory, so it goes with ``delete``."""

from __future__ import annotations

import os

from corral import jsonlite as json

EXIT_FILE = "exit.json"


def write_exit(state_dir: str, pid: int, status: int, when: str) -> None:
    """Atomic and fsync'ed: a status the daemon was told about survives a crash."""
    path = os.path.join(state_dir, EXIT_FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps({"pid": pid, "exitStatus": status, "exitedAt": when}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_exit(state_dir: str) -> dict | None:
    """``{"pid", "exitStatus", "exitedAt"}`` or None when nobody recorded one."""
    try:
        with open(os.path.join(state_dir, EXIT_FILE), "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
