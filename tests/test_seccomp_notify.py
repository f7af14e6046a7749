"""SCMP_ACT_NOTIFY: the notify fd and the containerProcessState go to the agent listening at
linux.seccomp.listenerPath (runtime-spec config-linux.md#seccomp); the agent answers."""

import ctypes
import errno
import json
import os
import select
import socket
import struct
import threading

import pytest

from corral.errors import ConfigError
from corral.oci.config import parse_config

# <linux/seccomp.h>
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
NOTIF = struct.Struct("=QII" "iIQ6Q")  # struct seccomp_notif (id, pid, flags, seccomp_data)
NOTIF_RESP = struct.Struct("=QqiI")  # struct seccomp_notif_resp (id, val, error, flags)


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("!") << 8) | nr


SECCOMP_IOCTL_NOTIF_RECV = _iowr(0, NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = _iowr(1, NOTIF_RESP.size)
NR_MKDIR, NR_MKDIRAT = 83, 258  # x86_64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def notif_sizes() -> tuple[int, int]:
    sizes = (ctypes.c_uint16 * 3)()
    if _libc.syscall(317, SECCOMP_GET_NOTIF_SIZES, 0, sizes) < 0:  # SYS_seccomp
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_GET_NOTIF_SIZES)")
    return sizes[0], sizes[1]


class Agent(threading.Thread):
    """A seccomp agent: receives the containerProcessState and the notify fd, then answers
    mkdir/mkdirat with `error` and lets every other notified syscall continue."""

    def __init__(self, path: str, error: int) -> None:
        super().__init__(daemon=True)
        self.error = error
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.stop = threading.Event()
        self.message = b""
        self.fds: list[int] = []
        self.notified: list[tuple[int, int]] = []  # (pid, syscall nr)
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc
        finally:
            for fd in self.fds:
                os.close(fd)
            self.server.close()

    def _serve(self) -> None:
        while not select.select([self.server], [], [], 0.1)[0]:
            if self.stop.is_set():
                return
        conn, _ = self.server.accept()
        with conn:
            while True:
                data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
                self.fds.extend(fds)
                if not data:
                    break
                self.message += data
        if len(self.fds) != 1:
            raise AssertionError(f"expected one fd, got {self.fds}")
        notify_fd = self.fds[0]
        size, resp_size = notif_sizes()
        buf = ctypes.create_string_buffer(max(size, NOTIF.size))
        resp = ctypes.create_string_buffer(max(resp_size, NOTIF_RESP.size))
        poller = select.poll()
        poller.register(notify_fd, select.POLLIN)
        while not self.stop.is_set():
            events = poller.poll(100)
            if not events:
                continue
            if events[0][1] & select.POLLHUP:  # every filtered process is gone
                return
            ctypes.memset(buf, 0, len(buf))
            if _libc.ioctl(notify_fd, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_RECV), buf) < 0:
                if ctypes.get_errno() in (errno.EINTR, errno.ENOENT):
                    continue
                raise OSError(ctypes.get_errno(), "SECCOMP_IOCTL_NOTIF_RECV")
            notif_id, pid, _flags, nr, *_ = NOTIF.unpack_from(buf)
            self.notified.append((pid, nr))
            if nr in (NR_MKDIR, NR_MKDIRAT):
                NOTIF_RESP.pack_into(resp, 0, notif_id, 0, -self.error, 0)
            else:
                NOTIF_RESP.pack_into(resp, 0, notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            if _libc.ioctl(notify_fd, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_SEND), resp) < 0:
                if ctypes.get_errno() != errno.ENOENT:  # the task died meanwhile
                    raise OSError(ctypes.get_errno(), "SECCOMP_IOCTL_NOTIF_SEND")

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        assert not self.is_alive()
        if self.failure is not None:
            raise self.failure


@pytest.fixture
def agent(tmp_path):
    started = []

    def start(error: int = errno.ENOSPC) -> Agent:
        a = Agent(str(tmp_path / "agent.sock"), error)
        a.start()
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop.set()
        a.join(10)


NOTIFY_MKDIR = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}


def profile(path, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(path),
            "syscalls": [NOTIFY_MKDIR], **extra}


