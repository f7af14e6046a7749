"""The daemon's API methods: parameter checking (each error names the parameter) and the
call into the engine.  Transport-free: ``server.py`` frames and routes, this module decides.

A method is ``async def m(engine, params, emit) -> result``; streaming methods (``logs``
with follow, ``events``) call ``await emit(item)`` for each item before returning.
"""

from __future__ import annotations

import signal as _signal
from typing import Any, Awaitable, Callable

import trio

from corral.errors import ConfigError, ContainerStateError
from corral.supervisor.engine import Engine

API_VERSION = 1
Emit = Callable[[Any], Awaitable[None]]

_MISSING = object()


def _param(params: dict, name: str, kind, default=_MISSING):
    value = params.get(name, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise ConfigError(f"params.{name}", "is required")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"params.{name}", f"must be {_kind_name(kinds)}, not a boolean")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds):
        raise ConfigError(f"params.{name}", f"must be {_kind_name(kinds)}, "
                                            f"not {type(value).__name__}")
    if isinstance(value, float) and not (value >= 0 and value != float("inf")):
        raise ConfigError(f"params.{name}", "must be a non-negative number of seconds")
    return value


def _kind_name(kinds: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             dict: "an object", list: "an array"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _strings(params: dict, name: str, default=()) -> list[str]:
    value = _param(params, name, list, list(default))
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"params.{name}", "must be an array of strings")
    return value


def _signal_param(params: dict, default: int, zero: bool = False) -> int:
    return signal_number(_param(params, "signal", (str, int), default), "params.signal", zero)


def signal_number(value: str | int, field: str = "signal", zero: bool = False) -> int:
    """A signal by number, or by name with or without SIG (any case).  ``zero``: 0 too, for
    ``kill`` (runc sends it: a check that the init is there, delivering nothing)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(field, f"{value!r} is not a signal")
    if isinstance(value, int):
        if (0 if zero else 1) <= value < _signal.NSIG:
            return value
        raise ConfigError(field, f"{value} is not a signal number")
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    num = getattr(_signal, name, None) if name.isidentifier() and "_" not in name else None
    if not isinstance(num, int) or not 0 < num < _signal.NSIG:
        raise ConfigError(field, f"unknown signal {value!r}")
    return int(num)


def _create_args(params: dict) -> dict:
    bundle = _param(params, "bundle", str, None)
    config = _param(params, "config", dict, None)
    if (bundle is None) == (config is None):
        raise ConfigError("params.bundle", "give exactly one of bundle (a path), config (an "
                                           "inline OCI config) and job")
    return {"bundle": bundle, "config": config, "logs": _param(params, "logs", bool, True),
            "timeout": _param(params, "timeout", float, None)}


def _job(params: dict):
    """A ``job`` parameter (``corral.Job.to_dict()``), or None."""
    raw = _param(params, "job", dict, None)
    if raw is None:
        return None
    if "bundle" in params or "config" in params:
        raise ConfigError("params.job", "give exactly one of bundle, config and job")
    from corral.jobs.job import Job

    return Job.from_dict(raw, "params.job.")


async def m_version(engine: Engine, params: dict, emit: Emit) -> dict:
    from corral.version import __version__

    return {"api": API_VERSION, "version": __version__}


async def m_create(engine: Engine, params: dict, emit: Emit) -> dict:
    cid = _param(params, "id", str)
    job = _job(params)
    if job is not None:
        return await engine.run_job(cid, job, logs=_param(params, "logs", bool, True),
                                    start=False)
    return await engine.create(cid, **_create_args(params))


async def m_start(engine: Engine, params: dict, emit: Emit) -> dict:
    return await engine.start(_param(params, "id", str), _param(params, "timeout", float, None))


async def m_run(engine: Engine, params: dict, emit: Emit) -> dict:
    cid = _param(params, "id", str)
    _param(params, "delete_on_close", bool, False)  # the connection's (server.py)
    job = _job(params)
    if job is not None:
        return await engine.run_job(cid, job, logs=_param(params, "logs", bool, True))
    return await engine.run(cid, **_create_args(params))


async def m_kill(engine: Engine, params: dict, emit: Emit) -> dict:
    engine.kill(_param(params, "id", str), _signal_param(params, _signal.SIGTERM, zero=True),
                _param(params, "all", bool, False))
    return {}


async def m_stop(engine: Engine, params: dict, emit: Emit) -> dict:
    status = await engine.stop(_param(params, "id", str), _param(params, "grace", float, 10.0),
                               _signal_param(params, _signal.SIGTERM))
    return {"exitStatus": status}


async def m_delete(engine: Engine, params: dict, emit: Emit) -> dict:
    await engine.delete(_param(params, "id", str), _param(params, "force", bool, False))
    return {}


async def m_state(engine: Engine, params: dict, emit: Emit) -> dict:
    return engine.state(_param(params, "id", str))


async def m_list(engine: Engine, params: dict, emit: Emit) -> list:
    return engine.list()


async def m_wait(engine: Engine, params: dict, emit: Emit) -> dict:
    cid = _param(params, "id", str)
    timeout = _param(params, "timeout", float, None)
    with trio.move_on_after(timeout if timeout is not None else float("inf")):
        return await engine.wait_result(cid)
    raise ContainerStateError(f"container {cid} still running after {timeout} s")


async def m_stats(engine: Engine, params: dict, emit: Emit) -> dict:
    return engine.stats(_param(params, "id", str))


async def m_exec(engine: Engine, params: dict, emit: Emit) -> dict:
    return await engine.exec(
        _param(params, "id", str), _strings(params, "args", ()) or None,
        process=_param(params, "process", dict, None), env=_strings(params, "env"),
        cwd=_param(params, "cwd", str, None), user=_param(params, "user", str, None),
        timeout=_param(params, "timeout", float, None))


async def m_logs(engine: Engine, params: dict, emit: Emit) -> dict:
    which = _param(params, "stream", str, "both")
    if which not in ("stdout", "stderr", "both"):
        raise ConfigError("params.stream", f"{which!r}: use stdout, stderr or both")
    async for stream, text in engine.text_logs(_param(params, "id", str), which,
                                               _param(params, "follow", bool, False)):
        await emit({"stream": stream, "data": text})
    return {}


async def m_events(engine: Engine, params: dict, emit: Emit) -> None:
    """Never returns: a client that falls behind gets TooSlow (event_bus.py)."""
    async with engine.subscribe() as events:
        async for event in events:
            await emit(event)


METHODS: dict[str, Callable[[Engine, dict, Emit], Awaitable[Any]]] = {
    name[2:]: fn for name, fn in globals().items() if name.startswith("m_")}
