"""The command line's grammar: runc's global flags, subcommands and their flags, as data.

Hand-written rather than argparse: argparse brings ``re``, ``gettext`` and ``enum`` (~7 ms),
which is more than a whole ``runc state``.  Flags may come before or after positionals, as
``--flag value`` or ``--flag=value``; ``--`` ends the flags.  A usage error is one
``ConfigError`` naming the flag or argument.
"""

from __future__ import annotations

from corral.errors import ConfigError


class Opt:
    __slots__ = ("names", "dest", "kind", "choices", "default", "help")

    def __init__(self, names: str, kind: str = "bool", default=None, choices=None,
                 help: str = "", dest: str | None = None) -> None:
        self.names = names.split("|")
        self.dest = dest or self.names[-1].lstrip("-").replace("-", "_")
        self.kind = kind  # bool | str | int | list (repeatable str)
        self.default = False if kind == "bool" and default is None else default
        if kind == "list":
            self.default = ()
        self.choices = choices
        self.help = help


class Command:
    __slots__ = ("name", "opts", "positionals", "help", "rest", "tail")

    def __init__(self, name: str, help: str, opts=(), positionals=(), rest: bool = False,
                 tail: str | None = None):
        self.name = name
        self.help = help
        self.opts = list(opts)
        self.positionals = list(positionals)  # (name, required, default)
        self.rest = rest  # takes any arguments (commands that only say "not supported yet")
        # Flags end at the first positional; the arguments after the positionals are kept
        # as a list under this name (``ps ID -ef``: the options are ps's, not ours).
        self.tail = tail


class Args:
    """The parsed command line: one attribute per flag and positional."""

    def __init__(self, **values) -> None:
        self.__dict__.update(values)


GLOBAL = [
    Opt("--root", "str", help="state directory (default /run/corral)"),
    Opt("--log", "str", help="log file, created even when nothing is logged"),
    Opt("--log-format", "str", "text", ("text", "json")),
    Opt("--debug"),
    Opt("-v|--version"),
    Opt("--systemd-cgroup"),
    Opt("--rootless", "str", dest="global_rootless"),
    Opt("--criu", "str"),
    Opt("-h|--help"),
]

_CREATE = [
    Opt("-b|--bundle", "str", ".", help="bundle directory (holds config.json)"),
    Opt("--pid-file", "str", help="write the init's pid here"),
    Opt("--no-pivot", help="MS_MOVE + chroot instead of pivot_root"),
    Opt("--preserve-fds", "int", 0, help="pass fds 3..3+N-1 to the container"),
    Opt("--console-socket", "str"),
    Opt("--no-new-keyring"),
    Opt("-h|--help"),
]

