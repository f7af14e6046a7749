"""The systemd cgroup driver's trio front end (the supervisor): the conversations of
``systemd_bus`` on a jeepney router, so that no D-Bus wait blocks the event loop."""

from __future__ import annotations

import trio

from ..errors import CgroupError
from . import systemd_bus as bus

_SIGNAL_BUFFER = 256  # JobRemoved of other units may arrive meanwhile


async def run(conversation, timeout: float = bus.JOB_TIMEOUT):
    """Run one conversation on a fresh connection to the system bus.

    The router runs a receiver task in a nursery, which would wrap any error of the
    conversation in an ExceptionGroup: the conversation's error is taken out of the router's
    block and raised after it, alone."""
    from jeepney.io.trio import open_dbus_router

    bus.check_running()
    failure: CgroupError | None = None
    result = None
    try:
        with trio.fail_after(timeout):
            async with open_dbus_router(bus.bus_address()) as router:
                try:
                    result = await _converse(router, conversation)
                except CgroupError as exc:
                    failure = exc
    except trio.TooSlowError:
        raise CgroupError(f"systemd: no answer on the system bus within {timeout:g}s") from None
    except (OSError, ValueError) as exc:  # connecting, authenticating
        raise CgroupError(f"--systemd-cgroup: cannot talk to the system bus "
                          f"({bus.bus_address()}): {exc}") from None
    except ExceptionGroup as group:  # the router's receiver failed (the bus went away)
        raise CgroupError(f"systemd: the system bus connection failed: "
                          f"{group.exceptions[0]}") from None
    if failure is not None:
        raise failure
    return result


async def _converse(router, conversation):
    rule = bus.job_removed_rule()
    async with router.filter(rule, bufsize=_SIGNAL_BUFFER) as signals:
        bus.body(await router.send_and_get_reply(bus.add_match(rule)), "AddMatch")
        bus.body(await router.send_and_get_reply(bus.subscribe()), "Subscribe")
        try:
            step = next(conversation)
            while True:
                if isinstance(step, bus.WaitJob):
                    answer = await _wait_job(signals, step.job)
                else:
                    answer = await router.send_and_get_reply(step)
                step = conversation.send(answer)
        except StopIteration as done:
            return done.value


async def _wait_job(signals, job: str) -> str:
    async for signal in signals:
        result = bus.job_result(signal, job)
        if result is not None:
            return result
    raise CgroupError(f"systemd: the bus closed before job {job} ended")
