"""The runtimes under test, how to install the missing ones, and the helper processes that run
their commands (bench/helper.py).

crun 1.8 refuses this kind of hybrid host ("cgroups in hybrid mode not supported, drop all
controllers from cgroupv2"), so crun's helper lives in a private mount namespace in which a
tmpfs hides /sys/fs/cgroup/unified (shared/reference/offline-engines.md): crun then sees a
cgroup v1 host, and nothing changes outside that namespace.  corral and runc run on the host's
layout as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.errors import BenchError
from bench.workspace import HERE, reap_orphans

REPO = os.path.dirname(HERE)
CORRAL = os.path.join(os.path.dirname(sys.executable), "corral")
HIDE_CGROUP2 = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs none /sys/fs/cgroup/unified && exec "$@"', "hide-cgroup2"]
DEBIAN_PACKAGES = {"runc": "runc", "crun": "crun"}


def hybrid_host() -> bool:
    return os.path.ismount("/sys/fs/cgroup/unified")


class Helper:
    """One bench/helper.py process; requests are answered in order."""

    def __init__(self, hide_cgroup2: bool, timer: str, prefix: str) -> None:
        argv = [sys.executable, "-m", "bench.helper", timer, prefix]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
        # Its own session: Ctrl-C reaches only the suite, which then stops it in order.
        self.proc = subprocess.Popen(HIDE_CGROUP2 + argv if hide_cgroup2 else argv, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"bench helper exited ({self.proc.wait()}) during {request['op']}")
        return json.loads(line)

    def stop(self, kill: bool) -> None:
        """Close its input (it exits); ``kill``: SIGKILL its whole process group (its pool,
        jobs, runtime calls) and wait until every member is gone."""
        if kill:
            _kill_group(self.proc.pid)
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


def _kill_group(pgid: int, timeout: float = 5.0) -> None:
    """SIGKILL process group ``pgid`` (the helper's own session) and wait for it to be gone;
    its members are reparented to the suite (a subreaper), which reaps them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        reap_orphans()
        time.sleep(0.01)


@dataclass
class Runtime:
    """A runtime's command prefix (``argv``, run by its helper) and where it keeps state."""

    name: str
    argv: list[str]
    root: str
    hide_cgroup2: bool = False
    version: str = ""
    helper: Helper | None = field(default=None, repr=False)

    def run(self, *args: str) -> dict:
        """Time one command; raise BenchError naming it if it failed."""
        answer = self.helper.ask(op="time", argv=self.argv + list(args))
        if answer["code"] != 0:
            raise BenchError(f"{self.name} {' '.join(args)} exited {answer['code']}: "
                             f"{answer['stderr']}")
        return answer

    def direct(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """Run a command outside the helpers (set-up and clean-up, never timed)."""
        prefix = HIDE_CGROUP2 if self.hide_cgroup2 else []
        return subprocess.run(prefix + self.argv + list(args), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=check)

    def leftover_ids(self) -> list[str]:
        """Containers still in this runtime's state root (every one should be deleted)."""
        if not os.path.isdir(self.root):
            return []
        return sorted(n for n in os.listdir(self.root)
                      if os.path.isdir(os.path.join(self.root, n)))


def install_missing(names: list[str]) -> list[str]:
    """apt-get install the Debian packages of the runtimes not on PATH; returns messages."""
    missing = [DEBIAN_PACKAGES[n] for n in names if not shutil.which(n)]
    if not missing:
        return []
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return [f"{', '.join(missing)} missing and not installable here (needs root and apt-get)"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"bench: apt-get install {' '.join(missing)}", file=sys.stderr)
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return [f"{' '.join(argv[:2])} failed: {proc.stderr.strip()[-500:]}"]
    return []


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True).stdout
    except OSError:
        return "?"
    return out.splitlines()[0].strip() if out.strip() else "?"


def discover(state_dir: str) -> tuple[list[Runtime], dict[str, str]]:
    """The runtimes present (corral always) and, for each absent one, why."""
    found = [Runtime("corral", [CORRAL, "--root", os.path.join(state_dir, "corral")],
                     os.path.join(state_dir, "corral"), version=_version([CORRAL, "--version"]))]
    absent = {}
    for name in ("runc", "crun"):
        path = shutil.which(name)
        if not path:
            absent[name] = f"{name} not installed (apt-get install {DEBIAN_PACKAGES[name]})"
            continue
        root = os.path.join(state_dir, name)
        found.append(Runtime(name, [path, "--root", root], root,
                             hide_cgroup2=name == "crun" and hybrid_host(),
                             version=_version([path, "--version"])))
    return found, absent
