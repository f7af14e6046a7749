"""The command line's start-up path: no trio, and none of the heavy stdlib modules, on the
commands a runtime is called for most (each call is a new interpreter)."""

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = os.path.join(REPO, "scripts", "corral")

HEAVY = ("trio", "anyio", "argparse", "re", "enum", "dataclasses", "typing", "inspect",
         "pyroute2", "json.decoder", "collections")

PROBE = """
import os, sys
sys.path += {paths!r}
from corral.cli.main import main
code = main({argv!r})
modules = sorted(sys.modules)  # before the probe's own json import below
import json
with open({out!r}, "w") as f:
    json.dump({{"code": code, "modules": modules}}, f)
"""


def launcher_paths() -> list[str]:
    """What scripts/corral puts on sys.path for this checkout: the source tree (an editable
    install) and the venv's site-packages (cffi's backend)."""
    import _cffi_backend

    return [REPO, os.path.dirname(os.path.abspath(_cffi_backend.__file__))]


def imported_by(corral, tmp_path, *argv):
    """Runs one command like the launcher does (-I -S) and returns the modules it loaded.
    Output through a file: a created container holds our stdio until it starts."""
    out = str(tmp_path / "probe.json")
    code = PROBE.format(paths=launcher_paths(), argv=["--root", corral.root, *argv], out=out)
    with open(os.devnull, "w") as devnull:
        proc = subprocess.run([sys.executable, "-IS", "-c", code], stdout=devnull,
                              stderr=devnull, timeout=60)
    assert proc.returncode == 0, argv
    with open(out) as f:
        result = json.load(f)
    return result["code"], set(result["modules"])


def test_create_start_state_kill_delete_list_stay_light(corral, make_bundle, tmp_path):
    b = make_bundle(["sleep", "30"])
    steps = [("create", "-b", b.path, b.id), ("state", b.id), ("start", b.id), ("list",),
             ("kill", b.id, "KILL"), ("delete", "-f", b.id)]
    pid = None
    for argv in steps:
        code, modules = imported_by(corral, tmp_path, *argv)
        assert code == 0, argv
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
        assert not heavy, f"corral {argv[0]} imported {heavy}"
        if argv[0] == "create":
            pid = corral.state(b.id)["pid"]
    os.waitpid(pid, 0)


@pytest.mark.parametrize("argv", [("--version",), ("state", "nope"), ("list", "-q")])
def test_installed_command_is_the_isolated_script(corral, argv):
    """pip installed scripts/corral as the `corral` command (not a console script)."""
    from tests.conftest import CORRAL

    with open(CORRAL[0]) as f, open(COMMAND) as g:
        assert f.read() == g.read()
    proc = corral(*argv, check=False)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr


def test_command_runs_python_isolated_without_site(corral, make_bundle):
    """The running `corral run` is `python -IS corral ...`: no site, no .pth hooks."""
    from tests.conftest import CORRAL

    b = make_bundle(["sleep", "30"])
    proc = subprocess.Popen([*CORRAL, "--root", corral.root, "run", "-b", b.path, b.id],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while corral("state", b.id, check=False).returncode != 0:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
        assert argv[1:3] == [b"-IS", CORRAL[0].encode()], argv
        assert os.path.basename(argv[0]).startswith(b"python"), argv
    finally:
        corral("delete", "-f", b.id, check=False)
        proc.wait(timeout=30)


def _fake_venv(tmp_path, editable: bool) -> str:
    """A venv's layout around a copy of scripts/corral: bin/python (this interpreter),
    lib/pythonX.Y/site-packages holding corral as a link to the source tree, or an
    editable install's .pth naming it; cffi's backend beside it."""
    import _cffi_backend

    venv = tmp_path / "venv"
    lib = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    lib.mkdir(parents=True)
    (venv / "bin").mkdir()
    os.symlink(sys.executable, venv / "bin" / "python")
    with open(COMMAND) as f:
        (venv / "bin" / "corral").write_text(f.read())
    os.chmod(venv / "bin" / "corral", 0o755)
    os.symlink(_cffi_backend.__file__, lib / os.path.basename(_cffi_backend.__file__))
    if editable:
        (lib / "__editable__.corral-0.1.0.pth").write_text(REPO + "\n")
    else:
        os.symlink(os.path.join(REPO, "corral"), lib / "corral")
    return str(venv / "bin" / "corral")


@pytest.mark.parametrize("editable", [False, True], ids=["installed", "editable"])
def test_command_finds_corral_without_site(tmp_path, editable):
    """The script finds corral in its own venv (or where an editable install's .pth says)
    without site, also when called through a symlink from elsewhere."""
    command = _fake_venv(tmp_path, editable)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "corral"
    os.symlink(command, link)
    for argv0 in (command, str(link)):
        proc = subprocess.run([argv0, "--root", str(tmp_path / "state"), "list", "-q"],
                              capture_output=True, text=True, timeout=60, env={})
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc
