"""Jobs files for ``corral batch``: JSON lines or TOML, defaults plus per-job overrides.

TOML::

    [defaults]
    limits = { memory = "256M", time = "1m" }
    env = { MODE = "fast" }

    [[job]]
    name = "one"
    args = ["python3", "-c", "print(1)"]

    [[job]]
    args = "echo $MODE"        # a string runs under /bin/sh -c
    env = { MODE = "slow" }    # env and limits merge key by key; other fields replace
    retries = 2

JSON lines: one JSON object per line, a job, or ``{"defaults": {...}}`` which sets the
defaults for the lines after it; blank lines and lines starting with ``#`` are skipped.

A job's fields are ``Job``'s (docs/api.md) plus ``name`` (default ``job-N``, N counting
jobs from 1; unique; used for result file names) and ``timeout`` (the same as
``limits.time``).  Relative host paths (``root``, ``bundle``, bind sources) are relative to
the file's directory.  Errors name the place -- ``jobs.jsonl line 3: limits.memory`` or
``jobs.toml job 2 (one): args`` -- and the field.
"""

from __future__ import annotations

import json
import os
import re

from corral.errors import ConfigError
from corral.jobs.job import Job

__all__ = ["load_jobs", "parse_jobs"]

#: Fields merged key by key between the defaults and a job; the rest are replaced.
MERGED = ("env", "limits")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def load_jobs(path: str) -> list[tuple[str, Job]]:
    """The jobs of the file at ``path``: [(name, Job)] in file order."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError(path, f"cannot read: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"invalid UTF-8 at byte {err.start}") from None
    return parse_jobs(text, file_format(path, text), name=path,
                      base_dir=os.path.dirname(os.path.abspath(path)))


def file_format(path: str, text: str) -> str:
    """"toml" or "jsonl": by the suffix, else by the first meaningful character."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".toml":
        return "toml"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return "jsonl" if line.startswith("{") else "toml"
    return "jsonl"


def parse_jobs(text: str, fmt: str, *, name: str = "jobs",
               base_dir: str = ".") -> list[tuple[str, Job]]:
    """Parse jobs from ``text`` (``fmt``: "toml" or "jsonl"); ``name`` starts every error."""
    if fmt == "toml":
        entries = _toml_entries(text, name, base_dir)
    elif fmt == "jsonl":
        entries = _jsonl_entries(text, name, base_dir)
    else:
        raise ConfigError("format", f"{fmt!r} is not 'toml' or 'jsonl'")
    jobs: list[tuple[str, Job]] = []
    seen: dict[str, str] = {}
    for number, (where, defaults, entry) in enumerate(entries, 1):
        job_name, job = _job(where, defaults, entry, number, base_dir)
        if job_name in seen:
            earlier = seen[job_name][len(name):].strip(": ")
            raise ConfigError(where + "name", f"{job_name!r} is already taken ({earlier})")
        seen[job_name] = where
        jobs.append((job_name, job))
    if not jobs:
        raise ConfigError(name, "no jobs")
    return jobs


# An entry: (where, defaults, job table); ``where`` prefixes fields in errors.
Entry = tuple[str, dict, dict]


def _toml_entries(text: str, name: str, base_dir: str) -> list[Entry]:
    import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(name, f"invalid TOML: {err}") from None
    unknown = sorted(set(doc) - {"defaults", "job"})
    if unknown:
        raise ConfigError(f"{name}: {unknown[0]}", "unknown table (use [defaults] and "
                                                   "[[job]])")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{name}: defaults", "must be a table ([defaults])")
    defaults = _checked_defaults(defaults, f"{name} defaults: ", base_dir)
    jobs = doc.get("job", [])
    if not isinstance(jobs, list):
        raise ConfigError(f"{name}: job", "must be an array of tables ([[job]])")
    entries = []
    for i, table in enumerate(jobs, 1):
        label = table.get("name") if isinstance(table, dict) else None
        where = f"{name} job {i} ({label}): " if isinstance(label, str) else f"{name} job {i}: "
        entries.append((where, defaults, table))
    return entries


