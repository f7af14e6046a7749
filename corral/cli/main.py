"""corral's command line: runc's subcommands, flags, exit codes and output formats.

Each call is a short process, so each command imports only what it needs: ``state``, ``kill``,
``delete``, ``list`` and ``start`` never load the creation engine, and nothing here loads trio.
Every error is one line on stderr (and one ``{"level","msg","time"}`` object in ``--log`` with
``--log-format json``, which containerd and podman parse) and exit status 1.
"""

from __future__ import annotations

from corral import jsonlite as json
import os
import sys
import time

from corral.version import OCI_VERSION, __version__
from corral.errors import ConfigError, CorralError, NotSupportedError
from corral.logformat import log_line


class Log:
    """The --log file (always created when named, as engines expect) and stderr."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.fmt = fmt
        self.debug_enabled = debug
        self.fd = None
        if path:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def _write(self, level: str, msg: str) -> None:
        if self.fd is None:
            return
        os.write(self.fd, log_line(level, msg, self.fmt))

    def error(self, msg: str) -> None:
        self._write("error", msg)
        sys.stderr.write(f"corral: {msg}\n")

    def warn(self, msg: str) -> None:
        self._write("warning", msg)
        sys.stderr.write(f"corral: warning: {msg}\n")

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._write("debug", msg)
            if self.fd is None:
                sys.stderr.write(f"corral: debug: {msg}\n")


# ---- commands ---------------------------------------------------------------------------------


def cmd_spec(args, log: Log) -> int:
    from corral.oci.spec import default_spec

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise CorralError(f"File {path} exists. Remove it first")
    with open(path, "x") as f:
        f.write(json.dumps(default_spec(rootless=args.rootless), indent="\t"))
    return 0


def _create(args, log: Log) -> tuple:
    from corral.runtime.blocking import create_container
    from corral.runtime.prepare import prepare

    listen = _listen_fds()
    _check_fds_open(3, args.preserve_fds + listen)
    prepared = prepare(args.root, args.id, args.bundle, no_pivot=args.no_pivot,
                       preserve_fds=args.preserve_fds, listen_fds=listen,
                       new_keyring=not args.no_new_keyring,
                       console_socket=args.console_socket,
                       detach=getattr(args, "detach", True),
                       systemd_cgroup=args.systemd_cgroup)
    log.debug(f"created host side of {args.id}")
    console = None
    master = None
    try:
        if prepared.config.process.terminal and not args.console_socket:
            # A foreground run (prepare refused the rest): we take the pty master ourselves.
            from corral.runtime.tty_relay import ConsoleReceiver

            console = ConsoleReceiver()
            prepared.slots["console"] = console.path
    except BaseException:
        prepared.undo_after_failure()
        raise
    try:
        pid = create_container(prepared)
        try:
            if console is not None:
                master = console.receive()
            if args.pid_file:
                _write_pid_file(args.pid_file, pid)
        except BaseException:
            if master is not None:
                os.close(master)
            prepared.undo_after_failure()
            raise
    finally:
        if console is not None:
            console.close()
    log.debug(f"container {args.id} init pid {pid}")
    return prepared, pid, master


def cmd_create(args, log: Log) -> int:
    _create(args, log)
    return 0


def cmd_run(args, log: Log) -> int:
    from corral.runtime.containers import Container
    from corral.runtime.foreground import forwarding_signals, reap_until

    if not args.no_subreaper and not args.detach:
        from corral import nsenter

        nsenter.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the container come to us
    prepared, pid, master = _create(args, log)
    container = Container(prepared.state_dir, prepared.record)
    if args.detach:
        _start_or_delete(container)
        return 0
    if master is not None:
        from corral.runtime.tty_relay import relay_foreground

        status = relay_foreground(master, pid, lambda: reap_until(pid),
                                  start=lambda: _start_or_delete(container))
    else:
        # Forwarding first: the process may get (and react to) a signal as soon as it runs.
        with forwarding_signals(pid):
            _start_or_delete(container)
            status = reap_until(pid)
    if not args.keep:
        container.delete(force=True)
    return status


class ExecFailed(CorralError):
    """runc's exec exits 255 on any failure of its own (fatalWithCode(..., 255)), so that
    a caller tells it from the process's status."""

    exit_code = 255


def cmd_exec(args, log: Log) -> int:
    try:
        return _exec(args)
    except CorralError as exc:
        raise ExecFailed(f"exec failed: {exc}") from None
    except OSError as exc:
        raise ExecFailed(f"exec failed: {os_error_text(exc)}") from None


def _exec(args) -> int:
    """runc's exec: foreground, the process is our child (CLONE_PARENT): signals are
    forwarded to it and its status is ours (128+N for signal N), its terminal relayed by us
    when it has one and no --console-socket; --detach returns once it runs.  The pid file is
    written either way."""
    from corral.runtime.blocking import create_container
    from corral.runtime.execution import prepare_exec

    _check_fds_open(3, args.preserve_fds)
    prepared = prepare_exec(args)
    try:
        pid = create_container(prepared, before_release=prepared.release)
    finally:
        prepared.close()
    if args.detach:
        _publish_exec_pid(args.pid_file, pid)
        return 0
    from corral.runtime.foreground import exit_status, forwarding_signals

    def wait() -> int:
        return exit_status(os.waitpid(pid, 0)[1])

    if prepared.master is not None:
        from corral.runtime.tty_relay import relay_foreground

        return relay_foreground(prepared.master, pid, wait,
                                start=lambda: _publish_exec_pid(args.pid_file, pid))
    with forwarding_signals(pid):
        _publish_exec_pid(args.pid_file, pid)
        return wait()


def _publish_exec_pid(pid_file: str | None, pid: int) -> None:
    """The pid file, or, if it cannot be written, no process either."""
    try:
        if pid_file:
            _write_pid_file(pid_file, pid)
    except BaseException:
        try:
            os.kill(pid, 9)  # our child: its pid is not reused until reaped
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise


def _start_or_delete(container) -> None:
    try:
        container.start()
    except BaseException:
        container.delete(force=True)
        raise


def _load(args):
    from corral.runtime.containers import Container

    return Container.load(args.root, args.id)


def cmd_start(args, log: Log) -> int:
    _load(args).start()
    return 0


def cmd_state(args, log: Log) -> int:
    # runc: json.MarshalIndent(state, "", "  "), no newline
    sys.stdout.write(json.go_dumps(_load(args).oci_state(), indent="  "))
    return 0


def cmd_kill(args, log: Log) -> int:
    sig = parse_signal(args.signal)
    _load(args).kill(sig, all_processes=args.all)
    return 0


def cmd_delete(args, log: Log) -> int:
    from corral.errors import ContainerNotFound

    try:
        container = _load(args)
    except ContainerNotFound:
        if args.force:
            # A state dir without a readable record (a create that crashed before writing
            # it; it made no cgroup yet) would block the id forever.
            from corral.oci.state import StateDir

            StateDir(args.root, args.id).remove()
            return 0
        raise
    container.delete(force=args.force)
    return 0


