"""Jobs files (``corral batch``): TOML and JSON lines, defaults and per-job overrides, and
errors that name the line or job and the field."""

from __future__ import annotations

import os
import textwrap

import pytest

from corral.errors import ConfigError
from corral.jobs.jobsfile import file_format, load_jobs, parse_jobs


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_toml_defaults_and_overrides(tmp_path):
    (tmp_path / "data").mkdir()
    path = write(tmp_path, "jobs.toml", """
        [defaults]
        limits = { memory = "256M", time = "1m" }
        env = { MODE = "fast", KEEP = "yes" }
        mounts = ["data:/data"]

        [[job]]
        name = "one"
        args = ["python3", "-c", "print(1)"]

        [[job]]
        args = "echo $MODE"
        env = { MODE = "slow" }
        limits = { pids = 10 }
        timeout = "5s"
        retries = 2
        network = "host"
        """)
    (n1, j1), (n2, j2) = load_jobs(path)
    assert (n1, n2) == ("one", "job-2")
    assert j1.args == ["python3", "-c", "print(1)"]
    assert j1.env == {"MODE": "fast", "KEEP": "yes"}
    assert (j1.limits.memory, j1.limits.time, j1.limits.pids) == (256 << 20, 60.0, None)
    assert j1.mounts[0].source == str(tmp_path / "data")  # relative to the file
    assert j1.mounts[0].destination == "/data" and j1.mounts[0].readonly
    assert j2.args == ["/bin/sh", "-c", "echo $MODE"]
    assert j2.env == {"MODE": "slow", "KEEP": "yes"}  # merged key by key
    assert (j2.limits.memory, j2.limits.time, j2.limits.pids) == (256 << 20, 5.0, 10)
    assert (j2.retries, j2.network, j1.retries, j1.network) == (2, "host", None, None)


def test_jsonl_defaults_apply_to_the_lines_after(tmp_path):
    path = write(tmp_path, "jobs.jsonl", """
        # a comment, then a job without defaults
        {"args": ["true"]}

        {"defaults": {"limits": {"cpus": 0.5}, "env": ["A=1"]}}
        {"name": "b", "args": ["echo", "b"], "env": {"B": 2}}
        {"defaults": {"user": "1000"}}
        {"name": "c", "args": "exit 3", "limits": {"memory": 1048576}}
        """)
    jobs = dict(load_jobs(path))
    assert list(jobs) == ["job-1", "b", "c"]
    assert jobs["job-1"].limits.cpus is None and jobs["job-1"].env == {}
    assert jobs["b"].limits.cpus == 0.5 and jobs["b"].env == {"A": "1", "B": "2"}
    assert jobs["c"].user == (1000, 1000) and jobs["c"].limits.cpus is None
    assert jobs["c"].args == ["/bin/sh", "-c", "exit 3"] and jobs["c"].limits.memory == 1 << 20


def test_root_and_bundle_relative_to_the_file(tmp_path):
    (tmp_path / "rootfs").mkdir()
    path = write(tmp_path, "j.toml", """
        [defaults]
        root = "rootfs"
        keep = true
        [[job]]
        args = ["true"]
        """)
    [(_, job)] = load_jobs(path)
    assert job.root == str(tmp_path / "rootfs") and job.keep


def test_format_detection():
    assert file_format("x.toml", "{") == "toml"
    assert file_format("x.jsonl", "[[job]]") == "jsonl"
    assert file_format("jobs", '\n# c\n{"args": ["true"]}') == "jsonl"
    assert file_format("jobs", "[[job]]\nargs = ['true']") == "toml"


