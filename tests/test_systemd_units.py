"""The systemd cgroup driver's decisions and messages, without systemd: slice:prefix:name
parsing, slice nesting, the resource and device properties (runc's mapping on v1 and v2),
the D-Bus messages as bytes on the wire, and the conversations' steps.  The driver against
a real systemd: tests/test_systemd_cgroup.py."""

from __future__ import annotations

import pytest
from jeepney import HeaderFields, Message, MessageType
from jeepney.low_level import Header

from corral.cgroups import Cgroup, systemd_bus as bus, systemd_units as units
from corral.cgroups.hierarchy import parse_mountinfo
from corral.errors import CgroupError, ConfigError
from corral.oci.config import (BlockIOResources, CpuResources, DeviceRule, MemoryResources,
                               Resources)

HYBRID = """\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_paths_parse_as_runc_parses_them():
    p = units.parse_path("machine-corral.slice:libpod:abc", "id")
    assert (p.slice, p.prefix, p.name, p.unit) == ("machine-corral.slice", "libpod", "abc",
                                                   "libpod-abc.scope")
    assert p.cgroup() == "/machine.slice/machine-corral.slice/libpod-abc.scope"
    default = units.parse_path(None, "c1")
    assert default.unit == "corral-c1.scope" and default.cgroup() == "/system.slice/corral-c1.scope"
    assert units.parse_path(":p:n", "x").slice == "system.slice"
    assert units.parse_path("-.slice::n", "x").cgroup() == "/n.scope"
    for bad, why in (("/a/b", "slice:prefix:name"), ("a:b", "slice:prefix:name"),
                     ("x.service:p:n", "invalid slice"), ("a--b.slice:p:n", "invalid slice"),
                     ("-a.slice:p:n", "invalid slice"), ("s.slice:p:", "name"),
                     ("s.slice:p:a/b", "name"), ("s.slice:p:pod.slice", "scope"),
                     ("s.slice:p:a b", "character ' '"), ("s.slice:p:" + "x" * 250, "255"),
                     ("a@b.slice:p:n", "character '@'")):
        with pytest.raises(ConfigError, match=why):
            units.parse_path(bad, "x")


def test_expand_slice_nests_like_systemd():
    assert units.expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert units.expand_slice("-.slice") == "/"
    with pytest.raises(ConfigError):
        units.expand_slice(".slice")


def test_a_scope_cgroup_is_at_the_unit_path_everywhere():
    layout = parse_mountinfo(HYBRID)
    cg = Cgroup.for_container(layout, "k-pods.slice:cri:c9", "c9", systemd=True)
    assert cg.paths == {k: f"/sys/fs/cgroup/{d}/k.slice/k-pods.slice/cri-c9.scope"
                        for k, d in (("cpu", "cpu"), ("memory", "memory"),
                                     ("name=systemd", "systemd"), ("unified", "unified"))}
    assert cg.unit == {"name": "cri-c9.scope", "slice": "k-pods.slice",
                       "cgroup": "/k.slice/k-pods.slice/cri-c9.scope"}
    assert all(not dirs for dirs in cg.prune.values())  # slices are systemd's
    again = Cgroup.from_json(cg.to_json())
    assert again.unit == cg.unit and again.paths == cg.paths
    assert Cgroup.from_json({**cg.to_json(), "systemd": None}).unit is None
    assert not cg.try_destroy()  # stopping a unit is destroy's (a D-Bus call)


def test_v1_resources_use_runc_v1_properties():
    r = Resources(memory=MemoryResources(limit=1 << 30, reservation=5, swap=2 << 30),
                  cpu=CpuResources(shares=512, quota=25000, period=50000, cpus="0-2,5"),
                  block_io=BlockIOResources(weight=300), pids_limit=-1)
    props = dict(units.resource_properties(r, unified=False, version=252))
    assert props == {"MemoryLimit": ("t", 1 << 30), "CPUShares": ("t", 512),
                     "CPUQuotaPeriodUSec": ("t", 50000),
                     "CPUQuotaPerSecUSec": ("t", 500000), "AllowedCPUs": ("ay", b"\x27"),
                     "BlockIOWeight": ("t", 300), "TasksMax": ("t", 2**64 - 1)}


def test_v2_resources_use_runc_v2_properties():
    r = Resources(memory=MemoryResources(limit=100, reservation=50, swap=300),
                  cpu=CpuResources(shares=1024, quota=-1), pids_limit=7,
                  unified={"memory.high": "max", "cpu.max": "33333 100000",
                           "io.weight": "200"})
    props = units.resource_properties(r, unified=True, version=252)
    assert ("MemoryMax", ("t", 100)) in props and ("MemoryLow", ("t", 50)) in props
    assert ("MemorySwapMax", ("t", 200)) in props  # memory+swap less memory
    assert ("CPUWeight", ("t", 39)) in props  # 1 + (1022 * 9999) // 262142
    assert ("TasksMax", ("t", 7)) in props and ("MemoryHigh", ("t", 2**64 - 1)) in props
    # 33333/100000 of a second rounds up to 340ms per second, as in runc
    assert ("CPUQuotaPerSecUSec", ("t", 340000)) in props
    assert not any(name.startswith("IO") for name, _ in props)  # cgroupfs only
    with pytest.raises(ConfigError, match="swap"):
        units.resource_properties(Resources(memory=MemoryResources(swap=10)), True, 252)


def test_old_systemd_gets_no_newer_properties():
    r = Resources(cpu=CpuResources(quota=1000, period=10000, cpus="1"))
    names = [n for n, _ in units.resource_properties(r, unified=False, version=239)]
    assert names == ["CPUQuotaPerSecUSec"]


def test_cpu_quota_rounding_and_unlimited():
    assert units.cpu_quota_properties(None, None, 252) == []
    assert units.cpu_quota_properties(-1, None, 252) == [("CPUQuotaPerSecUSec", ("t", 2**64 - 1))]
    assert units.cpu_quota_properties(1, 100000, 252)[-1] == ("CPUQuotaPerSecUSec", ("t", 10000))
    assert units.shares_to_weight(2) == 1 and units.shares_to_weight(262144) == 10000


def test_range_to_bits():
    assert units.range_to_bits("0", "f") == b"\x01"
    assert units.range_to_bits("8-9", "f") == b"\x00\x03"
    for bad in ("", "3-1", "x"):
        with pytest.raises(ConfigError):
            units.range_to_bits(bad, "linux.resources.cpu.cpus")


def _rule(allow, kind="a", major=None, minor=None, access="rwm"):
    return DeviceRule(allow, kind, major, minor, access)


def test_device_rules_fold_into_a_strict_allow_list():
    rules = [_rule(False), _rule(True, "c", 1, 3, "rwm"), _rule(True, "c", 136, None, "rw"),
             _rule(True, "b", None, None, "m"), _rule(True, "c", 5, 0, "r"),
             _rule(True, "c", 5, 0, "w"), _rule(True, "c", 10, 200), _rule(False, "c", 10, 200),
             _rule(True, "c", None, 7, "r")]
    props = units.device_properties(rules)
    assert props == [("DevicePolicy", ("s", "strict")),
                     ("DeviceAllow", ("a(ss)", [("/dev/char/1:3", "rwm"), ("char-136", "rw"),
                                                ("block-*", "m"), ("/dev/char/5:0", "rw")]))]


def test_device_allow_all_and_blacklists():
    assert units.device_properties([_rule(True)]) == [("DevicePolicy", ("s", "auto")),
                                                      ("DeviceAllow", ("a(ss)", []))]
    # a deny after allow-all cannot be said to systemd: deny-all, as runc
    assert units.device_properties([_rule(True), _rule(False, "c", 1, 3)]) == [
        ("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", []))]
    assert units.device_properties([]) == [("DevicePolicy", ("s", "strict")),
                                           ("DeviceAllow", ("a(ss)", []))]


def test_messages_serialise_with_systemd_signatures():
    props = units.unit_properties(units.parse_path(None, "c1"), 42, "corral container c1")
    msg = bus.start_transient_unit("corral-c1.scope", props + [("AllowedCPUs", ("ay", b"\x01"))])
    wire = msg.serialise(serial=1)
    again = Message.from_buffer(wire)
    assert again.header.fields[HeaderFields.member] == "StartTransientUnit"
    assert again.header.fields[HeaderFields.signature] == "ssa(sv)a(sa(sv))"
    assert again.header.fields[HeaderFields.destination] == "org.freedesktop.systemd1"
    name, mode, sent, aux = again.body
    assert (name, mode, aux) == ("corral-c1.scope", "replace", [])
    sent = dict(sent)
    assert sent["PIDs"] == ("au", [42]) and sent["Delegate"] == ("b", True)
    assert sent["Slice"] == ("s", "system.slice") and sent["DefaultDependencies"] == ("b", False)
    assert bus.set_unit_properties("u", [("TasksMax", ("t", 5))]).body == (
        "u", True, [("TasksMax", ("t", 5))])
    assert bus.stop_unit("u").body == ("u", "replace")
    assert bus.scope_control_group("/o").body == ("org.freedesktop.systemd1.Scope",
                                                   "ControlGroup")
    rule = bus.job_removed_rule().serialise()
    assert "member='JobRemoved'" in rule and "sender" not in rule


def _reply(body=(), signature="", error=None):
    kind = MessageType.error if error else MessageType.method_return
    fields = {HeaderFields.signature: signature} if signature else {}
    if error:
        fields[HeaderFields.error_name] = error
    return Message(Header(1, kind, 0, 1, 0, 0, fields), body)


def _signal(job, result):
    return Message(Header(1, MessageType.signal, 0, 1, 0, 0,
                          {HeaderFields.signature: "uoss"}), (7, job, "u.scope", result))


def _play(conversation, answers):
    """Run a conversation against canned answers: the messages' members it sent."""
    sent = []
    step = next(conversation)
    try:
        while True:
            sent.append("wait" if isinstance(step, bus.WaitJob)
                        else step.header.fields[HeaderFields.member])
            step = conversation.send(answers.pop(0))
    except StopIteration as done:
        return sent, done.value


