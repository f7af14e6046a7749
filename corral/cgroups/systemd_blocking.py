"""The systemd cgroup driver's blocking front end (the command line): one D-Bus connection
per command, the conversations of ``systemd_bus`` run on it."""

from __future__ import annotations

import time
from collections import deque

from ..errors import CgroupError
from . import systemd_bus as bus

_AUTH_TIMEOUT = 10.0  # jeepney's 1 s is short on a loaded machine


def run(conversation, timeout: float = bus.JOB_TIMEOUT):
    """Run one conversation on a fresh connection to the system bus."""
    from jeepney.io.blocking import open_dbus_connection

    bus.check_running()
    try:
        conn = open_dbus_connection(bus.bus_address(), auth_timeout=_AUTH_TIMEOUT)
    except (OSError, ValueError) as exc:
        raise CgroupError(f"--systemd-cgroup: cannot connect to the system bus "
                          f"({bus.bus_address()}): {exc}") from None
    try:
        rule = bus.job_removed_rule()
        with conn.filter(rule, queue=deque()) as signals:
            bus.body(conn.send_and_get_reply(bus.add_match(rule), timeout=timeout), "AddMatch")
            bus.body(conn.send_and_get_reply(bus.subscribe(), timeout=timeout), "Subscribe")
            return _drive(conn, signals, conversation, timeout)
    except (TimeoutError, ConnectionError) as exc:
        raise CgroupError(f"systemd: no answer on the system bus: {exc or 'timed out'}") from None
    finally:
        conn.close()


def _drive(conn, signals: deque, conversation, timeout: float):
    try:
        step = next(conversation)
        while True:
            if isinstance(step, bus.WaitJob):
                answer = _wait_job(conn, signals, step.job, timeout)
            else:
                answer = conn.send_and_get_reply(step, timeout=timeout)
            step = conversation.send(answer)
    except StopIteration as done:
        return done.value


def _wait_job(conn, signals: deque, job: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        while signals:
            result = bus.job_result(signals.popleft(), job)
            if result is not None:
                return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise CgroupError(f"systemd: job {job} did not end within {timeout:g}s")
        try:
            signals.appendleft(conn.recv_until_filtered(signals, timeout=left))
        except TimeoutError:
            continue
