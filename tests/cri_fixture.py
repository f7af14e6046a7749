"""crictl against a private containerd (config, sockets, root and state in one directory)
with corral as its CRI runtime handler ``corral``, and the images its pods run, built here
from the busybox rootfs as docker archives: shared by the CRI tests of both cgroup drivers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time

import pytest

from corral.images import build_rootfs
from tests.conftest import run_capturing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_crictl() -> str | None:
    for candidate in (os.environ.get("CRICTL"), shutil.which("crictl"),
                      os.path.join(os.path.dirname(REPO), "shared", "tools", "crictl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


CRICTL = _find_crictl()
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
PAUSE_IMAGE = "localhost/corral-pause:1"
IMAGE = "localhost/corral-bbx:1"
MIB = 1024 * 1024

SKIP_UNLESS_CRI = [
    pytest.mark.skipif(
        shutil.which("containerd") is None or shutil.which("ctr") is None
        or shutil.which("containerd-shim-runc-v2") is None,
        reason="containerd is not installed (scripts/setup.sh --test installs it)"),
    pytest.mark.skipif(CRICTL is None, reason="no crictl ($CRICTL, PATH or ../shared/tools)"),
]

# No CAP_SYS_RESOURCE on these hosts: restrict_oom_score_adj keeps the sandbox's -998 within
# what containerd itself may set.  default_runtime_name is corral too, so nothing falls back
# to runc unnoticed.
def private_containerd_config(workdir: str, top: str = "") -> str:
    """A containerd of its own: root, state and every socket under ``workdir``, metrics off;
    ``top`` holds more top-level keys (before the tables)."""
    return f"""\
version = 2
root = "{workdir}/root"
state = "{workdir}/state"
{top}[grpc]
  address = "{workdir}/containerd.sock"
[ttrpc]
  address = "{workdir}/containerd.sock.ttrpc"
[debug]
  address = "{workdir}/debug.sock"
[metrics]
  address = ""
"""


_CRI_PLUGIN = """\
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{w}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "corral"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.corral]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.corral.options]
        BinaryName = "{corral}"
        Root = "{w}/runc"
        SystemdCgroup = {systemd}
"""


def write_image_archive(path: str, rootfs: str, tag: str, entrypoint: list[str] | None,
                        cmd: list[str] | None) -> None:
    """A docker-archive (manifest.json, config.json, one layer.tar) of ``rootfs``: what
    `docker save` writes and `ctr images import` reads, made without any registry."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer_tar:
        layer_tar.add(rootfs, arcname=".")
    layer = layer_buf.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Entrypoint": entrypoint,
                   "Cmd": cmd},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as archive:
        for name, data in (("layer.tar", layer), ("config.json", config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def containerd_config(workdir: str, corral: str, systemd_cgroup: bool = False) -> str:
    """containerd's config.toml: everything under ``workdir``, the runtime handler
    ``corral`` (runc v2 shim, ``BinaryName`` = ``corral``) with the cgroup driver given."""
    return private_containerd_config(workdir) + _CRI_PLUGIN.format(
        w=workdir, pause=PAUSE_IMAGE, corral=corral, cni_bin=CNI_BIN,
        systemd="true" if systemd_cgroup else "false")


def write_images(workdir: str) -> list[str]:
    """The sandbox ("pause") and workload images, as archives in ``workdir`` (their names
    returned) for `ctr images import`: the busybox rootfs, no registry."""
    rootfs = build_rootfs(os.path.join(workdir, "rootfs"))
    write_image_archive(f"{workdir}/pause.tar", rootfs, PAUSE_IMAGE, ["/bin/sleep"], ["inf"])
    write_image_archive(f"{workdir}/bbx.tar", rootfs, IMAGE, None, ["/bin/sh"])
    shutil.rmtree(os.path.join(workdir, "rootfs"))
    return ["pause.tar", "bbx.tar"]


class Crictl:
    """crictl (and ctr) against a private containerd whose files are in ``workdir`` as
    crictl and containerd see it, ``host_workdir`` as this process does; ``run`` runs a
    command where they run."""

    def __init__(self, workdir: str, host_workdir: str, crictl: str) -> None:
        self.w = workdir
        self.host_w = host_workdir
        self.crictl = crictl
        self.pods = 0

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return run_capturing(argv, timeout=timeout, stdin=subprocess.DEVNULL)

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        sock = f"unix://{self.w}/containerd.sock"
        return self.run([self.crictl, "--config", f"{self.w}/crictl.yaml", "-r", sock,
                         "-i", sock, "-t", "60s", *args], timeout)

    def ok(self, *args: str, timeout: float = 90) -> str:
        proc = self(*args, timeout=timeout)
        assert proc.returncode == 0, (f"crictl {' '.join(args)} exited {proc.returncode}: "
                                      f"{proc.stderr.strip()}")
        return proc.stdout

    def inspect(self, kind: str, object_id: str) -> dict:
        return json.loads(self.ok(kind, "-o", "json", object_id))

    def ctr(self, *args: str) -> str:
        proc = self.run(["ctr", "--address", f"{self.w}/containerd.sock", "--namespace",
                         "k8s.io", *args], 90)
        assert proc.returncode == 0, f"ctr {' '.join(args)}: {proc.stderr.strip()}"
        return proc.stdout

    def write_json(self, name: str, data: dict) -> str:
        with open(os.path.join(self.host_w, name), "w") as f:
            json.dump(data, f)
        return os.path.join(self.w, name)

    def create(self, pod: str, pod_config: str, name: str, command: list[str],
               resources: dict | None = None) -> str:
        """A container with the pod's namespace options, as the kubelet gives each."""
        with open(os.path.join(self.host_w, os.path.relpath(pod_config, self.w))) as f:
            namespaces = json.load(f)["linux"]["security_context"]["namespace_options"]
        config = self.write_json(f"ctr-{name}.json", {
            "metadata": {"name": name}, "image": {"image": IMAGE}, "command": command,
            "log_path": f"{name}.log",
            "linux": {"resources": resources or {},
                      "security_context": {"namespace_options": namespaces}},
        })
        return self.ok("create", pod, config, pod_config).strip()

    def status(self, cid: str) -> dict:
        return self.inspect("inspect", cid)["status"]

    def wait_state(self, cid: str, state: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(cid)
            if status["state"] == state:
                return status
            assert time.monotonic() < deadline, f"{cid} still {status['state']}, not {state}"
            time.sleep(0.1)

    def wait_log(self, cid: str, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self.ok("logs", cid)
            if text in out:
                return out
            assert time.monotonic() < deadline, f"no {text!r} in the logs of {cid}: {out!r}"
            time.sleep(0.1)
