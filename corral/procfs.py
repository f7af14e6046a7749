"""Processes as the kernel shows them: a pid plus its start time names one process, never a
reused pid; this process's descriptor limit."""

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


def parent_pid(pid: int) -> int | None:
    """Whose child ``pid`` is now (None: gone)."""
    fields = stat_fields(pid) if pid > 0 else None
    return int(fields[1]) if fields is not None else None


def raise_fd_limit() -> None:
    """A pidfd (and an OOM eventfd) per container and a socket per client: the default
    soft limit of 1024 is too low for a thousand containers."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as 3-digit octal escapes."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo(path: str = "/proc/self/mountinfo") -> list[tuple[str, str, str]]:
    """(mount point, root inside its filesystem, filesystem type) of every mount, in mount
    order."""
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        fields = line.split(" ")
        sep = fields.index("-", 6)
        out.append((unescape(fields[4]), unescape(fields[3]), fields[sep + 1]))
    return out


def mount_points() -> list[str]:
    return [point for point, _root, _fstype in mountinfo()]