@pytest.mark.parametrize("text, message", [
    ('{"args": ["true"]}\n{"args": ["x"], "limits": {"memory": "12Q"}}\n',
     "j.jsonl line 2: limits.memory: '12Q' is not a size (use 512M, 1G or bytes)"),
    ('{"args": ["true"]}\n\n{"args": ["true"],\n',
     "j.jsonl line 3: invalid JSON at column"),
    ('["true"]\n', "j.jsonl line 1: must be a JSON object"),
    ('{"defaults": {"limits": {"time": "soon"}}}\n{"args": ["true"]}\n',
     "j.jsonl line 1: defaults.limits.time: 'soon' is not a duration"),
    ('{"defaults": {"name": "x"}}\n', "j.jsonl line 1: defaults.name: a name belongs to one job"),
    ('{"defaults": {}, "args": ["x"]}\n', "j.jsonl line 1: defaults: a defaults line is"),
    ('{"args": ["true"], "colour": "red"}\n', "j.jsonl line 1: colour: unknown field"),
    ('{"args": ["true"], "name": "a b"}\n', "j.jsonl line 1: name: 'a b' is not a job name"),
    ('{"args": ["true"], "name": "a"}\n{"args": ["true"], "name": "a"}\n',
     "j.jsonl line 2: name: 'a' is already taken (line 1)"),
    ('{"args": ["true"], "timeout": "1s", "limits": {"time": 2}}\n',
     "j.jsonl line 1: timeout: give timeout or limits.time, not both"),
    ('{"args": ["true"], "mounts": ["missing:/m"]}\n', "j.jsonl line 1: mounts[0].source: "),
    ('{"args": ["true"], "user": "root"}\n', "j.jsonl line 1: user: 'root' is not uid"),
    ('{"name": "x"}\n', "j.jsonl line 1: args: a command is needed"),
    ("\n# nothing\n", "j.jsonl: no jobs"),
])
def test_jsonl_errors_name_line_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_jobs(write(tmp_path, "j.jsonl", text))
    assert str(err.value).startswith(os.path.join(str(tmp_path), message)), str(err.value)


@pytest.mark.parametrize("text, message", [
    ('[[job]]\nargs = ["true"]\n[[job]]\nname = "two"\nargs = ["x"]\nlimits = { cpus = -1 }\n',
     "j.toml job 2 (two): limits.cpus: -1 is not a number of CPUs"),
    ('[[job]]\nargs = ["true"]\n[[job]]\nargs = ["x"]\nhostname = "no way"\n',
     "j.toml job 2: hostname: 'no way' is not a host name"),
    ('[defaults]\nlimits = { memory = "lots" }\n[[job]]\nargs = ["true"]\n',
     "j.toml defaults: limits.memory: 'lots' is not a size"),
    ('[[job]]\nargs = ["true"\n', "j.toml: invalid TOML: "),
    ('[jobs]\nargs = ["true"]\n', "j.toml: jobs: unknown table"),
    ('job = "x"\n', "j.toml: job: must be an array of tables"),
    ('[[job]]\nargs = ["true"]\nkeep = true\n',
     "j.toml job 1: keep: only a directory root has a layer to keep"),
    ('[[job]]\nargs = ["true"]\nretries = "twice"\n',
     "j.toml job 1: retries: 'twice' is not a count"),
    ('[[job]]\nname = "a"\nargs = ["true"]\n[[job]]\nname = "a"\nargs = ["true"]\n',
     "j.toml job 2 (a): name: 'a' is already taken (job 1 (a))"),
])
def test_toml_errors_name_job_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_jobs(write(tmp_path, "j.toml", text))
    assert str(err.value).startswith(os.path.join(str(tmp_path), message)), str(err.value)


def test_bridge_network_fields_pass_through_and_are_checked_by_name():
    [(_, job)] = parse_jobs('{"args": ["true"], "network": "bridge", "ports": ["80:80"]}',
                            "jsonl")
    assert (job.bridge, job.ports) == ("corral0", ("80:80/tcp",))
    with pytest.raises(ConfigError, match="jobs line 1: ports: host port 80/tcp is given"):
        parse_jobs('{"args": ["true"], "network": "bridge", "ports": ["80:80", "80:1"]}',
                   "jsonl")


def test_unreadable_file_and_bad_encoding(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_jobs(str(tmp_path / "missing.toml"))
    (tmp_path / "bin.jsonl").write_bytes(b'{"args": ["\xff"]}\n')
    with pytest.raises(ConfigError, match="invalid UTF-8 at byte 11"):
        load_jobs(str(tmp_path / "bin.jsonl"))
