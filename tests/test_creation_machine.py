"""The sans-I/O creation machine and the protocol framing, with no process at all."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import jsonlite as json
from corral.errors import ChildError, ProtocolError
from corral.plan.compiler import PlanInfo
from corral.runtime import creation as c
from corral.runtime import protocol as p

PLAN = p.Plan(b"the plan's frame")
STATE = c.ContainerState("1.0.2", "box", "/b", {"a": "1"})


def machine(new_user=False, create_hooks=False, exec=False, start_hooks=False,
            listener=False):
    info = PlanInfo(new_user=new_user, create_hooks=create_hooks, exec=exec,
                    start_hooks=start_hooks, listener=listener,
                    listener_metadata="meta" if listener else None)
    return c.CreationMachine(PLAN, info, STATE)


def created(pid):
    return STATE.json("created", pid)


ALL_MESSAGES = [
    PLAN, p.UsermapDone(), p.Pid(42), p.HooksDue(), p.HooksDone(b"{}"), p.Ready(),
    p.Run(b"", b""), p.Waiting(), p.Error("boom", 2, "mount"),
]

# The one message each waiting state accepts, and where it leads (with create-time hooks).
HAPPY = {
    c.State.AWAIT_PID: (p.Pid(42), c.State.AWAIT_HOOKS),
    c.State.AWAIT_HOOKS: (p.HooksDue(), c.State.AWAIT_READY),
    c.State.AWAIT_READY: (p.Ready(), c.State.AWAIT_WAITING),
    c.State.AWAIT_WAITING: (p.Waiting(), c.State.DONE),
}


def machine_in(state):
    """Drives a fresh machine along the happy path until it is in `state`."""
    m = machine(new_user=True, create_hooks=True)
    if state is c.State.START:
        return m
    m.start(100)
    while m.state is not state:
        m.receive(HAPPY[m.state][0])
    return m


def test_happy_path_without_user_namespace():
    m = machine()
    assert m.start(100) == [c.Send(PLAN)]
    assert m.state is c.State.AWAIT_PID
    assert m.receive(p.Pid(42)) == [c.RecordPid(42), c.JoinCgroup(42)]
    assert m.state is c.State.AWAIT_READY  # no hooks: no HooksDue step
    assert m.receive(p.Ready()) == [c.ApplyResources(42), c.Send(p.Run(b"", b""))]
    assert m.receive(p.Waiting()) == [c.Done(42)]
    assert m.state is c.State.DONE and m.init_pid == 42


def test_create_hooks_sync_before_ready():
    m = machine(create_hooks=True)
    m.start(100)
    assert m.receive(p.Pid(42)) == [c.RecordPid(42), c.JoinCgroup(42)]
    assert m.state is c.State.AWAIT_HOOKS
    assert m.receive(p.HooksDue()) == [c.RunCreateRuntimeHooks(42),
                                       c.Send(p.HooksDone(STATE.json("created", 42)))]
    assert m.state is c.State.AWAIT_READY
    assert m.receive(p.Ready()) == [c.ApplyResources(42), c.Send(p.Run(b"", b""))]


def test_run_carries_the_states_of_start_hooks_and_the_seccomp_agent():
    m = machine(start_hooks=True, listener=True)
    m.start(100)
    m.receive(p.Pid(42))
    [_, send] = m.receive(p.Ready())
    assert send.message.state == created(42)
    agent = json.loads(send.message.listener)
    assert agent["pid"] == 42 and agent["fds"] == ["seccompFd"] and agent["metadata"] == "meta"
    assert agent["state"]["status"] == "running" and agent["state"]["annotations"] == {"a": "1"}


def test_without_create_hooks_hooks_due_is_a_protocol_error():
    m = machine()
    m.start(100)
    m.receive(p.Pid(42))
    [fail] = m.receive(p.HooksDue())
    assert isinstance(fail.error, ProtocolError) and "hooks_due" in str(fail.error)


def test_user_namespace_maps_come_first():
    """The init waits for its maps: they are written and UsermapDone sent before the rest."""
    m = machine(new_user=True)
    m.start(100)
    assert m.state is c.State.AWAIT_PID
    assert m.receive(p.Pid(101)) == [c.WriteIdMaps(101), c.Send(p.UsermapDone()),
                                     c.RecordPid(101), c.JoinCgroup(101)]
    assert m.state is c.State.AWAIT_READY


@pytest.mark.parametrize("state", list(HAPPY))
@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: m.type)
def test_every_message_in_every_waiting_state(state, msg):
    m = machine_in(state)
    actions = m.receive(msg)
    expected, next_state = HAPPY[state]
    if msg == expected:
        assert m.state is next_state
        assert not any(isinstance(a, c.Fail) for a in actions)
    elif isinstance(msg, p.Error):
        assert actions == [c.Fail(m.error)]
        assert isinstance(m.error, ChildError) and str(m.error) == "boom"
        assert m.error.errno == 2 and m.error.stage == "mount"
        assert m.state is c.State.FAILED
    else:
        assert m.state is c.State.FAILED
        assert isinstance(m.error, ProtocolError)
        assert msg.type in str(m.error) and state in str(m.error)


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: m.type)
def test_messages_before_start_and_after_the_end_are_protocol_errors(msg):
    m = machine()
    assert isinstance(m.receive(msg)[0].error, ProtocolError)
    done = machine_in(c.State.DONE)
    assert isinstance(done.receive(msg)[0].error, ProtocolError)


@pytest.mark.parametrize("state", [c.State.START, *HAPPY])
def test_child_gone_fails_every_unfinished_state(state):
    m = machine_in(state)
    if state is c.State.START:
        m.start(1)
    [fail] = m.child_gone()
    assert isinstance(fail.error, ProtocolError) and "exited" in str(fail.error)
    assert m.child_gone() == []  # already failed: nothing new to do


def test_child_gone_after_done_is_nothing():
    assert machine_in(c.State.DONE).child_gone() == []


def test_start_twice_is_a_protocol_error():
    m = machine()
    m.start(1)
    assert isinstance(m.start(1)[0].error, ProtocolError)


def test_driver_failure_fails_once():
    m = machine_in(c.State.AWAIT_READY)
    err = ChildError("deadline")
    assert m.fail(err) == [c.Fail(err)]
    assert m.fail(ChildError("again")) == []
    assert m.error is err


@pytest.mark.parametrize("msg", [m for m in ALL_MESSAGES if not isinstance(m, p.Plan)],
                         ids=lambda m: m.type)
def test_framing_round_trip(msg):
    data = p.encode(msg)
    dec = p.FrameDecoder()
    # Byte by byte: a frame split anywhere still decodes once.
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert out == [msg] and not dec.pending


def test_executor_encodings_match():
    """executor.c writes these frames: u32 length, u16 type, u16 0, typed arguments."""
    assert p.encode(p.Pid(5)) == (b"\x0d\x00\x00\x00\x10\x00\x00\x00"
                                  b"i\x05\x00\x00\x00\x00\x00\x00\x00")
    assert p.encode(p.Waiting()) == b"\x04\x00\x00\x00\x13\x00\x00\x00"
    assert p.encode(p.UsermapDone()) == b"\x04\x00\x00\x00\x02\x00\x00\x00"
    error = p.encode(p.Error("x", 1, "resolve"))
    assert error[4:6] == b"\x14\x00" and error.endswith(b"s\x01\x00\x00\x00x\x00")


@pytest.mark.parametrize("frame", [
    b"\x04\x00\x00\x00\x63\x00\x00\x00",  # unknown type
    b"\x05\x00\x00\x00\x10\x00\x00\x00z",  # a Pid with no pid
    b"\x0e\x00\x00\x00\x10\x00\x00\x00i\x05\x00\x00\x00\x00\x00\x00\x00i",
    b"\x06\x00\x00\x00\x14\x00\x00\x00i\x01",  # a truncated Error
])
def test_bad_frames_are_protocol_errors(frame):
    with pytest.raises(ProtocolError):
        p.FrameDecoder().feed(frame)


def test_oversized_frame_is_refused():
    with pytest.raises(ProtocolError):
        p.FrameDecoder().feed((p.MAX_FRAME + 1).to_bytes(4, "little") + b"\x10\x00\x00\x00")


@given(st.integers(0, 40), st.binary(max_size=64))
def test_decoder_only_raises_protocol_errors(msg_type, data):
    try:
        p.FrameDecoder().feed((4 + len(data)).to_bytes(4, "little")
                              + msg_type.to_bytes(2, "little") + b"\x00\x00" + data)
    except ProtocolError:
        pass


# ---- exec: a new process in an existing container ---------------------------------------

EXEC_HAPPY = {
    c.State.AWAIT_PID: (p.Pid(42), c.State.AWAIT_READY),
    c.State.AWAIT_READY: (p.Ready(), c.State.AWAIT_WAITING),
    c.State.AWAIT_WAITING: (p.Waiting(), c.State.DONE),
}


def exec_machine_in(state):
    m = machine(exec=True)
    if state is c.State.START:
        return m
    m.start(100)
    while m.state is not state:
        m.receive(EXEC_HAPPY[m.state][0])
    return m


def test_exec_happy_path_only_joins_the_cgroup_and_runs():
    m = machine(exec=True)
    assert m.start(100) == [c.Send(PLAN)]
    assert m.state is c.State.AWAIT_PID
    assert m.receive(p.Pid(42)) == [c.JoinCgroup(42)]  # no RecordPid: the init's record stays
    assert m.state is c.State.AWAIT_READY
    assert m.receive(p.Ready()) == [c.Send(p.Run(b"", b""))]  # no ApplyResources
    assert m.receive(p.Waiting()) == [c.Done(42)]
    assert m.state is c.State.DONE and m.init_pid == 42


def test_exec_never_asks_for_id_maps():
    """Joining the container's user namespace needs no maps: a new_user flag is ignored."""
    m = machine(exec=True, new_user=True)
    m.start(100)
    assert m.receive(p.Pid(42)) == [c.JoinCgroup(42)]


