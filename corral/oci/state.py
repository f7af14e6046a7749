"""The on-disk state of containers under ``--root``: one directory per container.

Shared by the command line and the supervisor, so each sees the other's containers.
``<root>/<id>/state.json`` holds the record; ``<root>/<id>/exec.fifo`` exists from create until
start.  Cheap imports only: every CLI command reads this.
"""

from __future__ import annotations

from corral import jsonlite as json
import os
import time

from corral.errors import ConfigError, ContainerExists, ContainerNotFound

DEFAULT_ROOT = "/run/corral"


def default_root() -> str:
    """``/run/corral``; for a non-root caller (rootless) ``$XDG_RUNTIME_DIR/corral`` when
    that is set, as runc uses ``$XDG_RUNTIME_DIR/runc`` (``/run/user/<uid>/runc``)."""
    if os.geteuid() != 0:
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
        if runtime_dir:
            return os.path.join(runtime_dir, "corral")
    return DEFAULT_ROOT
STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def hook_state(oci_version: str, container_id: str, bundle: str, status: str, pid: int,
               annotations: dict | None = None) -> bytes:
    """The state JSON a hook reads on stdin (runtime-spec runtime.md#state), in runc's
    bytes: Go's compact encoding, a map's keys sorted."""
    state = {"ociVersion": oci_version, "id": container_id, "status": status, "pid": pid,
             "bundle": bundle}
    if annotations:
        state["annotations"] = dict(sorted(annotations.items()))
    return json.go_dumps(state).encode()


def validate_id(container_id: str) -> str:
    if not container_id:
        raise ConfigError("container id", "must not be empty")
    if container_id == ".supervisor":  # corral supervise's own files in the state root
        raise ConfigError("container id", "'.supervisor' is reserved for corral supervise")
    if container_id in (".", "..") or not set(container_id) <= _ID_CHARS:
        raise ConfigError("container id",
                          f"invalid id {container_id!r}: use only [A-Za-z0-9_.-]")
    if len(container_id) > 1024:
        raise ConfigError("container id", "longer than 1024 characters")
    return container_id


def write_atomically(path: str, data: bytes, durable: bool = False) -> None:
    """``path`` replaced by ``data`` whole or not at all (a full filesystem: the error names
    ``path``, and no temporary file is left)."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OSError(exc.errno, exc.strerror, exc.filename or path) from None


def rfc3339_now() -> str:
    """Go's time.RFC3339Nano in UTC, as runc's state shows it: trailing zeros trimmed."""
    ns = time.time_ns()
    fraction = f"{ns % 10**9:09d}".rstrip("0")
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9))
            + (f".{fraction}" if fraction else "") + "Z")


class StateDir:
    def __init__(self, root: str, container_id: str) -> None:
        self.root = root
        self.id = container_id
        self.path = os.path.join(root, container_id)
        self.state_file = os.path.join(self.path, STATE_FILE)
        self.fifo = os.path.join(self.path, FIFO_NAME)

    def create(self) -> None:
        """Claims the id: exclusive, so two creates of one id never both succeed."""
        os.makedirs(self.root, 0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            raise ContainerExists(self.id) from None

    def make_fifo(self) -> None:
        """Writable by anyone (chmod: the umask would take that away): init opens it for
        writing after it has become the container's user."""
        os.mkfifo(self.fifo, 0o622)
        os.chmod(self.fifo, 0o622)

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def read(self) -> dict:
        try:
            with open(self.state_file, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise ContainerNotFound(self.id) from None
        except ValueError:
            raise ContainerNotFound(self.id) from None

    def write(self, record: dict, durable: bool = False) -> None:
        """Atomic (rename): a reader never sees half a record, and a crash of the writer
        leaves the old one.  ``durable`` also survives a crash of the machine; records of a
        container being created need not (its processes die with the machine too, and
        ``/run`` is a tmpfs on most hosts), exit statuses do."""
        write_atomically(self.state_file, json.dumps(record).encode(), durable)

    def try_remove(self, names) -> bool:
        """The state dir when it holds only files among ``names`` (a container that
        logged nothing): an unlink each and one rmdir, no listing.  False when it holds
        more (``remove`` does the rest)."""
        for name in names:
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def remove(self) -> None:
        """Retried: a supervisor's keeper may still be writing a container's last log
        lines or its exit status here while the command line deletes it."""
        for attempt in range(50):
            try:
                names = os.listdir(self.path)
            except FileNotFoundError:
                return
            for name in names:
                try:
                    os.unlink(os.path.join(self.path, name))
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != 39 or attempt == 49:  # ENOTEMPTY
                    raise
                time.sleep(0.01)


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, STATE_FILE)))
    except FileNotFoundError:
        return []