@pytest.mark.parametrize("process", [
    {},
    # no no_new_privs: CAP_SYS_ADMIN kept for the load, dropped after the hand-over
    {"noNewPrivileges": False, "user": {"uid": 1000, "gid": 1000}},
], ids=["nnp", "no-nnp-user"])
def test_agent_answers_mkdir(corral, make_bundle, agent, tmp_path, process):
    a = agent(errno.ENOSPC)
    b = make_bundle()
    b.config["process"]["args"] = [
        "sh", "-c", "mkdir /tmp/x; echo rc=$?; touch /tmp/y && ls /tmp; exec mkdir /tmp/z"]
    b.config["process"].update(process)
    b.config["linux"]["seccomp"] = profile(tmp_path / "agent.sock",
                                           listenerMetadata="hello agent")
    b.write()
    proc = corral("run", "-b", b.path, b.id, check=False)
    a.finish()
    assert proc.stderr.count("No space left on device") == 2, proc.stderr
    assert proc.stdout.split() == ["rc=1", "y"]
    assert proc.returncode == 1
    doc = json.loads(a.message)
    assert doc["ociVersion"] == b.config["ociVersion"]
    assert doc["fds"] == ["seccompFd"]
    assert doc["metadata"] == "hello agent"
    state = doc["state"]
    assert (state["id"], state["status"], state["bundle"]) == (b.id, "running", b.path)
    assert state["pid"] == doc["pid"] > 0
    # the last mkdir is the exec'd one: the container's process itself, by its host pid
    assert a.notified[-1] == (doc["pid"], NR_MKDIR)
    assert len(a.notified) == 2 and a.notified[0][0] != doc["pid"]


def test_state_arrives_after_start(corral, make_bundle, agent, tmp_path):
    """create connects to the agent (so it fails when there is none); the notify fd and the
    state are sent only when the process is let go, and carry the pid `state` reports."""
    a = agent(errno.EROFS)
    b = make_bundle(["mkdir", "/x"])
    b.config["linux"]["seccomp"] = profile(tmp_path / "agent.sock")
    b.write()
    corral("create", "-b", b.path, b.id)
    pid = corral.state(b.id)["pid"]
    assert a.message == b"" and a.is_alive()
    corral("start", b.id)
    a.join(10)
    a.finish()
    doc = json.loads(a.message)
    assert doc["pid"] == pid and "metadata" not in doc
    assert a.notified == [(pid, NR_MKDIR)]
    corral("delete", b.id)


@pytest.mark.parametrize("kind", ["missing", "refused"])
def test_no_listener_fails_create_cleanly(corral, make_bundle, tmp_path, kind):
    path = tmp_path / "agent.sock"
    if kind == "refused":  # bound, not listening
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
    b = make_bundle()
    b.config["linux"]["seccomp"] = profile(path)
    b.write()
    proc = corral("create", "-b", b.path, b.id, check=False)
    if kind == "refused":
        sock.close()
    assert proc.returncode == 1
    reason = "no such file or directory" if kind == "missing" else "connection refused"
    assert (f"corral: linux.seccomp.listenerPath: connect to the seccomp agent at {path}: "
            f"{reason}") in proc.stderr, proc.stderr
    assert not os.path.exists(os.path.join(corral.root, b.id))


def _config(seccomp: dict) -> dict:
    return {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/"}, "linux": {"seccomp": seccomp}}


@pytest.mark.parametrize(("seccomp", "field", "text"), [
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}, NOTIFY_MKDIR]},
     "linux.seccomp.listenerPath",
     "is required by SCMP_ACT_NOTIFY (linux.seccomp.syscalls[1].action)"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/a.sock"},
     "linux.seccomp.defaultAction", "cannot be the default action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock", "syscalls": [
        {"names": ["close", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].names", "cannot apply to sendmsg"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": ""},
     "linux.seccomp.listenerPath", "must not be empty"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a", "listenerMetadata": 3},
     "linux.seccomp.listenerMetadata", ""),
])
def test_notify_config_errors_name_the_field(seccomp, field, text):
    with pytest.raises(ConfigError) as exc:
        parse_config(_config(seccomp))
    assert exc.value.field == field and text in str(exc.value)


def test_notify_config_parsed():
    parsed = parse_config(_config(profile("/run/a.sock", listenerMetadata="m"))).linux.seccomp
    assert (parsed.listener_path, parsed.listener_metadata, parsed.notifies) == (
        "/run/a.sock", "m", True)
    # a listener without NOTIFY rules is accepted (runc too) and never connected to
    plain = parse_config(_config({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a"}))
    assert not plain.linux.seccomp.notifies
