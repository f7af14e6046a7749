"""The suite's own place on the host: a temp directory (busybox rootfs, bundles, runtime state
roots, the compiled floor) and a cgroup parent ``corral-bench-<pid>`` in every hierarchy.
Everything made here is removed by ``close()``, also after Ctrl-C or a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.errors import BenchError
from corral.images import build_rootfs
from corral.oci.spec import default_spec

CGROUP_ROOT = "/sys/fs/cgroup"
HERE = os.path.dirname(os.path.abspath(__file__))


def hierarchies() -> list[str]:
    """Every mounted cgroup hierarchy: /sys/fs/cgroup itself on a cgroup v2 host, else each
    mount below it (v1 controllers, name=systemd, and a hybrid host's unified)."""
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return [CGROUP_ROOT]
    return [p for p in (os.path.join(CGROUP_ROOT, d) for d in sorted(os.listdir(CGROUP_ROOT)))
            if os.path.ismount(p)]


def remove_cgroup_tree(parent: str) -> None:
    """rmdir ``parent`` and every (empty) cgroup below it, deepest first, in every
    hierarchy; what still holds a task stays (its owner's to kill first)."""
    for hierarchy in hierarchies():
        base = os.path.join(hierarchy, parent.strip("/"))
        for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda e: -len(e[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def is_v1_cpuset(path: str) -> bool:
    """A v1 cpuset cgroup: created empty, it admits no task until cpus and mems are set."""
    return (os.path.exists(os.path.join(path, "cpuset.cpus"))
            and not os.path.exists(os.path.join(path, "cgroup.controllers")))


#: Set by suite.main once it runs in a private mount namespace of its own.
PRIVATE_MOUNTS = "CORRAL_BENCH_PRIVATE_MOUNTS"


class Workspace:
    """Temp directory + cgroup parent; bundles of /bin/true share one read-only rootfs."""

    def __init__(self) -> None:
        self.parent = f"corral-bench-{os.getpid()}"
        self.dir = tempfile.mkdtemp(prefix="corral-bench-")
        # Every runtime's state root: a tmpfs, as /run is on a production host, when the
        # suite runs in a mount namespace of its own (suite.main); else the disk's /tmp.
        self.state = os.path.join(self.dir, "state")
        self.state_on_tmpfs = os.environ.get(PRIVATE_MOUNTS) == "1"
        try:
            os.mkdir(self.state)
            if self.state_on_tmpfs:
                subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "corral-bench",
                                self.state], check=True, capture_output=True, text=True)
            self.rootfs = build_rootfs(os.path.join(self.dir, "rootfs"))
            self.bundles = os.path.join(self.dir, "bundles")
            os.mkdir(self.bundles)
            self._make_cgroup_parent()
        except BaseException:
            self.remove_cgroups()
            self.close()
            raise
        self.namespaces = [ns["type"] for ns in default_spec()["linux"]["namespaces"]]

    def cgroup_parents(self) -> list[str]:
        """Our parent's directory in every hierarchy."""
        return [os.path.join(h, self.parent) for h in hierarchies()]

    def _make_cgroup_parent(self) -> None:
        for path in self.cgroup_parents():
            os.mkdir(path)
            if is_v1_cpuset(path):
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(os.path.dirname(path), name)) as f:
                        value = f.read()
                    with open(os.path.join(path, name), "w") as f:
                        f.write(value)

    def bundle(self, name: str) -> str:
        """A bundle running /bin/true in cgroup ``<parent>/<name>`` (made once, reused)."""
        path = os.path.join(self.bundles, name)
        if not os.path.isdir(path):
            os.mkdir(path)
            config = default_spec()
            config["root"]["path"] = self.rootfs  # shared: the runtimes only mount over it
            config["process"].update(terminal=False, args=["/bin/true"])
            config["linux"]["cgroupsPath"] = f"/{self.parent}/{name}"
            with open(os.path.join(path, "config.json"), "w") as f:
                json.dump(config, f)
        return path

    def compile(self, name: str) -> str:
        """bench/<name>.c compiled into the workspace; BenchError with cc's message."""
        out = os.path.join(self.dir, name)
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise BenchError("no C compiler (cc) found: apt-get install gcc libc6-dev")
        proc = subprocess.run([cc, "-O2", "-o", out, os.path.join(HERE, f"{name}.c")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"cc bench/{name}.c failed: {proc.stderr.strip()}")
        return out

    # -- clean-up ---------------------------------------------------------------------------

    def cgroup_leaves(self) -> list[str]:
        """Every cgroup below our parent, deepest first, in every hierarchy."""
        found = []
        for base in self.cgroup_parents():
            for dirpath, _dirs, _files in os.walk(base):
                if dirpath != base:
                    found.append(dirpath)
        return sorted(found, key=lambda p: -p.count("/"))

    def _kill_cgroup_members(self) -> set[int]:
        """SIGKILL whatever still runs in our cgroups (only what our runs started lands there)."""
        killed = set()
        for leaf in self.cgroup_leaves():
            try:
                with open(os.path.join(leaf, "cgroup.procs")) as f:
                    pids = {int(p) for p in f.read().split()}
            except OSError:
                continue
            for pid in pids - killed:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
        return killed

    def remove_cgroups(self, timeout: float = 5.0) -> tuple[list[str], list[int]]:
        """Kill what runs in our cgroups, rmdir every leaf and the parent, until none is left.
        Returns the leaves that were there and the pids killed (both empty after a clean run).
        """
        leftovers: set[str] = set()
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            leaves = self.cgroup_leaves()
            parents = [p for p in self.cgroup_parents() if os.path.isdir(p)]
            if not parents:
                return sorted(leftovers), sorted(killed)
            leftovers.update(leaves)
            killed |= self._kill_cgroup_members()
            reap_orphans()
            for path in leaves + parents:
                try:
                    os.rmdir(path)
                except OSError:  # busy for a moment after its last task died, or not empty
                    pass
            if time.monotonic() > deadline:
                print(f"bench: could not remove cgroups {leaves + parents}", file=sys.stderr)
                return sorted(leftovers), sorted(killed)
            time.sleep(0.01)

    def close(self) -> None:
        if self.state_on_tmpfs:
            subprocess.run(["umount", "-l", self.state], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def reap_orphans() -> None:
    """Reap exited processes reparented to us (we are a subreaper); never blocks."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
