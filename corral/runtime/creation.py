"""The parent side of container creation as a sans-I/O state machine.

It takes what the child sent and answers with the actions to take next; it does no I/O itself,
so one machine serves the blocking driver of the command line (``blocking.py``) and the trio
driver of the supervisor (``trio_driver.py``), and is tested without any process.

    START --start(child)--> [AWAIT_USERMAP_REQUEST] --> AWAIT_PID --> [AWAIT_HOOKS]
          --> AWAIT_READY --> AWAIT_WAITING --> DONE

AWAIT_USERMAP_REQUEST only with a new user namespace, AWAIT_HOOKS only when the bootstrap
says there are create-time hooks (``Bootstrap.create_hooks``).

For ``corral exec`` (``Bootstrap.exec``) the same states without the optional ones:

    START --start(child)--> AWAIT_PID --> AWAIT_READY --> AWAIT_WAITING --> DONE

and fewer actions: Pid only joins the cgroup (the container's pid record is the init's),
Ready only sends Run (the container's resources are already set).

Each state names the one message it accepts; an ``Error`` from the child fails any state;
anything else is a ``ProtocolError``.  Once DONE or FAILED the machine accepts nothing more.
"""

from __future__ import annotations

from corral.record import Record

from corral.errors import ChildError, CorralError, ProtocolError
from corral.runtime import protocol as p


class State:
    """The machine's states; each value says what the machine waits for, for messages."""

    START = "start"
    AWAIT_USERMAP_REQUEST = "waiting for the user namespace"
    AWAIT_PID = "waiting for the init pid"
    AWAIT_HOOKS = "waiting for the hooks moment"
    AWAIT_READY = "waiting for the container setup"
    AWAIT_WAITING = "waiting for the final process setup"
    DONE = "done"
    FAILED = "failed"


# ---- actions: what the driver must do, in order ---------------------------------------------


class Send(Record):
    message: p.Message


class JoinCgroup(Record):
    """Put the init in the container's cgroup.  Done while the init sets up its rootfs (the
    first migration of a process on a cgroup v1 host waits for an RCU grace period, ~10 ms);
    the init unshares its cgroup namespace only after Run, once it is in its cgroup."""

    pid: int


class WriteIdMaps(Record):
    pid: int


class RecordPid(Record):
    pid: int


class RunCreateRuntimeHooks(Record):
    """Run the prestart, then the createRuntime hooks (state: creating, this pid); a failure
    fails creation."""

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
    def __init__(self, bootstrap: p.Bootstrap) -> None:
        self.bootstrap = bootstrap
        self.state = State.START
        self.child_pid: int | None = None
        self.init_pid: int | None = None
        self.error: CorralError | None = None

    @property
    def finished(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def start(self, child_pid: int) -> list[Action]:
        """The child process exists (forked by the driver or by the keeper)."""
        if self.state is not State.START:
            return self._fail(ProtocolError(f"start() while {self.state}"))
        self.child_pid = child_pid
        self.state = (State.AWAIT_USERMAP_REQUEST
                      if self.bootstrap.new_user and not self.bootstrap.exec
                      else State.AWAIT_PID)
        return [Send(self.bootstrap)]

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

    def _on_usermap_request(self, msg: p.UsermapRequest) -> list[Action]:
        self.state = State.AWAIT_PID
        return [WriteIdMaps(msg.pid), Send(p.UsermapDone())]

    def _on_pid(self, msg: p.Pid) -> list[Action]:
        self.init_pid = msg.pid
        if self.bootstrap.exec:
            self.state = State.AWAIT_READY
            return [JoinCgroup(msg.pid)]
        self.state = State.AWAIT_HOOKS if self.bootstrap.create_hooks else State.AWAIT_READY
        return [RecordPid(msg.pid), JoinCgroup(msg.pid)]

    def _on_hooks_due(self, msg: p.HooksDue) -> list[Action]:
        self.state = State.AWAIT_READY
        return [RunCreateRuntimeHooks(self.init_pid), Send(p.HooksDone(self.init_pid))]

    def _on_ready(self, msg: p.Ready) -> list[Action]:
        self.state = State.AWAIT_WAITING
        if self.bootstrap.exec:
            return [Send(p.Run(self.init_pid))]
        return [ApplyResources(self.init_pid), Send(p.Run(self.init_pid))]

    def _on_waiting(self, msg: p.Waiting) -> list[Action]:
        self.state = State.DONE
        return [Done(self.init_pid)]

    _HANDLERS = {
        State.AWAIT_USERMAP_REQUEST: (p.UsermapRequest, _on_usermap_request),
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
