"""``corral supervise``: the engine served on a Unix socket until SIGTERM or SIGINT.

Start-up: one daemon per root (a lock), the keeper (connected to, or started), every
container of the root adopted, the socket bound, then "ready" (a line on stdout and
``READY=1`` to ``$NOTIFY_SOCKET``).  Shut-down leaves every container running: the keeper
keeps them, their statuses and logs until a daemon comes back.
"""

from __future__ import annotations

import os
import resource
import signal as _signal
import socket as _socket
import sys

import trio

from corral.errors import ConfigError

PR_SET_CHILD_SUBREAPER = 36
ORPHAN_SWEEP = 1.0


class DaemonLog:
    """Text (runc's logfmt-like lines) or JSON lines, to the --log file or stderr."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.fmt = fmt
        self.debug = debug
        self.fd = (os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
                   if path else 2)

    def __call__(self, level: str, msg: str) -> None:
        from corral.logformat import log_line

        if level == "debug" and not self.debug:
            return
        try:
            os.write(self.fd, log_line(level, msg, self.fmt))
        except OSError:
            pass


def parse_size(text: str, flag: str) -> int:
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
             "g": 1 << 30, "gb": 1 << 30}
    lowered = text.strip().lower()
    number = lowered.rstrip("kmgb")
    unit = lowered[len(number):]
    if not number.isdigit() or unit not in units or int(number) == 0:
        raise ConfigError(flag, f"{text!r} is not a size (e.g. 8M, 512k, 1G, or bytes)")
    return int(number) * units[unit]


def resolve_group(name: str | None) -> int | None:
    if name is None:
        return None
    import grp

    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError("--group", f"no group named {name!r}") from None


def main(args) -> int:
    """Called by the command line with its parsed ``supervise`` arguments."""
    log = DaemonLog(args.log, args.log_format, args.debug)
    if args.max_concurrent_creates < 1:
        raise ConfigError("--max-concurrent-creates", "must be at least 1")
    if args.cgroup_manager not in ("cgroupfs", "systemd"):
        raise ConfigError("--cgroup-manager",
                          f"{args.cgroup_manager!r} is not cgroupfs or systemd")
    group = resolve_group(args.group)
    options = {"max_concurrent_creates": args.max_concurrent_creates,
               "log_max_bytes": parse_size(args.log_max_size, "--log-max-size"),
               "log_keep": args.log_max_files, "cgroup_parent": args.cgroup_parent,
               "cgroup_manager": args.cgroup_manager}
    if args.log_max_files < 0:
        raise ConfigError("--log-max-files", "must not be negative")
    options["networks"] = _networks(args.network)
    timeouts = (_seconds(args.request_timeout, "--request-timeout"),
                _seconds(args.send_timeout, "--send-timeout"))
    root = os.path.abspath(args.root)
    socket_path = os.path.abspath(args.socket or os.path.join(root, "supervise.sock"))
    from corral.procfs import raise_fd_limit

    raise_fd_limit()
    trio.run(_serve, root, socket_path, group, timeouts, options, log)
    return 0


def _seconds(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(flag, f"{text!r} is not a positive number of seconds")
    return value


def _networks(flags: list[str]) -> dict:
    """--network NAME=SUBNET[,...] flags, checked here so that a bad one stops the daemon
    before it starts anything."""
    from corral.net.registry import parse_flag, parse_options

    networks: dict = {}
    for text in flags:
        name, options = parse_flag(text)
        if name in networks:
            raise ConfigError("--network", f"network {name} is given twice")
        networks[name] = options
    try:
        parse_options(networks)
    except ConfigError as err:  # name the flag, not the engine option
        raise ConfigError("--network", str(err)) from None
    return networks


async def _serve(root: str, socket_path: str, group: int | None,
                 timeouts: tuple[float, float], options: dict, log) -> None:
    """``timeouts``: the request and the send timeout (server.py)."""
    from corral import nsenter
    from corral.supervisor.engine import open_engine
    from corral.supervisor.server import bind_socket, serve

    # Inits whose keeper died are reparented here (the keeper is our child), not to pid 1.
    nsenter.prctl(PR_SET_CHILD_SUBREAPER, 1)
    with trio.open_signal_receiver(_signal.SIGTERM, _signal.SIGINT) as signals:
        async with open_engine(root, daemon=True, log=log, **options) as engine:
            counts = await engine.adopt()
            listener = bind_socket(socket_path, group)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve, engine, listener, log, group, *timeouts)
                    nursery.start_soon(_reap_orphans, engine, log)
                    log("info", f"keeper pid {engine.keeper.pid}; adopted {counts['running']} "
                                f"running and {counts['exited']} exited containers, undid "
                                f"{counts['undone']} half-made")
                    _announce_ready(socket_path)
                    async for signum in signals:
                        log("info", f"signal {signum}: stopping (containers keep running)")
                        nursery.cancel_scope.cancel()
                        break
            finally:
                listener.close()
                try:
                    os.unlink(socket_path)
                except FileNotFoundError:
                    pass


def _announce_ready(socket_path: str) -> None:
    sys.stdout.write(f"corral supervise: ready on {socket_path} (pid {os.getpid()})\n")
    sys.stdout.flush()
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    address = "\0" + target[1:] if target.startswith("@") else target
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(b"READY=1\nMAINPID=%d" % os.getpid(), address)
        except OSError:
            pass  # a notify socket that went away: nobody is waiting


async def _reap_orphans(engine, log) -> None:
    """Reaps what is reparented to this subreaper without stealing a child someone waits
    for: a container init or an exec'd process (its keeper died) is reaped, its status
    recorded and reported as the keeper would have; any other zombie child only once it
    has stayed a zombie for a whole sweep (trio's and the hooks' own children are reaped by
    their waiters within milliseconds)."""
    from corral.runtime.foreground import exit_status

    seen: set[int] = set()
    with trio.open_signal_receiver(_signal.SIGCHLD) as sigchld:
        while True:
            with trio.move_on_after(ORPHAN_SWEEP):
                await sigchld.__anext__()
            await engine.prune()
            zombies = _zombie_children()
            for pid in zombies:
                if (engine.container_of(pid) is not None or engine.keeper.expects(pid)
                        or pid in seen):
                    try:
                        _, raw = os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        continue
                    status = exit_status(raw)
                    if engine.reap_orphan(pid, status):
                        log("info", f"reaped container init {pid} (its keeper is gone): {status}")
                    engine.keeper.orphan_exited(pid, status)
            seen = zombies


def _zombie_children() -> set[int]:
    me = os.getpid()
    found = set()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if raw[raw.rindex(b")") + 2:][:1] == b"Z":
                found.add(pid)
    return found