def test_start_retries_once_after_a_leftover_unit_and_checks_the_cgroup():
    version = _reply((("s", "252.38-1"),), "v")
    sent, found = _play(bus.start_scope("u.scope", "/system.slice/u.scope", lambda v: []), [
        version, _reply(("busy",), "s", bus.UNIT_EXISTS), _reply(), _reply(("/job/1",), "o"),
        "done", _reply(("/unit/u",), "o"), _reply((("s", "/system.slice/u.scope"),), "v")])
    assert sent == ["Get", "StartTransientUnit", "ResetFailedUnit", "StartTransientUnit",
                    "wait", "GetUnit", "Get"]
    assert found == "/system.slice/u.scope"
    with pytest.raises(CgroupError, match="not '/system.slice/u.scope'"):
        _play(bus.start_scope("u.scope", "/system.slice/u.scope", lambda v: []), [
            version, _reply(("/job/1",), "o"), "done", _reply(("/unit/u",), "o"),
            _reply((("s", "/elsewhere/u.scope"),), "v")])
    with pytest.raises(CgroupError, match="start u.scope: job failed"):
        _play(bus.start_scope("u.scope", "/x", lambda v: []),
              [version, _reply(("/job/1",), "o"), "failed", _reply()])


def test_stop_tolerates_a_unit_already_gone():
    sent, _ = _play(bus.stop_scope("u.scope"), [_reply(("gone",), "s", bus.NO_SUCH_UNIT),
                                                _reply()])
    assert sent == ["StopUnit", "ResetFailedUnit"]
    sent, _ = _play(bus.stop_scope("u.scope"), [_reply(("/job/2",), "o"), "done", _reply()])
    assert sent == ["StopUnit", "wait", "ResetFailedUnit"]
    with pytest.raises(CgroupError,
                       match="StopUnit u.scope: org.freedesktop.DBus.Error.AccessDenied"):
        _play(bus.stop_scope("u.scope"), [_reply(("no",), "s",
                                                 "org.freedesktop.DBus.Error.AccessDenied")])


