"""Writes the `corral` command as a launcher that starts in a few milliseconds.

pip's console scripts import ``re`` and run ``site`` (with every ``.pth`` hook) before corral
gets control: ~8 ms of a command whose whole budget, to match runc, is about ten.  This
launcher runs the interpreter isolated and without ``site`` (``-I -S``) and puts exactly the
two directories corral needs on ``sys.path``.  Its interpreter path is absolute: podman calls
runtimes with no PATH at all.

    python -m corral.cli.launcher DEST
"""

from __future__ import annotations

import os
import sys


def launcher_paths() -> list[str]:
    """Where corral and its one compiled dependency (cffi's backend) are installed."""
    import _cffi_backend

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # corral/
    return [os.path.dirname(package),
            os.path.dirname(os.path.abspath(_cffi_backend.__file__))]


def launcher_text() -> str:
    paths = launcher_paths()
    return (f"#!{sys.executable} -IS\n"
            "# corral's command line, written by `python -m corral.cli.launcher`\n"
            "import sys\n"
            f"sys.path += {paths!r}  # after the stdlib's: its imports need not search ours\n"
            "from corral.cli.main import main\n"
            "code = main()\n"
            "# Nothing to tear down that the kernel does not: skip the interpreter's finalization.\n"
            "sys.stdout.flush(), sys.stderr.flush()\n"
            "import os; os._exit(code)\n")


def write_launcher(dest: str) -> None:
    tmp = f"{dest}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(launcher_text())
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m corral.cli.launcher DEST")
    write_launcher(sys.argv[1])
