"""corral's command line: runc's subcommands, flags, exit codes and output formats.

Each call is a short process, so each command imports only what it needs: ``state``, ``kill``,
``delete``, ``list`` and ``start`` never load the creation engine, and nothing here loads trio.
Every error is one line on stderr (and one ``{"level","msg","time"}`` object in ``--log`` with
``--log-format json``, which containerd and podman parse) and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from corral import OCI_VERSION, __version__
from corral.errors import ConfigError, CorralError, NotSupportedError


class _Parser(argparse.ArgumentParser):
    """Usage errors are ordinary one-line errors with exit status 1, as in runc."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError("", f"{self.prog}: {message}")


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
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f'time="{now}" level={level} msg={json.dumps(msg)}'
        os.write(self.fd, (line + "\n").encode())

    def error(self, msg: str) -> None:
        self._write("error", msg)
        sys.stderr.write(f"corral: {msg}\n")

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._write("debug", msg)
            if self.fd is None:
                sys.stderr.write(f"corral: debug: {msg}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="corral", description="Run OCI containers (runc-compatible).")
    parser.add_argument("--root", default=None, help="state directory (default /run/corral)")
    parser.add_argument("--log", default=None, help="log file (created even if empty)")
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("-v", "--version", action="store_true")
    parser.add_argument("--systemd-cgroup", action="store_true")
    parser.add_argument("--rootless", dest="global_rootless", default=None)
    parser.add_argument("--criu", default=None)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("spec", help="write a default config.json")
    p.add_argument("-b", "--bundle", default=".")
    p.add_argument("--rootless", action="store_true")

    for name in ("create", "run"):
        p = sub.add_parser(name)
        p.add_argument("id")
        p.add_argument("-b", "--bundle", default=".")
        p.add_argument("--pid-file", default=None)
        p.add_argument("--no-pivot", action="store_true")
        p.add_argument("--preserve-fds", type=int, default=0)
        p.add_argument("--console-socket", default=None)
        p.add_argument("--no-new-keyring", action="store_true")
        if name == "run":
            p.add_argument("-d", "--detach", action="store_true")
            p.add_argument("--keep", action="store_true")
            p.add_argument("--no-subreaper", action="store_true")

    sub.add_parser("start").add_argument("id")
    sub.add_parser("state").add_argument("id")
    p = sub.add_parser("kill")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="TERM")
    p = sub.add_parser("delete")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("id")
    p = sub.add_parser("list")
    p.add_argument("-f", "--format", default="table", choices=("table", "json"))
    p.add_argument("-q", "--quiet", action="store_true")
    for name in ("exec", "pause", "resume", "ps", "events", "update", "checkpoint", "restore",
                 "features", "supervise", "batch"):
        sub.add_parser(name, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


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
    from corral.supervisor.blocking import create_container
    from corral.supervisor.prepare import prepare

    if args.console_socket:
        raise NotSupportedError("--console-socket")
    prepared = prepare(args.root, args.id, args.bundle, no_pivot=args.no_pivot,
                       preserve_fds=args.preserve_fds)
    log.debug(f"created host side of {args.id}")
    pid = create_container(prepared)
    try:
        if args.pid_file:
            _write_pid_file(args.pid_file, pid)
    except BaseException:
        prepared.undo()
        raise
    log.debug(f"container {args.id} init pid {pid}")
    return prepared, pid


def cmd_create(args, log: Log) -> int:
    _create(args, log)
    return 0


def cmd_run(args, log: Log) -> int:
    from corral.supervisor.containers import Container
    from corral.supervisor.foreground import wait_for_exit

    if not args.no_subreaper and not args.detach:
        from corral import nsenter

        nsenter.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the container come to us
    prepared, pid = _create(args, log)
    container = Container(prepared.state_dir, prepared.record)
    try:
        container.start()
    except BaseException:
        container.delete(force=True)
        raise
    if args.detach:
        return 0
    status = wait_for_exit(pid)
    if not args.keep:
        container.delete(force=True)
    return status


def _load(args):
    from corral.supervisor.containers import Container

    return Container.load(args.root, args.id)


def cmd_start(args, log: Log) -> int:
    _load(args).start()
    return 0


def cmd_state(args, log: Log) -> int:
    sys.stdout.write(json.dumps(_load(args).oci_state(), indent=2))
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
            return 0
        raise
    container.delete(force=args.force)
    return 0


def cmd_list(args, log: Log) -> int:
    from corral.supervisor.containers import list_containers

    states = [c.oci_state() for c in list_containers(args.root)]
    if args.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif args.format == "json":
        sys.stdout.write(json.dumps(states or None) + "\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(5)]
        for r in rows:
            sys.stdout.write("".join(v.ljust(w) for v, w in zip(r, widths)) + r[5] + "\n")
    return 0


COMMANDS = {
    "spec": cmd_spec, "create": cmd_create, "run": cmd_run, "start": cmd_start,
    "state": cmd_state, "kill": cmd_kill, "delete": cmd_delete, "list": cmd_list,
}


def parse_signal(text: str) -> int:
    import signal

    if text.isdigit():
        num = int(text)
        if 0 < num < signal.NSIG:
            return num
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(sig, signal.Signals):
            return int(sig)
    raise ConfigError("signal", f"unknown signal {text!r}")


def _write_pid_file(path: str, pid: int) -> None:
    """Decimal pid without a newline, renamed into place: readers never see a partial file."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    log = Log(None, "text", False)
    try:
        parser = _build_parser()
        args = parser.parse_args(args_list)
        log = Log(args.log, args.log_format, args.debug)
        if args.version:
            sys.stdout.write(f"corral version {__version__}\nspec: {OCI_VERSION}\n")
            return 0
        if args.command is None:
            parser.print_help()
            return 0
        if args.systemd_cgroup:
            raise NotSupportedError("--systemd-cgroup")
        if args.global_rootless not in (None, "false", "auto"):
            raise NotSupportedError("--rootless")
        if args.command not in COMMANDS:
            raise NotSupportedError(f"corral {args.command}")
        if args.root is None:
            from corral.oci.state import DEFAULT_ROOT

            args.root = DEFAULT_ROOT
        return COMMANDS[args.command](args, log)
    except CorralError as exc:
        log.error(str(exc))
        return exc.exit_code
    except OSError as exc:
        log.error(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
