"""One log line as runc writes it: JSON (what containerd parses) or logfmt-like text.

Shared by the command line's ``--log`` and the daemon's log; cheap imports only."""

from __future__ import annotations

import time

from corral import jsonlite as json


def log_line(level: str, msg: str, fmt: str) -> bytes:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if fmt == "json":
        line = json.go_dumps({"level": level, "msg": msg, "time": now})  # logrus' order
    else:
        line = f'time="{now}" level={level} msg={json.dumps(msg)}'
    return (line + "\n").encode()