def _jsonl_entries(text: str, name: str, base_dir: str) -> list[Entry]:
    entries = []
    defaults: dict = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{name} line {lineno}: "
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{name} line {lineno}",
                              f"invalid JSON at column {err.colno}: {err.msg}") from None
        except (ValueError, RecursionError) as err:
            raise ConfigError(f"{name} line {lineno}", f"invalid JSON: {err}") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{name} line {lineno}", "must be a JSON object (a job, or "
                                                       '{"defaults": {...}})')
        if "defaults" in obj:
            if len(obj) != 1 or not isinstance(obj["defaults"], dict):
                raise ConfigError(where + "defaults", 'a defaults line is {"defaults": '
                                                      "{...}} and nothing else")
            defaults = _checked_defaults(obj["defaults"], where + "defaults.", base_dir)
            continue
        entries.append((where, defaults, obj))
    return entries


def _checked_defaults(defaults: dict, where: str, base_dir: str) -> dict:
    """Defaults are checked on their own (with a stand-in command) so that a bad value is
    reported where it is written, not at every job."""
    if "name" in defaults:
        raise ConfigError(where + "name", "a name belongs to one job, not to the defaults")
    table = _normalized(defaults, where)
    probe = {k: v for k, v in table.items() if k != "keep"}  # keep may need a job's root
    if isinstance(probe.get("args"), str):
        probe["args"] = ["/bin/sh", "-c", probe["args"]]
    if "bundle" not in probe:
        probe.setdefault("args", ["true"])
    Job.from_dict(_relative_to(probe, base_dir), where)
    return table


def _normalized(table: dict, where: str) -> dict:
    """``timeout`` as ``limits.time``, and a list env as a table, so both merge."""
    env = table.get("env")
    if isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env):
        table = {**table, "env": dict(e.partition("=")[::2] for e in env)}
    if "timeout" not in table:
        return table
    table = dict(table)
    limits = table.get("limits")
    if isinstance(limits, dict) and "time" in limits:
        raise ConfigError(where + "timeout", "give timeout or limits.time, not both")
    if limits is not None and not isinstance(limits, dict):
        return table  # Job reports the bad limits
    table["limits"] = {**(limits or {}), "time": table.pop("timeout")}
    return table


def _job(where: str, defaults: dict, entry: object, number: int,
         base_dir: str) -> tuple[str, Job]:
    if not isinstance(entry, dict):
        raise ConfigError(where.rstrip(": "), "a job must be a table")
    entry = _normalized(entry, where)
    merged = dict(defaults)
    for key, value in entry.items():
        if key in MERGED and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    if "root" in entry:
        merged.pop("bundle", None)  # a job's own root wins over a default bundle
    elif "bundle" in entry:
        merged.pop("root", None)
    name = merged.pop("name", f"job-{number}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(where + "name", f"{name!r} is not a job name (letters, digits, "
                                          "'_', '.', '-'; 100 at most)")
    if isinstance(merged.get("args"), str):
        merged["args"] = ["/bin/sh", "-c", merged["args"]]
    return name, Job.from_dict(_relative_to(merged, base_dir), where)


def _relative_to(table: dict, base_dir: str) -> dict:
    """Host paths written relative to the jobs file's directory, made absolute."""

    def host(path: object) -> object:
        if isinstance(path, str) and path and not path.startswith("/"):
            return os.path.join(base_dir, path)
        return path

    table = dict(table)
    for key in ("root", "bundle"):
        if key in table:
            table[key] = host(table[key])
    mounts = table.get("mounts")
    if isinstance(mounts, list):
        fixed = []
        for m in mounts:
            if isinstance(m, dict) and "source" in m:
                m = {**m, "source": host(m["source"])}
            elif isinstance(m, str) and m and not m.startswith("/"):
                m = host(m)
            fixed.append(m)
        table["mounts"] = fixed
    return table
