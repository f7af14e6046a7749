"""A short demo: a few containers on a busybox rootfs through the `corral` command line,
with their output and exit codes.  Run as root: `.venv/bin/python examples/demo.py`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile

from corral import nsenter
from corral.images import build_rootfs
from corral.oci.spec import default_spec

CORRAL = os.path.join(os.path.dirname(sys.executable), "corral")

JOBS = [
    ("hello", ["echo", "hello from a container"], {}),
    ("hostname", ["sh", "-c", "echo I am $(hostname), pid $$; exit 3"], {"hostname": "demo-box"}),
    ("user", ["id"], {"user": {"uid": 1000, "gid": 1000, "additionalGids": [10]}}),
    ("readonly", ["sh", "-c", "touch /etc/x"], {}),
    ("missing", ["no-such-program"], {}),
]


def bundle(workdir: str, rootfs: str, name: str, args: list[str], extra: dict) -> str:
    path = os.path.join(workdir, name)
    os.mkdir(path)
    config = default_spec()
    config["root"]["path"] = rootfs
    config["process"].update(terminal=False, args=args)
    if "user" in extra:
        config["process"]["user"] = extra["user"]
    if "hostname" in extra:
        config["hostname"] = extra["hostname"]
    config["linux"]["cgroupsPath"] = f"/corral-demo/{name}"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def main() -> int:
    # A detached container's init is reparented to us when `corral create` exits, as it
    # is to conmon or the containerd shim; we reap it like they do.
    nsenter.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    with tempfile.TemporaryDirectory(prefix="corral-demo-") as workdir:
        rootfs = build_rootfs(os.path.join(workdir, "rootfs"))
        root = os.path.join(workdir, "state")
        for name, args, extra in JOBS:
            path = bundle(workdir, rootfs, name, args, extra)
            proc = subprocess.run([CORRAL, "--root", root, "run", "-b", path, f"demo-{name}"],
                                  capture_output=True, text=True)
            print(f"$ {shlex.join(args)}")
            for line in (proc.stdout + proc.stderr).splitlines():
                print(f"    {line}")
            print(f"    -> exit code {proc.returncode}\n")
        # A detached container through its whole lifecycle.
        path = bundle(workdir, rootfs, "lifecycle", ["sleep", "60"], {})
        cid = "demo-lifecycle"
        pid_file = os.path.join(workdir, "lifecycle.pid")
        subprocess.run([CORRAL, "--root", root, "create", "-b", path, "--pid-file", pid_file,
                        cid], check=True, stdout=subprocess.DEVNULL)
        for step in (["state", cid], ["start", cid], ["list"], ["kill", cid, "KILL"],
                     ["delete", "--force", cid]):
            out = subprocess.run([CORRAL, "--root", root, *step], capture_output=True,
                                 text=True)
            print(f"$ corral {' '.join(step)}  (exit {out.returncode})")
            for line in out.stdout.splitlines():
                print(f"    {line}")
        with open(pid_file) as f:
            os.waitpid(int(f.read()), 0)
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            parent = os.path.join("/sys/fs/cgroup", hierarchy, "corral-demo")
            if os.path.isdir(parent):
                os.rmdir(parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
