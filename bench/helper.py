"""The process that runs and times every measured command: one per mount namespace (the host's,
and crun's private one where the cgroup2 mount is hidden), so that every runtime is timed by the
same code, spawned the same way, with no wrapper process in between.

It is a child subreaper: container inits are reparented to it when `create` exits, as they are
to conmon or a containerd shim, and it reaps them. It reads one JSON request per line on stdin
and answers one JSON line on stdout:

- ``{"op": "time", "argv": [...]}``: run it under bench/timer.c (fork, exec, wait4); answer
  wall seconds, peak RSS (``ru_maxrss``: the command and the children it waited for), exit
  code, stderr's tail;
- ``{"op": "reap", "pid": N}``: wait for a reparented container init;
- ``{"op": "pool", "argv": [...], "stdout": PATH}``: spawn a pool (xargs), reaping every
  orphan until the pool itself exits; answer wall seconds, exit code, stderr's tail.

    python -m bench.helper TIMER PREFIX    (stdin: requests; stdout: answers)

TIMER is the compiled bench/timer.c; PREFIX names the helper's two scratch files in the
suite's workspace (PREFIX.stderr: the last command's stderr; PREFIX.timing: timer's result).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _spawn(argv: list[str], stdout: str, stderr: str, fd3: str | None = None) -> int:
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, WRITE, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, stderr, WRITE, 0o600),
    ]
    if fd3:
        actions.append((os.POSIX_SPAWN_OPEN, 3, fd3, WRITE, 0o600))
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        return f.read()[-2000:].decode(errors="replace").strip()


def time_command(timer: str, argv: list[str], prefix: str) -> dict:
    stderr, timing = prefix + ".stderr", prefix + ".timing"
    _, status = os.waitpid(_spawn([timer, *argv], "/dev/null", stderr, fd3=timing), 0)
    with open(timing) as f:
        fields = f.read().split()
    if os.waitstatus_to_exitcode(status) != 0 or len(fields) != 3:
        return {"code": f"timer failed ({status})", "stderr": _tail(stderr)}
    wall, maxrss, code = fields
    return {"wall": float(wall), "maxrss_kb": int(maxrss), "code": int(code),
            "stderr": _tail(stderr)}


def reap(pid: int) -> dict:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return {"code": None}  # already reaped by a pool's sweep, or never ours
    return {"code": os.waitstatus_to_exitcode(status)}


def pool(argv: list[str], stdout: str, stderr: str) -> dict:
    t0 = time.perf_counter()
    pool_pid = _spawn(argv, stdout, stderr)
    while True:  # reap orphaned container inits at once: a job waits for its init to vanish
        pid, status = os.wait()
        if pid == pool_pid:
            break
    wall = time.perf_counter() - t0
    return {"wall": wall, "code": os.waitstatus_to_exitcode(status), "stderr": _tail(stderr)}


def serve(requests, answers, timer: str, prefix: str) -> None:
    """Answer requests until stdin closes."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    stderr = prefix + ".stderr"
    for line in requests:
        request = json.loads(line)
        op = request["op"]
        if op == "time":
            answer = time_command(timer, request["argv"], prefix)
        elif op == "reap":
            answer = reap(request["pid"])
        elif op == "pool":
            answer = pool(request["argv"], request["stdout"], stderr)
        else:
            answer = {"error": f"unknown op {op!r}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout, sys.argv[1], sys.argv[2])