COMMANDS = {c.name: c for c in [
    Command("spec", "write a default config.json",
            [Opt("-b|--bundle", "str", "."), Opt("--rootless"), Opt("-h|--help")]),
    Command("create", "create a container (its process waits for start)", _CREATE,
            [("id", True, None)]),
    Command("run", "create and start a container, wait for it unless detached",
            _CREATE + [Opt("-d|--detach"), Opt("--keep", help="keep it after it exits"),
                       Opt("--no-subreaper")], [("id", True, None)]),
    Command("start", "start a created container", [Opt("-h|--help")], [("id", True, None)]),
    Command("state", "print a container's state as JSON", [Opt("-h|--help")],
            [("id", True, None)]),
    Command("kill", "send a signal to a container's init (default TERM)",
            [Opt("-a|--all", help="to every process of the container"), Opt("-h|--help")],
            [("id", True, None), ("signal", False, "TERM")]),
    Command("delete", "delete a container", [Opt("-f|--force"), Opt("-h|--help")],
            [("id", True, None)]),
    Command("list", "list containers",
            [Opt("-f|--format", "str", "table", ("table", "json")), Opt("-q|--quiet"),
             Opt("-h|--help")]),
    Command("pause", "freeze every process of a container", [Opt("-h|--help")],
            [("id", True, None)]),
    Command("resume", "thaw a paused container", [Opt("-h|--help")], [("id", True, None)]),
    Command("ps", "list a container's processes (ps options after the id)",
            [Opt("-f|--format", "str", "table", ("table", "json")), Opt("-h|--help")],
            [("id", True, None)], tail="ps_args"),
    Command("update", "change a container's cgroup limits (runc's flags; "
                      "--resources FILE or - for a LinuxResources JSON)", [
        Opt("-r|--resources", "str", help="LinuxResources JSON file, - for stdin"),
        Opt("--memory", "str", help="memory limit (e.g. 64m, 1g, -1)"),
        Opt("--memory-reservation", "str", help="memory soft limit"),
        Opt("--memory-swap", "str", help="memory+swap limit (-1 unlimited)"),
        Opt("--kernel-memory", "str", help="ignored (the kernel no longer enforces it)"),
        Opt("--kernel-memory-tcp", "str", help="ignored (the kernel no longer enforces it)"),
        Opt("--cpu-share|--cpu-shares", "str", help="CPU shares (relative weight)"),
        Opt("--cpu-quota", "str", help="CFS quota (µs per period, -1 none)"),
        Opt("--cpu-period", "str", help="CFS period (µs)"),
        Opt("--cpu-burst", "str", help="CFS burst (µs)"),
        Opt("--cpu-rt-runtime", "str", help="realtime runtime (µs, v1)"),
        Opt("--cpu-rt-period", "str", help="realtime period (µs, v1)"),
        Opt("--cpu-idle", "str", help="SCHED_IDLE for the cgroup (0 or 1)"),
        Opt("--cpuset-cpus", "str", help="CPUs to run on (e.g. 0-3,5)"),
        Opt("--cpuset-mems", "str", help="memory nodes (e.g. 0-1)"),
        Opt("--pids-limit", "str", help="maximum number of tasks"),
        Opt("--blkio-weight", "str", help="block IO weight (10-1000)"),
        Opt("--l3-cache-schema", "str", help="Intel RDT: not supported yet"),
        Opt("--mem-bw-schema", "str", help="Intel RDT: not supported yet"),
        Opt("-h|--help")], [("id", True, None)]),
    Command("events", "print a container's stats and OOM events as JSON lines", [
        Opt("--stats", help="print one stats object and exit"),
        Opt("--interval", "str", "5s", help="time between stats (Go duration: 500ms, 2s)"),
        Opt("-h|--help")], [("id", True, None)]),
    Command("features", "print the runtime-spec features this build and host support (JSON)",
            [Opt("-h|--help")]),
    Command("exec", "run a new process in a running container (the container's process "
                    "config, overridden by the flags; or --process FILE)", [
        Opt("-p|--process", "str", help="an OCI process JSON (the other process flags are "
                                        "ignored)"),
        Opt("-e|--env", "list", help="NAME=value added to the environment (repeatable)"),
        Opt("--cwd", "str", help="working directory inside the container"),
        Opt("-u|--user", "str", help="UID[:GID]"),
        Opt("-g|--additional-gids", "list", help="an additional group id (repeatable)"),
        Opt("-c|--cap", "list", help="a capability to add (repeatable)"),
        Opt("--no-new-privs", help="set no_new_privs"),
        Opt("-t|--tty", help="a terminal (to --console-socket, or relayed in the "
                             "foreground)"),
        Opt("--console-socket", "str", help="UNIX socket that receives the pty master"),
        Opt("-d|--detach", help="return once the process runs"),
        Opt("--pid-file", "str", help="write the process's pid here"),
        Opt("--preserve-fds", "int", 0, help="pass fds 3..3+N-1 to the process"),
        Opt("--ignore-paused", help="exec in a paused container (the process runs "
                                    "once it is resumed)"),
        Opt("--cgroup", "list", help="[CONTROLLER[,CONTROLLER...]:]PATH: run in this "
                                     "existing sub-cgroup of the container's (repeatable "
                                     "with controllers, for cgroup v1)"),
        Opt("-h|--help")], [("id", True, None)], tail="command"),
    # Not supported yet, but their --help answers (podman probes `checkpoint --help` to
    # learn whether the runtime can checkpoint): runc's flags, for the usage text only.
    Command("checkpoint", "checkpoint a running container (not supported yet)", [
        Opt("--image-path", "str", help="where to save the image"),
        Opt("--work-path", "str", help="where to save CRIU's logs"),
        Opt("--parent-path", "str", help="the previous image, relative to --image-path"),
        Opt("--leave-running", help="leave the process running afterwards"),
        Opt("--tcp-established"), Opt("--ext-unix-sk"), Opt("--shell-job"),
        Opt("--lazy-pages"), Opt("--status-fd", "str"), Opt("--page-server", "str"),
        Opt("--file-locks"), Opt("--pre-dump"), Opt("--manage-cgroups-mode", "str"),
        Opt("--empty-ns", "list"), Opt("--auto-dedup"), Opt("-h|--help")],
        [("id", True, None)], rest=True),
    Command("restore", "restore a container from a checkpoint (not supported yet)", [
        Opt("--console-socket", "str"), Opt("--image-path", "str"),
        Opt("--work-path", "str"), Opt("--tcp-established"), Opt("--ext-unix-sk"),
        Opt("--shell-job"), Opt("--file-locks"), Opt("--manage-cgroups-mode", "str"),
        Opt("-b|--bundle", "str", "."), Opt("-d|--detach"), Opt("--pid-file", "str"),
        Opt("--no-subreaper"), Opt("--no-pivot"), Opt("--empty-ns", "list"),
        Opt("--auto-dedup"), Opt("--lazy-pages"), Opt("--lsm-profile", "str"),
        Opt("--lsm-mount-context", "str"), Opt("-h|--help")],
        [("id", True, None)], rest=True),
    Command("supervise", "run the supervisor daemon in the foreground (API on a Unix socket; "
                         "docs/api.md)", [
        Opt("--socket", "str", help="API socket (default <root>/supervise.sock)"),
        Opt("--max-concurrent-creates", "int", 16, help="creations in progress at once"),
        Opt("--group", "str", help="a group whose members may use the socket too"),
        Opt("--log-max-size", "str", "8M", help="a container log file's size before rotation"),
        Opt("--log-max-files", "int", 1, help="rotated log files kept per stream"),
        Opt("--cgroup-parent", "str", "corral", help="cgroup parent of jobs' containers"),
        Opt("--cgroup-manager", "str", "cgroupfs",
            help="cgroupfs, or systemd: containers in transient scopes (--systemd-cgroup), "
                 "jobs' in the slice the cgroup parent names"),
        Opt("--network", "list", help="a bridge network for jobs: NAME=SUBNET[,nat]"
                                      "[,subnet6=CIDR][,mtu=N][,bridge=IFNAME] (repeatable; "
                                      "corral0 is 10.91.0.0/16 unless given)"),
        Opt("--request-timeout", "str", "30",
            help="seconds a client may take to finish a request line"),
        Opt("--send-timeout", "str", "30",
            help="seconds a client may read nothing of its answers before it is dropped"),
        Opt("-h|--help")]),
    Command("batch", "run the jobs of a TOML or JSON-lines jobs file (docs/api.md, "
                     "\"corral batch\"); exit status 0: every job succeeded, 3: a job failed "
                     "(after its retries), 1: bad input (one error line), 130: interrupted", [
        Opt("--parallel", "int", help="jobs at once (default: the number of CPUs; with "
                                      "--dask, the cluster's job slots)"),
        Opt("--timeout", "str", help="wall-time limit of jobs that set none (30s, 5m, 1h)"),
        Opt("--retries", "int", 0, help="runs of a failed job beyond the first, for jobs "
                                        "that set none (exit status, timeout, engine error)"),
        Opt("--results", "str", help="new or empty directory: DIR/<job>/stdout, stderr, "
                                     "result.json and DIR/summary.json"),
        Opt("--socket", "str", help="the corral supervise to use (default: "
                                    "<root>/supervise.sock when one listens there, else "
                                    "an embedded engine)"),
        Opt("--cgroup-parent", "str", help="cgroup parent of the embedded engine's jobs "
                                           "(default corral)"),
        Opt("--dask", "str", help="a Dask scheduler (tcp://HOST:8786): the jobs run on its "
                                  "workers' nodes, each through its corral supervise "
                                  "(pip install 'corral[dask]'; docs/api.md)"),
        Opt("-q|--quiet", help="no progress and no summary: the failed jobs' lines only"),
        Opt("-h|--help")], [("file", True, None)]),
]}


