"""The command line's start-up path: no trio, and none of the heavy stdlib modules, on the
commands a runtime is called for most (each call is a new interpreter)."""

import json
import os
import subprocess
import sys

import pytest

from corral.cli.launcher import launcher_paths

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
def test_launcher_runs_isolated(corral, argv):
    """The installed `corral` is the -IS launcher (setup.sh writes it)."""
    from tests.conftest import CORRAL

    with open(CORRAL[0]) as f:
        first = f.readline()
    assert first.startswith("#!/") and first.rstrip().endswith(" -IS")
    proc = corral(*argv, check=False)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr
