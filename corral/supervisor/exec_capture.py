"""exec for the supervisor: a process run in a container to its end, its output captured.

The same creation path as ``corral exec`` (``execution.prepare_exec``, the trio driver, the
keeper's spawner clones the launcher); stdout and stderr are pipes read here, each capped.  A timeout, or
the caller's cancellation, kills the process: it never outlives the request.
"""

from __future__ import annotations

import math
import os
import signal as _signal

import trio

from corral.errors import ConfigError, ContainerStateError
from corral.supervisor.logs import STREAMS
from corral.supervisor.keeper_handle import KeeperHandle

OUTPUT_CAP = 4 * 1024 * 1024


async def run_to_end(root: str, keeper: KeeperHandle, cid: str, args: list[str] | None = None,
                 *, process: dict | None = None, env: list[str] = (), cwd: str | None = None,
                 user: str | None = None, timeout: float | None = None) -> dict:
    """Runs a process in the container to its end: ``{"exitStatus", "stdout",
    "stderr"}`` (each capped at 4 MiB).  ``timeout`` kills it."""
    from corral.runtime.execution import prepare_exec
    from corral.runtime.trio_driver import create_container

    if process is None and not args:
        raise ConfigError("args", "exec needs args or a process")
    if process is not None and not isinstance(process, dict):
        raise ConfigError("process", "must be a JSON object (an OCI process)")
    request = _ExecRequest(root, cid, args or [], process, list(env), cwd, user)
    prepared = prepare_exec(request)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            pid = await create_container(prepared, keeper, stdio=(null, out_w, err_w))
        finally:
            for fd in (null, out_w, err_w):
                os.close(fd)
        outputs: dict[str, bytes] = {}
        status = None
        try:
            with trio.move_on_after(timeout if timeout else math.inf):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_collect, out_r, outputs, "stdout")
                    nursery.start_soon(_collect, err_r, outputs, "stderr")
                    status = await keeper.wait(pid)
        except BaseException:  # the caller was cancelled or went away: so does the process
            await _kill(keeper, pid)
            raise
        if status is None:
            status = await _kill(keeper, pid)
            raise ContainerStateError(f"exec in {cid} timed out after {timeout} s "
                                      f"(killed; exit status {status})")
    finally:
        os.close(out_r)
        os.close(err_r)
    return {"exitStatus": status,
            **{k: outputs.get(k, b"").decode(errors="replace") for k in STREAMS}}

async def _kill(keeper: KeeperHandle, pid: int) -> int:
    """SIGKILL to an exec'd process (a keeper child not reaped yet: still our pid)."""
    try:
        os.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    with trio.CancelScope(shield=True):
        return await keeper.wait(pid)


class _ExecRequest:
    """What ``prepare_exec`` reads from the command line's arguments, from an API call."""

    def __init__(self, root: str, cid: str, command: list[str], process: dict | None,
                 env: list[str], cwd: str | None, user: str | None) -> None:
        self.root, self.id, self.command = root, cid, command
        self.process_json = process
        self.process = None
        self.env, self.cwd, self.user = env, cwd, user
        self.additional_gids: list[str] = []
        self.cap: list[str] = []
        self.no_new_privs = False
        self.tty = False
        self.ignore_paused = False
        self.cgroup: tuple[str, ...] = ()
        self.preserve_fds = 0
        self.console_socket = None
        self.detach = True
        self.pid_file = None


async def _collect(fd: int, outputs: dict[str, bytes], key: str) -> None:
    os.set_blocking(fd, False)
    chunks, size = [], 0
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not data:
            break
        if size < OUTPUT_CAP:
            chunks.append(data[: OUTPUT_CAP - size])
            size += len(chunks[-1])
    outputs[key] = b"".join(chunks)
