"""A tiny busybox-static rootfs: for the demo, the examples and the tests.

``build_rootfs(dest)`` makes one in a few milliseconds: the static busybox binary, a symlink
per applet in /bin, a minimal /etc/passwd and /etc/group, and the usual empty directories.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

BUSYBOX = "/usr/bin/busybox"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"
EMPTY_DIRS = ("proc", "sys", "dev", "tmp", "etc", "root", "home", "bin")


@functools.lru_cache(maxsize=1)
def applets() -> tuple[str, ...]:
    """The applet names of the host's busybox (asked once per process)."""
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    return tuple(name for name in out.stdout.split() if name and name != "busybox")


def build_rootfs(dest: str) -> str:
    """Create a busybox rootfs in ``dest`` (created if missing) and return ``dest``."""
    os.makedirs(dest, exist_ok=True)
    for name in EMPTY_DIRS:
        os.makedirs(os.path.join(dest, name), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    for name in applets():
        link = os.path.join(dest, "bin", name)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write(GROUP)
    return dest