@pytest.mark.parametrize("state", list(EXEC_HAPPY))
@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: m.type)
def test_exec_every_message_in_every_waiting_state(state, msg):
    m = exec_machine_in(state)
    actions = m.receive(msg)
    expected, next_state = EXEC_HAPPY[state]
    if msg == expected:
        assert m.state is next_state
        assert not any(isinstance(a, (c.Fail, c.RecordPid, c.ApplyResources,
                                      c.RunCreateRuntimeHooks, c.WriteIdMaps))
                       for a in actions)
    elif isinstance(msg, p.Error):
        assert actions == [c.Fail(m.error)]
        assert isinstance(m.error, ChildError) and str(m.error) == "boom"
        assert m.state is c.State.FAILED
    else:
        assert m.state is c.State.FAILED
        assert isinstance(m.error, ProtocolError)
        assert msg.type in str(m.error) and state in str(m.error)


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: m.type)
def test_exec_messages_before_start_and_after_the_end_are_protocol_errors(msg):
    assert isinstance(exec_machine_in(c.State.START).receive(msg)[0].error, ProtocolError)
    assert isinstance(exec_machine_in(c.State.DONE).receive(msg)[0].error, ProtocolError)


@pytest.mark.parametrize("state", [c.State.START, *EXEC_HAPPY])
def test_exec_child_gone_fails_every_unfinished_state(state):
    m = exec_machine_in(state)
    if state is c.State.START:
        m.start(1)
    [fail] = m.child_gone()
    assert isinstance(fail.error, ProtocolError) and "exited" in str(fail.error)
