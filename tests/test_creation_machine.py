"""The sans-I/O creation machine and the protocol framing, with no process at all."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import ChildError, ProtocolError
from corral.runtime import creation as c
from corral.runtime import protocol as p


def bootstrap(new_user=False, create_hooks=False):
    return p.Bootstrap(unshare_flags=0, new_user=new_user, join=[], config={}, rootfs="/r",
                       bundle="/b", fifo_path="/f", create_hooks=create_hooks)


ALL_MESSAGES = [
    bootstrap(), p.UsermapRequest(7), p.UsermapDone(), p.Pid(42), p.HooksDue(),
    p.HooksDone(42), p.Ready(), p.Run(42), p.Waiting(), p.Error("boom", 2, "mount"),
]

# The one message each waiting state accepts, and where it leads (with create-time hooks).
HAPPY = {
    c.State.AWAIT_USERMAP_REQUEST: (p.UsermapRequest(7), c.State.AWAIT_PID),
    c.State.AWAIT_PID: (p.Pid(42), c.State.AWAIT_HOOKS),
    c.State.AWAIT_HOOKS: (p.HooksDue(), c.State.AWAIT_READY),
    c.State.AWAIT_READY: (p.Ready(), c.State.AWAIT_WAITING),
    c.State.AWAIT_WAITING: (p.Waiting(), c.State.DONE),
}


def machine_in(state):
    """Drives a fresh machine along the happy path until it is in `state`."""
    m = c.CreationMachine(bootstrap(new_user=True, create_hooks=True))
    if state is c.State.START:
        return m
    m.start(100)
    while m.state is not state:
        m.receive(HAPPY[m.state][0])
    return m


def test_happy_path_without_user_namespace():
    m = c.CreationMachine(bootstrap())
    assert m.start(100) == [c.Send(bootstrap())]
    assert m.state is c.State.AWAIT_PID
    assert m.receive(p.Pid(42)) == [c.RecordPid(42), c.JoinCgroup(42)]
    assert m.state is c.State.AWAIT_READY  # no hooks: no HooksDue step
    assert m.receive(p.Ready()) == [c.ApplyResources(42), c.Send(p.Run(42))]
    assert m.receive(p.Waiting()) == [c.Done(42)]
    assert m.state is c.State.DONE and m.init_pid == 42


def test_create_hooks_sync_before_ready():
    m = c.CreationMachine(bootstrap(create_hooks=True))
    m.start(100)
    assert m.receive(p.Pid(42)) == [c.RecordPid(42), c.JoinCgroup(42)]
    assert m.state is c.State.AWAIT_HOOKS
    assert m.receive(p.HooksDue()) == [c.RunCreateRuntimeHooks(42), c.Send(p.HooksDone(42))]
    assert m.state is c.State.AWAIT_READY
    assert m.receive(p.Ready()) == [c.ApplyResources(42), c.Send(p.Run(42))]


def test_without_create_hooks_hooks_due_is_a_protocol_error():
    m = c.CreationMachine(bootstrap())
    m.start(100)
    m.receive(p.Pid(42))
    [fail] = m.receive(p.HooksDue())
    assert isinstance(fail.error, ProtocolError) and "hooks_due" in str(fail.error)


def test_user_namespace_asks_for_maps_first():
    m = c.CreationMachine(bootstrap(new_user=True))
    m.start(100)
    assert m.state is c.State.AWAIT_USERMAP_REQUEST
    assert m.receive(p.UsermapRequest(101)) == [c.WriteIdMaps(101), c.Send(p.UsermapDone())]
    assert m.state is c.State.AWAIT_PID


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
    m = c.CreationMachine(bootstrap())
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
    m = c.CreationMachine(bootstrap())
    m.start(1)
    assert isinstance(m.start(1)[0].error, ProtocolError)


def test_driver_failure_fails_once():
    m = machine_in(c.State.AWAIT_READY)
    err = ChildError("deadline")
    assert m.fail(err) == [c.Fail(err)]
    assert m.fail(ChildError("again")) == []
    assert m.error is err


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: m.type)
def test_framing_round_trip(msg):
    data = p.encode(msg)
    dec = p.FrameDecoder()
    # Byte by byte: a frame split anywhere still decodes once.
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert out == [msg] and not dec.pending


def test_c_stage_encodings_match():
    """nsenter.c compares and writes these byte strings literally."""
    assert p.encode(p.UsermapDone())[4:] == b'{"type":"usermap_done"}'
    assert p.decode(b'{"type":"pid","pid":5}') == p.Pid(5)
    assert p.decode(b'{"type":"waiting"}') == p.Waiting()
    assert p.decode(b'{"type":"usermap_request","pid":9}') == p.UsermapRequest(9)
    assert p.decode(b'{"type":"error","stage":"join","message":"x","errno":1}') == \
        p.Error("x", 1, "join")


@pytest.mark.parametrize("payload", [
    b"not json", b"[]", b'{"type":5}', b'{"type":"nope"}', b'{"type":"pid"}',
    b'{"type":"pid","pid":1,"extra":2}', b'{"no":"type"}',
])
def test_bad_frames_are_protocol_errors(payload):
    with pytest.raises(ProtocolError):
        p.decode(payload)


def test_oversized_frame_is_refused():
    with pytest.raises(ProtocolError):
        p.FrameDecoder().feed((p.MAX_FRAME + 1).to_bytes(4, "big"))


@given(st.binary(max_size=64))
def test_decoder_only_raises_protocol_errors(data):
    try:
        p.FrameDecoder().feed(len(data).to_bytes(4, "big") + data)
    except ProtocolError:
        pass


# ---- exec: a new process in an existing container ---------------------------------------

def exec_bootstrap(new_user=False):
    return p.Bootstrap(unshare_flags=0, new_user=new_user, join=[[0x20000000, "/proc/1/ns/pid"]],
                       config={}, rootfs="/r", bundle="/b", fifo_path="", exec=True)


EXEC_HAPPY = {
    c.State.AWAIT_PID: (p.Pid(42), c.State.AWAIT_READY),
    c.State.AWAIT_READY: (p.Ready(), c.State.AWAIT_WAITING),
    c.State.AWAIT_WAITING: (p.Waiting(), c.State.DONE),
}


def exec_machine_in(state):
    m = c.CreationMachine(exec_bootstrap())
    if state is c.State.START:
        return m
    m.start(100)
    while m.state is not state:
        m.receive(EXEC_HAPPY[m.state][0])
    return m


def test_exec_happy_path_only_joins_the_cgroup_and_runs():
    m = c.CreationMachine(exec_bootstrap())
    assert m.start(100) == [c.Send(exec_bootstrap())]
    assert m.state is c.State.AWAIT_PID
    assert m.receive(p.Pid(42)) == [c.JoinCgroup(42)]  # no RecordPid: the init's record stays
    assert m.state is c.State.AWAIT_READY
    assert m.receive(p.Ready()) == [c.Send(p.Run(42))]  # no ApplyResources
    assert m.receive(p.Waiting()) == [c.Done(42)]
    assert m.state is c.State.DONE and m.init_pid == 42


def test_exec_never_asks_for_id_maps():
    """Joining the container's user namespace needs no maps: a new_user flag is ignored."""
    m = c.CreationMachine(exec_bootstrap(new_user=True))
    m.start(100)
    assert m.state is c.State.AWAIT_PID


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
