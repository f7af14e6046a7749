"""corral.Client (anyio: each test on asyncio and on trio) against a real `corral supervise`,
and corral.Supervisor (the engine embedded in trio)."""

from __future__ import annotations

import os

import anyio
import pytest
import trio

import corral
from corral.errors import ConfigError, ContainerNotFound, CorralError
from tests.conftest import CGROUP_PARENT, Corral
from tests.supervisor_fixture import Daemon, wait_gone

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture
def daemon(tmp_path, _no_leaks):
    d = Daemon(str(tmp_path / "state")).start()
    yield d
    keeper = d.keeper_pid()
    Corral(d.root).cleanup()
    d.stop()
    wait_gone(keeper)
    import shutil

    shutil.rmtree(os.path.join(d.root, ".supervisor"))


def _listed(d: Daemon) -> list[str]:
    c = d.client()
    try:
        return [s["id"] for s in c.call("list")]
    finally:
        c.close()


async def test_run_a_job_on_the_host_root(daemon):
    async with corral.Client(daemon.socket) as client:
        c = await client.run(corral.Job(["python3", "-c", "import os; print(os.getuid())"],
                                        limits={"memory": "256M"}))
        result = await c.result()
        assert (result.exit_status, result.stdout, result.error) == (0, "0\n", None)
        assert result.peak_memory and result.peak_memory > 0
        assert result.ok
        await c.delete()
        assert _listed(daemon) == []


async def test_map_with_limit_failures_and_names(daemon):
    jobs = [(f"n{i}", corral.Job(["sh", "-c", f"echo {i}; exit {i % 3}"])) for i in range(9)]
    jobs.append(("missing", corral.Job(["no-such-command"])))
    async with corral.Client(daemon.socket) as client:
        results = {r.name: r async for r in client.map(jobs, limit=3)}
    assert set(results) == {f"n{i}" for i in range(9)} | {"missing"}
    for i in range(9):
        r = results[f"n{i}"]
        assert (r.exit_status, r.stdout) == (i % 3, f"{i}\n")
    assert "executable file not found" in results["missing"].error
    assert results["missing"].exit_status is None
    assert _listed(daemon) == []


async def test_handle_exec_stats_logs_and_kill(daemon):
    async with corral.Client(daemon.socket) as client:
        c = await client.run(corral.Job(["sh", "-c", "echo started; exec sleep 100"],
                                        limits={"pids": 20}))
        got = await c.exec(["sh", "-c", "echo $((6*7))"])
        assert (got.exit_status, got.stdout) == (0, "42\n")
        stats = await c.stats()
        assert stats["pids"]["limit"] == 20
        async for stream, text in c.logs(follow=True):
            assert (stream, text) == ("stdout", "started\n")
            break  # leaving a followed stream early cancels it on the daemon's side
        await c.kill("KILL")
        assert await c.wait() == 137
        assert (await c.state())["status"] == "stopped"


async def test_leaving_the_session_removes_every_container(daemon):
    with anyio.move_on_after(1.5):
        async with corral.Client(daemon.socket) as client:
            await client.run(corral.Job(["sleep", "100"]))
            async for _ in client.map([corral.Job(["sleep", "100"]) for _ in range(4)], limit=2):
                pass
    assert _listed(daemon) == []
    jobs = os.path.join(daemon.root, ".supervisor", "jobs")  # host-root jobs need none
    assert not os.path.exists(jobs) or not os.listdir(jobs)


async def test_time_limit_and_events(daemon):
    async with corral.Client(daemon.socket) as client:
        seen = []

        async def watch():
            async for event in client.events():
                seen.append((event["type"], event["id"]))
                if event["type"] == "deleted":
                    return

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await anyio.sleep(0.1)
            c = await client.run(corral.Job(["sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.05; done"],
                                            limits={"time": "0.3s"}))
            result = await c.result()
            await c.delete()
        assert result.timed_out and result.exit_status == 9
        kinds = [k for k, cid in seen if cid == c.id]
        assert kinds == ["created", "started", "timeout", "exited", "deleted"], kinds


async def test_errors_callers_can_catch(daemon, tmp_path):
    with pytest.raises(CorralError, match="cannot reach corral supervise"):
        async with corral.Client(str(tmp_path / "nothing.sock")):
            pass
    async with corral.Client(daemon.socket) as client:
        with pytest.raises(ConfigError, match="mounts"):
            await client.run(corral.Job(["true"], mounts=[{"source": str(tmp_path / "none"),
                                                          "destination": "/x"}]))
        c = await client.run(corral.Job(["true"]))
        await c.delete()
        with pytest.raises(ContainerNotFound):
            await c.state()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_embedded_supervisor(tmp_path, _no_leaks, anyio_backend):
    root = str(tmp_path / "state")
    async with corral.Supervisor(root, cgroup_parent=CGROUP_PARENT) as sup:
        c = await sup.run(corral.Job(["sh", "-c", "echo hi; exit 3"]))
        assert (await c.result()).stdout == "hi\n"
        assert await c.wait() == 3
        results = sorted([r.exit_status async for r in sup.map(
            [corral.Job(["sh", "-c", f"exit {i}"]) for i in range(5)], limit=2)])
        assert results == [0, 1, 2, 3, 4]
        await sup.run(corral.Job(["sleep", "100"]))  # left running: the session deletes it
    assert not os.path.exists(root) or not os.listdir(root)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_embedded_supervisor_cancelled_mid_creation(tmp_path, _no_leaks, anyio_backend):
    root = str(tmp_path / "state")
    for delay in (0.0, 0.01, 0.05, 0.2):
        with trio.move_on_after(delay):
            async with corral.Supervisor(root, cgroup_parent=CGROUP_PARENT) as sup:
                async for _ in sup.map([corral.Job(["sleep", "100"]) for _ in range(6)], limit=3):
                    pass
    assert not os.path.exists(root) or not os.listdir(root)
