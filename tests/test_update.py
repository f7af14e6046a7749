"""corral update: runc's flags and --resources JSON, written into the real cgroup."""

from __future__ import annotations

import json
import os

import pytest

from corral.cli import args as cliargs
from corral.errors import ConfigError, NotSupportedError
from corral.oci.config import KERNEL_MEMORY_IGNORED
from corral.runtime import update as update_mod


def _cgroup_file(corral, cid, controller, v1_name, v2_name):
    with open(os.path.join(corral.root, cid, "state.json")) as f:
        cgroup = json.load(f)["cgroup"]
    if cgroup["mode"] == "v2":
        path = os.path.join(cgroup["paths"]["unified"], v2_name)
    else:
        key = next(k for k in cgroup["paths"] if controller in k.split(","))
        path = os.path.join(cgroup["paths"][key], v1_name)
    with open(path) as f:
        return f.read().strip()


def _memory(corral, cid):
    return _cgroup_file(corral, cid, "memory", "memory.limit_in_bytes", "memory.max")


def _pids(corral, cid):
    return _cgroup_file(corral, cid, "pids", "pids.max", "pids.max")


def test_ram_in_bytes():
    cases = {"64m": 64 << 20, "1g": 1 << 30, "1G": 1 << 30, "512k": 512 << 10,
             "100": 100, "100b": 100, "1.5g": 3 << 29, "2MiB": 2 << 20, "10 MB": 10 << 20,
             "-1": -1}
    for text, want in cases.items():
        assert update_mod.ram_in_bytes(text, "--memory") == want, text
    for bad in ("", "12x", "m", "1..5m", "-5m", ".5m", "1e3"):
        with pytest.raises(ConfigError, match="^--memory: invalid size"):
            update_mod.ram_in_bytes(bad, "--memory")


def test_grammar():
    args, cmd = cliargs.parse(["update", "--memory", "64m", "--cpu-shares", "512", "-r", "-",
                               "c1"])
    assert (cmd.name, args.memory, args.cpu_shares, args.resources, args.id) == (
        "update", "64m", "512", "-", "c1")
    args, _ = cliargs.parse(["update", "--cpu-share=100", "c1"])  # runc's own spelling
    assert args.cpu_shares == "100"


def _args(**given):
    values = {o.dest: o.default for o in cliargs.COMMANDS["update"].opts}
    values.update(given)
    return cliargs.Args(**values)


def test_build_flags_override_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"memory": {"limit": 1 << 25, "reservation": 1 << 24},
                                "pids": {"limit": 10}, "devices": [{"allow": False}]}))
    res, warnings = update_mod.build(_args(resources=str(path), memory="48m",
                                           cpu_quota="-1", kernel_memory="5m"))
    assert res.memory.limit == 48 << 20 and res.memory.reservation == 1 << 24
    assert res.pids_limit == 10 and res.cpu.quota == -1
    assert warnings == [f"linux.resources: {KERNEL_MEMORY_IGNORED}"]


@pytest.mark.parametrize("given, flag", [
    ({"memory": "12x"}, "--memory"), ({"cpu_shares": "1"}, "--cpu-shares"),
    ({"pids_limit": "abc"}, "--pids-limit"), ({"cpu_period": "-5"}, "--cpu-period"),
    ({"cpu_period": "10"}, "--cpu-period"), ({"cpuset_cpus": "0-"}, "--cpuset-cpus"),
    ({"blkio_weight": "5"}, "--blkio-weight"), ({"memory_swap": "1q"}, "--memory-swap"),
])
def test_bad_flag_values_name_the_flag(given, flag):
    with pytest.raises(ConfigError) as exc:
        update_mod.build(_args(**given))
    assert str(exc.value).startswith(flag + ": ")


@pytest.mark.parametrize("data, field", [
    ({"memroy": {}}, "linux.resources.memroy"),
    ({"memory": {"limt": 5}}, "linux.resources.memory.limt"),
    ({"cpu": {"shares": 512, "share": 1}}, "linux.resources.cpu.share"),
    ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "wieght": 10}]}},
     "linux.resources.blockIO.weightDevice[0].wieght"),
    ({"memory": {"limit": "64m"}}, "linux.resources.memory.limit"),
])
def test_unknown_or_bad_json_fields_are_named(tmp_path, data, field):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as exc:
        update_mod.build(_args(resources=str(path)))
    assert str(exc.value).startswith(field + ": ")


def test_rdt_refused():
    with pytest.raises(NotSupportedError, match="not supported yet"):
        update_mod.build(_args(l3_cache_schema="L3:0=ff"))


def test_update_memory_and_pids(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    corral("update", "--memory", "64m", "--pids-limit", "20", b.id)
    assert _memory(corral, b.id) == str(64 << 20)
    assert _pids(corral, b.id) == "20"
    corral("update", "--memory=96M", b.id)
    assert _memory(corral, b.id) == str(96 << 20)
    assert _pids(corral, b.id) == "20"  # what was not given stays


def test_update_resources_from_stdin(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("create", "-b", b.path, b.id)  # a created container can be updated too
    body = json.dumps({"memory": {"limit": 50 << 20}, "pids": {"limit": 33},
                       "cpu": {"shares": 512}})
    corral("update", "--resources", "-", b.id, input=body.encode())
    assert _memory(corral, b.id) == str(50 << 20)
    assert _pids(corral, b.id) == "33"
    corral("update", "-r", "-", "--pids-limit", "44", b.id, input=body.encode())
    assert _pids(corral, b.id) == "44"  # the flag wins over the JSON


def test_update_paused_and_refusals(corral, make_bundle):
    b = make_bundle(["sleep", "30"])
    corral("run", "-d", "-b", b.path, b.id)
    corral("pause", b.id)
    corral("update", "--pids-limit", "7", b.id)
    assert _pids(corral, b.id) == "7"
    corral("resume", b.id)
    proc = corral("update", "--memory", "1x", b.id, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("corral: --memory: invalid size")
    proc = corral("update", "-r", "-", b.id, input=b'{"pids": {"limit": 5}, "bogus": 1}',
                  check=False)
    assert proc.returncode == 1 and "linux.resources.bogus: unknown field" in proc.stderr
    proc = corral("update", "-r", "-", b.id, input=b"{nope", check=False)
    assert proc.returncode == 1 and "--resources: invalid JSON" in proc.stderr
    pid = corral.state(b.id)["pid"]
    corral("kill", b.id, "KILL")
    os.waitpid(pid, 0)
    proc = corral("update", "--pids-limit", "9", b.id, check=False)
    assert proc.returncode == 1 and "container not running" in proc.stderr
    proc = corral("update", "--pids-limit", "9", "nope", check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