def test_job_signals_are_matched_by_job_path():
    assert bus.job_result(_signal("/job/3", "done"), "/job/3") == "done"
    assert bus.job_result(_signal("/job/4", "done"), "/job/3") is None
    assert units.version_number("252.38-1~deb12u1") == 252
    assert units.version_number('"v245.4-1.fc32"') == 245 and units.version_number("x") == -1


def test_annotations_become_properties_as_in_runc():
    props = units.annotation_properties({
        "org.systemd.property.TimeoutStopSec": "5", "org.systemd.property.CollectMode":
        "'inactive-or-failed'", "org.systemd.property.CPUWeight": "uint64 42",
        "org.systemd.property.IOWeight": "@t 7", "org.systemd.property.SendSIGHUP": "true",
        "org.systemd.property.RuntimeMaxSec": "1.5", "org.systemd.property.Wants":
        "['a.service', 'b,c.service']", "org.systemd.property.After": "@as []",
        "other.annotation": "x"})
    assert dict(props) == {"TimeoutStopUSec": ("t", 5000000),
                           "CollectMode": ("s", "inactive-or-failed"),
                           "CPUWeight": ("t", 42), "IOWeight": ("t", 7),
                           "SendSIGHUP": ("b", True), "RuntimeMaxUSec": ("t", 1500000),
                           "Wants": ("as", ["a.service", "b,c.service"]), "After": ("as", [])}
    assert units.parse_variant("-3", "f") == ("i", -3)
    assert units.parse_variant('"it\\"s"', "f") == ("s", 'it"s')
    for key, value, why in (("X1", "1", "property name"), ("Ab", "1", "property name"),
                            ("TimeoutStopSec", "'5'", "takes seconds"),
                            ("Foo", "uint32 -1", "out of range"), ("Foo", "what", "D-Bus value"),
                            ("Foo", "[]", "needs its type"), ("Foo", "[1, 'a']", "mixes"),
                            ("Foo", "'open", "unterminated")):
        with pytest.raises(ConfigError, match=why):
            units.annotation_properties({units.ANNOTATION_PREFIX + key: value})
