"""The parent side of container creation as a sans-I/O state machine.

It takes what the child sent and answers with the actions to take next; it does no I/O itself,
so one machine serves the blocking driver of the command line (``blocking.py``) and the trio
driver of the supervisor (``trio_driver.py``), and is tested without any process.

    START --start(launcher)--> AWAIT_PID --> [AWAIT_HOOKS] --> AWAIT_READY --> AWAIT_WAITING
          --> DONE

AWAIT_HOOKS only when the plan has create-time hooks (``PlanInfo.create_hooks``).  For
``corral exec`` (``PlanInfo.exec``) the same states without it, and fewer actions: Pid only
joins the cgroup (the container's pid record is the init's), Ready only sends Run.

Each state names the one message it accepts; an ``Error`` from the child fails any state;
anything else is a ``ProtocolError``.  Once DONE or FAILED the machine accepts nothing more.
"""

from __future__ import annotations

from corral import jsonlite as json
from corral.errors import ChildError, CorralError, ProtocolError
from corral.oci.state import hook_state
from corral.record import Record, factory
from corral.runtime import protocol as p

TYPE_CHECKING = False
if TYPE_CHECKING:
    from corral.plan.compiler import PlanInfo


class State:
    """The machine's states; each value says what the machine waits for, for messages."""

    START = "start"
    AWAIT_PID = "waiting for the init pid"
    AWAIT_HOOKS = "waiting for the hooks moment"
    AWAIT_READY = "waiting for the container setup"
    AWAIT_WAITING = "waiting for the final process setup"
    DONE = "done"
    FAILED = "failed"


class ContainerState(Record):
    """What the OCI state JSON of hooks and the seccomp agent says besides status and pid."""

    oci_version: str
    id: str
    bundle: str
    annotations: dict = factory(dict)

    def json(self, status: str, pid: int) -> bytes:
        return hook_state(self.oci_version, self.id, self.bundle, status, pid, self.annotations)


# ---- actions: what the driver must do, in order ---------------------------------------------


class Send(Record):
    message: p.Message


class JoinCgroup(Record):
    """Put the process in the container's cgroup, when the plan's launcher does not
    (``PlanInfo.joins_cgroup``): an exec that must join a frozen cgroup late."""

    pid: int


class WriteIdMaps(Record):
    pid: int


class RecordPid(Record):
    pid: int


class RunCreateRuntimeHooks(Record):
    """Run the prestart, then the createRuntime hooks (this pid); a failure fails creation."""

    pid: int


class ApplyResources(Record):
    pid: int


class Done(Record):
    pid: int


class Fail(Record):
    error: CorralError


Action = (Send | JoinCgroup | WriteIdMaps | RecordPid | RunCreateRuntimeHooks | ApplyResources
          | Done | Fail)


class CreationMachine:
    def __init__(self, plan: p.Plan, info: PlanInfo, state: ContainerState) -> None:
        self.plan = plan
        self.info = info
        self.container = state
        self.state = State.START
        self.child_pid: int | None = None
        self.init_pid: int | None = None
        self.error: CorralError | None = None

    @property
    def finished(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def start(self, child_pid: int) -> list[Action]:
        """The launcher exists (spawned by the driver or by the keeper)."""
        if self.state is not State.START:
            return self._fail(ProtocolError(f"start() while {self.state}"))
        self.child_pid = child_pid
        self.state = State.AWAIT_PID
        return [Send(self.plan)]

    def receive(self, msg: p.Message) -> list[Action]:
        if self.finished or self.state is State.START:
            return self._fail(ProtocolError(f"unexpected {msg.type!r} message while "
                                            f"{self.state}"))
        if isinstance(msg, p.Error):
            return self._fail(ChildError(msg.message, msg.errno, msg.stage))
        handler = self._HANDLERS[self.state]
        if not isinstance(msg, handler[0]):
            return self._fail(ProtocolError(
                f"unexpected {msg.type!r} message while {self.state}"))
        return handler[1](self, msg)

    def child_gone(self) -> list[Action]:
        """The connection closed (EOF) or the child died before DONE."""
        if self.state is State.DONE or self.state is State.FAILED:
            return []
        return self._fail(ProtocolError(f"container process exited while {self.state}"))

    def fail(self, error: CorralError) -> list[Action]:
        """The driver could not carry out an action (or its deadline passed)."""
        if self.finished:
            return []
        return self._fail(error)

    # ---- one handler per state ----

    def _on_pid(self, msg: p.Pid) -> list[Action]:
        self.init_pid = msg.pid
        # the launcher joins the init to its cgroup itself when the plan says so
        join = [] if self.info.joins_cgroup else [JoinCgroup(msg.pid)]
        if self.info.exec:
            self.state = State.AWAIT_READY
            return join
        self.state = State.AWAIT_HOOKS if self.info.create_hooks else State.AWAIT_READY
        if self.info.new_user:
            # the init waits for its maps: they come first, the rest while it works
            return [WriteIdMaps(msg.pid), Send(p.UsermapDone()), RecordPid(msg.pid), *join]
        return [RecordPid(msg.pid), *join]

    def _on_hooks_due(self, msg: p.HooksDue) -> list[Action]:
        self.state = State.AWAIT_READY
        return [RunCreateRuntimeHooks(self.init_pid),
                Send(p.HooksDone(self.container.json("created", self.init_pid)))]

    def _on_ready(self, msg: p.Ready) -> list[Action]:
        self.state = State.AWAIT_WAITING
        run = self._run()
        if self.info.exec:
            return [Send(run)]
        return [ApplyResources(self.init_pid), Send(run)]

    def _run(self) -> p.Run:
        pid = self.init_pid
        state = self.container.json("created", pid) if self.info.start_hooks else b""
        listener = b""
        if self.info.listener:
            # "running" as crun sends it: the agent gets it once `start` let the process go
            doc = {"ociVersion": self.container.oci_version, "fds": ["seccompFd"], "pid": pid}
            if self.info.listener_metadata:
                doc["metadata"] = self.info.listener_metadata
            doc["state"] = json.loads(self.container.json("running", pid))
            listener = json.dumps(doc, separators=(",", ":")).encode()
        return p.Run(state, listener)

    def _on_waiting(self, msg: p.Waiting) -> list[Action]:
        self.state = State.DONE
        return [Done(self.init_pid)]

    _HANDLERS = {
        State.AWAIT_PID: (p.Pid, _on_pid),
        State.AWAIT_HOOKS: (p.HooksDue, _on_hooks_due),
        State.AWAIT_READY: (p.Ready, _on_ready),
        State.AWAIT_WAITING: (p.Waiting, _on_waiting),
    }

    def _fail(self, error: CorralError) -> list[Action]:
        if self.state is not State.FAILED:
            self.state = State.FAILED
            self.error = error
        return [Fail(self.error)]
