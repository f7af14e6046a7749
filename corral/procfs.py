"""Process identity from /proc: a pid plus its start time names one process, never a reused pid."""

from __future__ import annotations


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 first), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, start: int | None) -> bool:
    """True if pid still names the process that started at `start` and has not exited
    (a zombie has exited: only its status remains)."""
    if pid <= 0:
        return False
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return start is None or int(fields[19]) == start
