"""Every argv podman 4.3.1 (through conmon) and containerd 1.6.20 (through its runc shim) pass
to an OCI runtime, as listed in the engines' invocation table, is accepted by corral's parser;
plus the answers the engines depend on (the checkpoint probe, delete --force of a gone id)."""

from __future__ import annotations

import pytest

from corral.cli import args as cliargs
from tests.conftest import CORRAL, run_capturing

B = "/run/b/bundle"
PODMAN_LOG = ["--log-format=json", "--log", "/run/x/oci-log"]
CONTAINERD = ["--root", "/run/containerd/runc/default", "--log", f"{B}/log.json",
              "--log-format", "json"]

ENGINE_ARGVS = [
    # podman / conmon
    PODMAN_LOG + ["create", "--bundle", B, "--pid-file", "/run/x/pidfile", "--console-socket",
                  "/tmp/conmon-term.AbC", "--preserve-fds", "2", "--no-pivot", "cid"],
    PODMAN_LOG + ["create", "--bundle", B, "--pid-file", "/run/x/pidfile", "cid"],
    ["start", "cid"],
    PODMAN_LOG + ["exec", "--pid-file", f"{B}/e1/exec_pid", "--process",
                  f"{B}/e1/exec-process-123", "--detach", "--tty", "--console-socket",
                  "/tmp/conmon-term.X", "--preserve-fds", "1", "cid"],
    ["kill", "cid", "15"], ["kill", "cid", "9"], ["kill", "--all", "cid", "9"],
    ["pause", "cid"], ["resume", "cid"], ["delete", "--force", "cid"], ["state", "cid"],
    ["--systemd-cgroup", "state", "cid"], ["--version"],
    ["checkpoint", "--help"],
    ["checkpoint", "--image-path", f"{B}/checkpoint", "--work-path", B, "cid"],
    # containerd's runc shim
    CONTAINERD + ["create", "--bundle", B, "--pid-file", f"{B}/init.pid", "--console-socket",
                  "/tmp/pty1/pty.sock", "--no-pivot", "--no-new-keyring", "cid"],
    CONTAINERD + ["start", "cid"],
    CONTAINERD + ["exec", "--process", "/tmp/runc-process1", "--console-socket",
                  "/tmp/pty1/pty.sock", "--detach", "--pid-file", f"{B}/e.pid", "cid"],
    CONTAINERD + ["kill", "cid", "9"], CONTAINERD + ["kill", "--all", "cid", "9"],
    CONTAINERD + ["pause", "cid"], CONTAINERD + ["resume", "cid"],
    CONTAINERD + ["ps", "--format", "json", "cid"],
    CONTAINERD + ["delete", "cid"], CONTAINERD + ["delete", "--force", "cid"],
    CONTAINERD + ["update", "--resources", "-", "cid"],
    ["--systemd-cgroup", "--criu", "/usr/sbin/criu"] + CONTAINERD + ["state", "cid"],
    CONTAINERD + ["checkpoint", "--image-path", "/i", "--work-path", "/w", "--leave-running",
                  "cid"],
    CONTAINERD + ["restore", "--bundle", B, "--detach", "--pid-file", f"{B}/init.pid",
                  "--no-subreaper", "cid"],
]


@pytest.mark.parametrize("argv", ENGINE_ARGVS, ids=lambda a: " ".join(a)[-60:])
def test_engine_argv_parses(argv):
    args, command = cliargs.parse(argv)
    if argv == ["--version"]:
        assert command is None and args.version
        return
    assert command is not None
    if not command.rest and not args.help:
        assert args.id == "cid"


def test_engine_values_land_where_used():
    args, _ = cliargs.parse(ENGINE_ARGVS[0])
    assert (args.log_format, args.log, args.bundle, args.pid_file, args.console_socket,
            args.preserve_fds, args.no_pivot) == ("json", "/run/x/oci-log", B,
                                                  "/run/x/pidfile", "/tmp/conmon-term.AbC",
                                                  2, True)
    args, _ = cliargs.parse(ENGINE_ARGVS[3])
    assert args.detach and args.tty and args.process.endswith("exec-process-123")
    assert args.pid_file == f"{B}/e1/exec_pid" and args.command == []
    args, _ = cliargs.parse(CONTAINERD + ["kill", "--all", "cid", "9"])
    assert args.root == "/run/containerd/runc/default" and args.all and args.signal == "9"
    args, _ = cliargs.parse(CONTAINERD + ["create", "--bundle", B, "--no-new-keyring", "c"])
    assert args.no_new_keyring
    args, _ = cliargs.parse(CONTAINERD + ["ps", "--format", "json", "cid"])
    assert args.format == "json" and args.ps_args == []
    args, _ = cliargs.parse(CONTAINERD + ["update", "--resources", "-", "cid"])
    assert args.resources == "-"


@pytest.mark.parametrize("command", ["checkpoint", "restore"])
def test_checkpoint_help_is_usage_and_success(command):
    """podman runs `checkpoint --help` and reads exit 0 as "can checkpoint"."""
    proc = run_capturing([*CORRAL, command, "--help"])
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(f"usage: corral {command} ") and "--image-path" in proc.stdout


def test_checkpoint_itself_is_not_supported_yet(tmp_path):
    log = tmp_path / "log.json"
    proc = run_capturing([*CORRAL, "--root", str(tmp_path / "state"), "--log", str(log),
                          "--log-format", "json", "checkpoint", "--image-path",
                          str(tmp_path / "img"), "--work-path", str(tmp_path), "cid"])
    assert proc.returncode == 1 and "checkpoint: not supported yet" in proc.stderr
    assert '"level":"error"' in log.read_text().replace(" ", "")


def test_delete_force_of_unknown_id_succeeds_and_creates_the_log(tmp_path):
    log = tmp_path / "log.json"
    proc = run_capturing([*CORRAL, "--root", str(tmp_path / "state"), "--log", str(log),
                          "--log-format", "json", "delete", "--force", "gone"])
    assert proc.returncode == 0 and log.exists()
