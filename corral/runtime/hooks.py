"""Running OCI hooks: the path with its args and env, the container's state JSON on stdin,
killed when its timeout passes.

Used by the parent (prestart, createRuntime), the container's init before pivot_root
(createContainer), ``start`` (poststart) and ``delete`` (poststop); they run in the bundle
directory, as runc and crun run theirs (they chdir to the bundle), but createContainer, in
the rootfs (runc's ``prepareRootfs`` chdirs there).  The
startContainer hooks run in C (executor.c, the HOOK step), after the exec fifo opened, in
the process's cwd inside the container (the bundle is out of reach after pivot_root).  No
subprocess module: ``start`` and ``delete`` are CLI paths whose start-up cost is measured
(subprocess pulls in signal, enum, selectors and threading); the spawn is nsenter's
posix_spawn with a chdir action (os.posix_spawn has none).
"""

from __future__ import annotations

import os
import select
import _signal as signal  # `signal` itself imports enum
import time

from corral import nsenter
from corral.errors import CorralError
from corral.oci.state import hook_state

#: Config field name of each kind, as the spec spells it, by the Hooks record's field.
KINDS = {
    "prestart": "prestart", "create_runtime": "createRuntime",
    "create_container": "createContainer", "start_container": "startContainer",
    "poststart": "poststart", "poststop": "poststop",
}
_OUTPUT_KEPT = 2048


class HookError(CorralError):
    pass


def hooks_to_json(hooks) -> list[dict]:
    return [{"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout}
            for h in hooks]


def state_from_record(record: dict, status: str, pid: int) -> bytes:
    return hook_state(record["ociVersion"], record["id"], record["bundle"], status, pid,
                     record.get("annotations"))


def hooks_from_json(items) -> list:
    from corral.oci.config import Hook

    return [Hook(path=i["path"], args=tuple(i.get("args") or ()), env=tuple(i.get("env") or ()),
                 timeout=i.get("timeout")) for i in items or ()]


def run_hooks(kind: str, hooks, state: bytes, cwd: str) -> None:
    """Runs each hook in order in the directory ``cwd`` (the bundle); the first failure
    raises ``HookError`` naming it."""
    for index, hook in enumerate(hooks):
        run_hook(kind, index, hook, state, cwd)


def run_hook(kind: str, index: int, hook, state: bytes, cwd: str) -> None:
    what = f"error running {kind} hook #{index} {hook.path}"
    try:  # posix_spawn would report a bad cwd as the hook's own ENOENT or EACCES
        fd = os.open(cwd, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        os.close(fd)
    except OSError as exc:
        raise HookError(f"{what}: cannot run in the bundle directory {cwd}: "
                        f"{(exc.strerror or str(exc)).lower()}") from None
    stdin = os.memfd_create("corral-hook-state", os.MFD_CLOEXEC)
    try:
        os.write(stdin, state)
        os.lseek(stdin, 0, os.SEEK_SET)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            env = hook.env or [f"{k}={v}" for k, v in os.environ.items()]
            try:
                pid = nsenter.spawn_hook(hook.path, list(hook.args) or [hook.path], env,
                                         stdin, write_end, cwd)
            except OSError as exc:
                raise HookError(f"{what}: {(exc.strerror or str(exc)).lower()}") from None
        finally:
            os.close(write_end)
        try:
            status, output = _wait(pid, read_end, hook.timeout)
        finally:
            os.close(read_end)
    finally:
        os.close(stdin)
    if status is None:
        raise HookError(f"{what}: timed out after {hook.timeout}s (killed){_tail(output)}")
    if status != 0:
        raise HookError(f"{what}: exit status {status}{_tail(output)}")


def _tail(output: bytes) -> str:
    text = output.decode(errors="replace").strip().replace("\n", " | ")
    return f", output: {text}" if text else ""


def _wait(pid: int, out_fd: int, timeout: int | None) -> tuple[int | None, bytes]:
    """(exit status or None when killed at its timeout, the output's tail).  The output
    pipe may outlive the hook (a child it left behind): only the hook's exit is waited for."""
    pidfd = os.pidfd_open(pid)
    output = b""
    end = None if timeout is None else time.monotonic() + timeout
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(out_fd, select.POLLIN)
        out_open = True
        while True:
            wait_ms = None if end is None else max(0, (end - time.monotonic()) * 1000)
            ready = dict(poller.poll(wait_ms))
            if out_open and out_fd in ready:
                chunk = os.read(out_fd, 65536)
                if chunk:
                    output = (output + chunk)[-_OUTPUT_KEPT:]
                else:
                    poller.unregister(out_fd)
                    out_open = False
            if pidfd in ready:
                _, wait_status = os.waitpid(pid, 0)
                os.set_blocking(out_fd, False)
                try:
                    while out_open and (chunk := os.read(out_fd, 65536)):
                        output = (output + chunk)[-_OUTPUT_KEPT:]
                except BlockingIOError:
                    pass
                return os.waitstatus_to_exitcode(wait_status), output
            if end is not None and time.monotonic() >= end:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None, output
    finally:
        os.close(pidfd)