def parse(argv: list[str]) -> tuple[Args, Command | None]:
    values = {o.dest: o.default for o in GLOBAL}
    rest = _parse_flags(argv, GLOBAL, values, "global flags", stop_at_positional=True)
    if not rest:
        return Args(**values), None
    name, rest = rest[0], rest[1:]
    command = COMMANDS.get(name)
    if command is None:
        raise ConfigError("", f"unknown command {name!r}")
    if command.rest:
        values["rest"] = rest
        flags = rest[: rest.index("--")] if "--" in rest else rest
        values["help"] = any(a in ("-h", "--help") for a in flags)
        return Args(**values), command
    for opt in command.opts:
        values[opt.dest] = opt.default
    positionals = _parse_flags(rest, command.opts, values, name,
                               stop_at_positional=command.tail is not None)
    if values.get("help"):
        return Args(**values), command
    if command.tail is not None:
        count = len(command.positionals)
        values[command.tail] = positionals[count:]
        positionals = positionals[:count]
    if len(positionals) > len(command.positionals):
        raise ConfigError("", f"{name}: unexpected argument {positionals[len(command.positionals)]!r}")
    for i, (pname, required, default) in enumerate(command.positionals):
        if i < len(positionals):
            values[pname] = positionals[i]
        elif required:
            raise ConfigError("", f"{name}: missing the {pname} argument")
        else:
            values[pname] = default
    return Args(**values), command


