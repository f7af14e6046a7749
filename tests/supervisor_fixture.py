"""A `corral supervise` daemon on a private root for tests, and a small blocking client of
its socket (the real clients are corral.Client; this one stays independent of them)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

from tests.conftest import CGROUP_PARENT, CORRAL, base_config, read_line


class ApiError(Exception):
    def __init__(self, error: dict) -> None:
        self.type = error["type"]
        super().__init__(f"{error['type']}: {error['message']}")


class Client:
    """One connection; requests in order (``send`` + ``reply`` for pipelining)."""

    def __init__(self, path: str, timeout: float = 60) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.hello = json.loads(self.file.readline())
        self._next = 0
        self._early: dict = {}

    def send(self, method: str, **params) -> int:
        self._next += 1
        self.file.write(json.dumps({"id": self._next, "method": method,
                                    "params": params}).encode() + b"\n")
        self.file.flush()
        return self._next

    def message(self) -> dict:
        line = self.file.readline()
        if not line:
            raise EOFError("the daemon closed the connection")
        return json.loads(line)

    def reply(self, rid: int | None = None, items: list | None = None):
        """The answer to request ``rid`` (answers come in any order: others are kept)."""
        while True:
            msg = self._early.pop(rid, None) if rid is not None else None
            if msg is None:
                msg = self.message()
            if "stream" in msg:
                if items is not None and msg.get("id") == rid:
                    items.append(msg["stream"])
                continue
            if rid is not None and msg.get("id") != rid:
                self._early[msg.get("id")] = msg
                continue
            if "error" in msg:
                raise ApiError(msg["error"])
            return msg["result"]

    def call(self, method: str, **params):
        return self.reply(self.send(method, **params))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Daemon:
    """``netns``: a network namespace path (``/proc/<pid>/fd/<n>``) to run the daemon in,
    so that its bridges live there and never in the host's namespace."""

    def __init__(self, root: str, *extra: str, netns: str | None = None,
                 cgroup_parent: str = CGROUP_PARENT) -> None:
        self.root = root
        self.cgroup_parent = cgroup_parent
        self.socket = os.path.join(root, "supervise.sock")
        self.extra = extra
        self.netns = netns
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(os.path.dirname(root), "daemon.log")

    def start(self) -> Daemon:
        prefix = ["nsenter", f"--net={self.netns}", "--"] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, *CORRAL, "--root", self.root, "--log", self.log, "supervise", "--cgroup-parent",
             self.cgroup_parent, *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(self.proc.stdout, time.monotonic() + 30)
        assert b"ready on" in line, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        return self

    def client(self) -> Client:
        return Client(self.socket)

    def keeper_pid(self) -> int:
        with open(self.log) as f:
            for line in reversed(f.read().splitlines()):
                if "keeper pid" in line:
                    return int(line.split("keeper pid ")[1].split(";")[0])
        raise AssertionError("no keeper pid in the daemon's log")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code

    def delete_all_and_stop(self) -> None:
        """Deletes every container through the API, then stops the daemon (if it runs)."""
        if self.proc.poll() is None:
            c = self.client()
            for state in c.call("list"):
                c.call("delete", id=state["id"], force=True)
            c.close()
            assert self.stop() == 0

    def config(self, rootfs: str, args: list[str], cid: str, **process) -> dict:
        """An inline config over a shared read-only rootfs (no bundle copy per container)."""
        config = base_config(args, cid)
        config["root"] = {"path": rootfs, "readonly": True}
        config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{cid}"
        config["process"].update(process)
        return config


def wait_gone(pid: int, timeout: float = 30) -> None:
    """Waits for a process we did not start (a keeper reparented to the test) to exit;
    reaps it if it became our child (pytest is a subreaper)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    time.sleep(0.05)
                    continue
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still there after {timeout} s")
