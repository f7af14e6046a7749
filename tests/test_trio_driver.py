"""The trio driver: many creations at once through the keeper, deadlines and cancellation."""

import json
import os

import pytest
import trio

from corral.errors import CorralError
from corral.runtime.containers import Container
from corral.runtime.prepare import prepare
from corral.runtime.trio_driver import create_container
from corral.supervisor.keeper_handle import open_embedded_keeper


def _stdio(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    null = os.open("/dev/null", os.O_RDONLY)
    return null, fd


async def test_concurrent_creations(corral, make_bundle, tmp_path):
    bundles = [make_bundle(["sh", "-c", f"echo job {i}; exit {i}"]) for i in range(8)]
    results = {}
    async with open_embedded_keeper() as keeper:

        async def one(i, b):
            null, out = _stdio(str(tmp_path / f"out{i}"))
            try:
                prepared = prepare(corral.root, b.id, b.path)
                pid = await create_container(prepared, keeper, stdio=(null, out, out))
            finally:
                os.close(null)
                os.close(out)
            container = Container(prepared.state_dir, prepared.record)
            assert container.status() == "created"
            await trio.to_thread.run_sync(container.start)
            results[i] = await keeper.wait(pid)
            container.delete()

        async with trio.open_nursery() as nursery:
            for i, b in enumerate(bundles):
                nursery.start_soon(one, i, b)
    assert results == {i: i for i in range(8)}
    for i in range(8):
        assert (tmp_path / f"out{i}").read_text() == f"job {i}\n"


async def test_child_error_is_raised_and_undone(corral, make_bundle):
    b = make_bundle(["no-such-program"])
    async with open_embedded_keeper() as keeper:
        prepared = prepare(corral.root, b.id, b.path)
        with pytest.raises(CorralError, match="executable file not found"):
            await create_container(prepared, keeper)
    assert not os.path.exists(os.path.join(corral.root, b.id))


async def test_cancellation_undoes_everything(corral, make_bundle):
    """Cancelled while the child is mid-way (the deadline passes before the keeper's child
    can answer): the processes are killed and the host side removed."""
    bundles = [make_bundle(["true"]) for _ in range(4)]
    async with open_embedded_keeper() as keeper:
        for delay in (0, 0.001, 0.005, 0.02):
            b = bundles.pop()
            prepared = prepare(corral.root, b.id, b.path)
            with trio.move_on_after(delay):
                pid = await create_container(prepared, keeper)
                # Finished before the deadline: clean it up the normal way.
                Container(prepared.state_dir, prepared.record).delete(force=True)
                await keeper.wait(pid)
            assert not os.path.exists(prepared.state_dir.path)
        await trio.sleep(0.2)  # let the keeper reap the killed children


async def test_deadline_is_a_clear_error(corral, make_bundle):
    b = make_bundle(["true"])
    async with open_embedded_keeper() as keeper:
        prepared = prepare(corral.root, b.id, b.path)
        with pytest.raises(CorralError, match="timed out"):
            await create_container(prepared, keeper, deadline=0.0001)
        await trio.sleep(0.2)
    assert not os.path.exists(prepared.state_dir.path)


async def test_failing_create_runtime_hook_is_undone(corral, make_bundle, tmp_path):
    """The supervisor runs the runtime's hooks off the event loop; a failure undoes all."""
    b = make_bundle(["true"])
    b.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {tmp_path}/hookstate; exit 5"]}]}
    b.write()
    async with open_embedded_keeper() as keeper:
        prepared = prepare(corral.root, b.id, b.path)
        with pytest.raises(CorralError, match="createRuntime hook #0 /bin/sh: exit status 5"):
            await create_container(prepared, keeper)
        await trio.sleep(0.2)
    assert json.loads((tmp_path / "hookstate").read_text())["status"] == "created"  # crun's
    assert not os.path.exists(prepared.state_dir.path)