def _parse_flags(argv: list[str], opts: list[Opt], values: dict, where: str,
                 stop_at_positional: bool = False) -> list[str]:
    by_name = {n: o for o in opts for n in o.names}
    positionals = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals += argv[i:]
            break
        if not arg.startswith("-") or arg == "-" or arg[1:].isdigit():  # "kill ID -1"
            if stop_at_positional:
                return argv[i - 1 :]
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        opt = by_name.get(name)
        if opt is None:
            raise ConfigError("", f"{where}: unknown flag {name}")
        if opt.kind == "bool":
            if eq:
                if inline not in ("true", "false"):
                    raise ConfigError("", f"{where}: {name} takes true or false, not {inline!r}")
                values[opt.dest] = inline == "true"
            else:
                values[opt.dest] = True
            continue
        if eq:
            raw = inline
        elif i < len(argv):
            raw = argv[i]
            i += 1
        else:
            raise ConfigError("", f"{where}: {name} needs a value")
        if opt.kind == "list":
            values[opt.dest] = (*values[opt.dest], raw)
        else:
            values[opt.dest] = _convert(opt, name, raw, where)
    return positionals


def _convert(opt: Opt, name: str, raw: str, where: str):
    if opt.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError("", f"{where}: {name} takes a number, not {raw!r}") from None
    if opt.choices and raw not in opt.choices:
        raise ConfigError("", f"{where}: {name} must be one of {', '.join(opt.choices)}, "
                              f"not {raw!r}")
    return raw


def usage(command: Command | None) -> str:
    if command is None:
        lines = ["usage: corral [global flags] COMMAND [flags] [arguments]", "", "commands:"]
        lines += [f"  {c.name:<12}{c.help}" for c in COMMANDS.values()]
        lines += ["", "global flags:"] + [_describe(o) for o in GLOBAL]
        return "\n".join(lines) + "\n"
    args = " ".join(n.upper() if req else f"[{n.upper()}]" for n, req, _ in command.positionals)
    if command.tail:
        args += f" [{command.tail.upper()}...]"
    lines = [f"usage: corral {command.name} [flags] {args}".rstrip(), "", command.help, ""]
    lines += [_describe(o) for o in command.opts]
    return "\n".join(lines) + "\n"


def _describe(opt: Opt) -> str:
    names = ", ".join(opt.names)
    if opt.kind != "bool":
        names += " " + ("|".join(opt.choices) if opt.choices else opt.kind.upper())
    return f"  {names:<30}{opt.help}".rstrip()
