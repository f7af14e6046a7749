"""The D-Bus messages of the systemd cgroup driver (jeepney), and what their replies mean.

Shared by the two front ends: ``systemd_blocking`` (the command line) and ``systemd_trio``
(the supervisor); they differ only in how a message is sent and a reply awaited.
"""

from __future__ import annotations

import os

from jeepney import DBusAddress, MatchRule, Message, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.low_level import HeaderFields

from ..errors import CgroupError
from .systemd_units import version_number

SYSTEMD = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                      interface="org.freedesktop.systemd1.Manager")
_PROPERTIES = "org.freedesktop.DBus.Properties"
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
JOB_TIMEOUT = 30.0  # runc's wait for a unit's job
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"


def check_running(what: str = "--systemd-cgroup") -> None:
    """sd_booted(3)'s test, then the bus socket: the error names what is missing."""
    if not os.path.isdir("/run/systemd/system"):
        raise CgroupError(f"{what}: systemd is not running on this host (no "
                          f"/run/systemd/system: systemd is not PID 1 here)")
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    if not address and not os.path.exists(SYSTEM_BUS_SOCKET):
        raise CgroupError(f"{what}: no D-Bus system bus ({SYSTEM_BUS_SOCKET} is missing: "
                          f"is dbus running?)")


def bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or f"unix:path={SYSTEM_BUS_SOCKET}"


# -- messages ---------------------------------------------------------------------------

def job_removed_rule() -> MatchRule:
    """No sender: the signal's header names systemd's unique name (``:1.0``), which jeepney's
    own filter would compare with the well-known one; the path and member suffice."""
    return MatchRule(type="signal", interface="org.freedesktop.systemd1.Manager",
                     member="JobRemoved",
                     path="/org/freedesktop/systemd1")


def add_match(rule: MatchRule) -> Message:
    return message_bus.AddMatch(rule)


def subscribe() -> Message:
    """Without a subscriber systemd sends no job signals on the system bus."""
    return new_method_call(SYSTEMD, "Subscribe")


def start_transient_unit(unit: str, properties: list) -> Message:
    return new_method_call(SYSTEMD, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                           (unit, "replace", properties, []))


def stop_unit(unit: str) -> Message:
    return new_method_call(SYSTEMD, "StopUnit", "ss", (unit, "replace"))


def reset_failed_unit(unit: str) -> Message:
    return new_method_call(SYSTEMD, "ResetFailedUnit", "s", (unit,))


def set_unit_properties(unit: str, properties: list) -> Message:
    """runtime=True: the change lasts until the unit goes, as runc asks."""
    return new_method_call(SYSTEMD, "SetUnitProperties", "sba(sv)", (unit, True, properties))


def get_unit(unit: str) -> Message:
    return new_method_call(SYSTEMD, "GetUnit", "s", (unit,))


def manager_version() -> Message:
    return new_method_call(DBusAddress(SYSTEMD.object_path, SYSTEMD.bus_name, _PROPERTIES),
                           "Get", "ss", (SYSTEMD.interface, "Version"))


def scope_control_group(unit_object: str) -> Message:
    return new_method_call(DBusAddress(unit_object, SYSTEMD.bus_name, _PROPERTIES), "Get",
                           "ss", ("org.freedesktop.systemd1.Scope", "ControlGroup"))


# -- replies ----------------------------------------------------------------------------

def error_name(reply: Message) -> str | None:
    if reply.header.message_type is MessageType.error:
        return reply.header.fields.get(HeaderFields.error_name, "error")
    return None


def body(reply: Message, what: str) -> tuple:
    """The reply's body, or the D-Bus error as a CgroupError naming the call."""
    name = error_name(reply)
    if name is not None:
        detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise CgroupError(f"systemd: {what}: {name}{': ' + detail if detail else ''}")
    return reply.body


def variant_value(reply: Message, what: str):
    """A Properties.Get reply: the variant's value."""
    return body(reply, what)[0][1]


def job_result(signal: Message, job: str) -> str | None:
    """JobRemoved(id, job, unit, result): the result when it is about ``job``."""
    if signal.header.message_type is not MessageType.signal or len(signal.body) != 4:
        return None
    return signal.body[3] if signal.body[1] == job else None


def check_job(result: str, unit: str, verb: str) -> None:
    if result != "done":
        raise CgroupError(f"systemd: {verb} {unit}: job {result}")


# -- conversations ------------------------------------------------------------------------
# Generators that yield a Message to send (and are sent its reply) or a WaitJob (and are
# sent the job's result): one sequence of calls, run by either front end.

class WaitJob:
    """Wait for JobRemoved of ``job`` (the caller has subscribed before the call)."""

    __slots__ = ("job",)

    def __init__(self, job: str) -> None:
        self.job = job


def start_scope(unit: str, cgroup: str, properties_for):
    """Start the transient scope, wait for its job, and check its cgroup is ``cgroup``.

    ``properties_for(version)``: the unit's properties for this systemd.  A leftover failed
    unit of the same name is reset and the start tried once more, as runc does."""
    version = version_number(variant_value((yield manager_version()), "Version"))
    properties = properties_for(version)
    reply = yield start_transient_unit(unit, properties)
    if error_name(reply) == UNIT_EXISTS:
        yield reset_failed_unit(unit)
        reply = yield start_transient_unit(unit, properties)
    job = body(reply, f"StartTransientUnit {unit}")[0]
    result = yield WaitJob(job)
    if result != "done":
        yield reset_failed_unit(unit)
        check_job(result, unit, "start")
    found = yield from control_group(unit)
    if found != cgroup:
        raise CgroupError(f"systemd put {unit} in cgroup {found!r}, not {cgroup!r} (is "
                          f"corral in systemd's cgroup namespace?)")
    return found


def control_group(unit: str):
    unit_object = body((yield get_unit(unit)), f"GetUnit {unit}")[0]
    return variant_value((yield scope_control_group(unit_object)), f"{unit} ControlGroup")


def stop_scope(unit: str):
    """StopUnit and wait for it (a unit already gone is fine), then ResetFailedUnit so
    that a failed unit does not linger."""
    reply = yield stop_unit(unit)
    if error_name(reply) != NO_SUCH_UNIT:
        job = body(reply, f"StopUnit {unit}")[0]
        yield WaitJob(job)  # as runc: a stop job that did not end "done" is not an error
    yield reset_failed_unit(unit)  # its error (not failed, not loaded) says nothing


def set_properties(unit: str, properties_for):
    version = version_number(variant_value((yield manager_version()), "Version"))
    body((yield set_unit_properties(unit, properties_for(version))),
         f"SetUnitProperties {unit}")