def cmd_list(args, log: Log) -> int:
    from corral.runtime.containers import list_containers

    states = []
    for container in list_containers(args.root):
        state = container.oci_state()
        state["owner"] = _owner(container.state_dir.path)  # runc's list (not state) says
        states.append(state)
    if args.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif args.format == "json":
        sys.stdout.write(json.go_dumps(states or None) + "\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(5)]
        for r in rows:
            sys.stdout.write("".join(v.ljust(w) for v, w in zip(r, widths)) + r[5] + "\n")
    return 0


def _owner(path: str) -> str:
    """The user name owning a state directory, "#UID" without one (runc's list)."""
    import pwd

    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def cmd_pause(args, log: Log) -> int:
    _load(args).pause()
    return 0


def cmd_resume(args, log: Log) -> int:
    _load(args).resume()
    return 0


def cmd_ps(args, log: Log) -> int:
    """runc's ps: the container's host pids as JSON, or ``ps``'s own table (``-ef`` unless
    options are given) cut down to its header and the container's processes."""
    pids = _load(args).processes()
    if args.format == "json":
        sys.stdout.write(("[" + ",".join(map(str, pids)) + "]" if pids else "null") + "\n")
        return 0
    status, output = _run_ps(args.ps_args or ["-ef"])
    if status != 0:
        raise CorralError(f"exit status {status}: {output.strip()}")
    lines = output.split("\n")
    header = lines[0].split()
    if "PID" not in header:
        raise CorralError("couldn't find PID field in ps output")
    index = header.index("PID")
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[index])
        except (IndexError, ValueError):
            raise CorralError(f"unable to parse pid from ps line {line!r}") from None
        if pid in wanted:
            out.append(line)
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _run_ps(ps_args: list[str]) -> tuple[int, str]:
    """``ps`` with stdout and stderr on one pipe (no subprocess: it imports signal/enum)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            pid = os.posix_spawnp("ps", ["ps", *ps_args], os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)])
        finally:
            os.close(write_end)
        chunks = []
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), b"".join(chunks).decode(errors="replace")


def cmd_update(args, log: Log) -> int:
    from corral.runtime.update import build, update

    resources, warnings = build(args)  # bad input is named before any container is read
    container = _load(args)
    for warning in warnings:
        log.warn(warning)
    update(container, resources)
    return 0


def cmd_events(args, log: Log) -> int:
    from corral.runtime.events import parse_duration, run

    interval = parse_duration(args.interval)
    return run(_load(args), args.stats, interval)


def cmd_supervise(args, log: Log) -> int:
    from corral.supervisor.daemon import main as supervise

    return supervise(args)


def cmd_batch(args, log: Log) -> int:
    from corral.cli.batch import main as batch

    return batch(args, log)


def cmd_features(args, log: Log) -> int:
    from corral.runtime.features import features

    # runc: an Encoder with SetIndent("", "    ")
    sys.stdout.write(json.go_dumps(features(), indent="    ") + "\n")
    return 0


COMMANDS = {
    "features": cmd_features, "supervise": cmd_supervise, "batch": cmd_batch,
    "update": cmd_update, "events": cmd_events,
    "exec": cmd_exec,
    "spec": cmd_spec, "create": cmd_create, "run": cmd_run, "start": cmd_start,
    "state": cmd_state, "kill": cmd_kill, "delete": cmd_delete, "list": cmd_list,
    "pause": cmd_pause, "resume": cmd_resume, "ps": cmd_ps,
}


def parse_signal(text: str) -> int:
    """runc's parseSignal: any number (Go's Atoi: a sign, decimal digits, 64 bits) is sent
    as it is, 0 included (the kernel judges it); else a name with or without SIG, any case."""
    import _signal  # `signal` itself imports enum: ~2 ms of every command

    digits = text[1:] if text[:1] in "+-" else text
    if digits.isascii() and digits.isdigit():
        num = int(text)
        if -(1 << 63) <= num < (1 << 63):
            return num
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        num = getattr(_signal, name, None) if name.isidentifier() and "_" not in name else None
        if isinstance(num, int) and 0 < num < _signal.NSIG:
            return num
    raise ConfigError("signal", f"unknown signal {text!r}")


def _listen_fds() -> int:
    """Socket-activation fds given to this command (systemd's LISTEN_FDS for our own pid)
    pass on to the container, after fd 2, as runc does."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return 0
        return max(0, int(os.environ.get("LISTEN_FDS", "0")))
    except ValueError:
        return 0


def _check_fds_open(first: int, count: int) -> None:
    for fd in range(first, first + count):
        try:
            os.fstat(fd)
        except OSError:
            raise ConfigError("--preserve-fds", f"fd {fd} is not open") from None


def _write_pid_file(path: str, pid: int) -> None:
    """Decimal pid without a newline, renamed into place: readers never see a partial file."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def os_error_text(exc: OSError) -> str:
    return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    from corral.cli import args as cliargs

    log = Log(None, "text", False)
    try:
        args, command = cliargs.parse(sys.argv[1:] if argv is None else argv)
        log = Log(args.log, args.log_format, args.debug)
        if args.version:
            sys.stdout.write(f"corral version {__version__}\nspec: {OCI_VERSION}\n")
            return 0
        if command is None or args.help:
            sys.stdout.write(cliargs.usage(command))
            return 0
        if args.global_rootless not in (None, "false", "auto"):
            raise NotSupportedError("--rootless")
        if command.name not in COMMANDS:
            raise NotSupportedError(f"corral {command.name}")
        if args.root is None:
            from corral.oci.state import default_root

            args.root = default_root()
        return COMMANDS[command.name](args, log)
    except CorralError as exc:
        log.error(str(exc))
        return exc.exit_code
    except OSError as exc:
        log.error(os_error_text(exc))
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
