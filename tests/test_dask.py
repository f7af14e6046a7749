"""Batches beyond one machine (issue 16): a Dask scheduler and two `dask worker` processes on
this machine, each worker the node of its own `corral supervise` (own state root, own cgroup
parent under the suite's), driven by `corral batch --dask` and by `corral.dask`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import distributed
import pytest

import corral.dask
from corral.jobs.job import Job
from tests.conftest import CGROUP_PARENT, CORRAL, remove_cgroups, run_capturing
from tests.supervisor_fixture import Daemon, wait_gone

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
SLOTS = 2  # per node


class Node:
    """One machine's part: its daemon and the Dask worker that talks to it."""

    def __init__(self, name: str, base, scheduler_file: str) -> None:
        self.name = name
        self.dir = base / name
        self.dir.mkdir()
        self.cgroup = f"{CGROUP_PARENT}/{name}"
        self.daemon = Daemon(str(self.dir / "state"), cgroup_parent=self.cgroup).start()
        self.scheduler_file = scheduler_file
        self.worker: subprocess.Popen | None = None

    def start_worker(self) -> None:
        """node-a declares its slots, node-b gets its --nthreads as slots."""
        log = open(self.dir / "worker.log", "ab")
        slots = ["--resources", f"{corral.dask.SLOTS}={SLOTS}"] if self.name == "node-a" else []
        self.worker = subprocess.Popen(
            [DASK, "worker", "--scheduler-file", self.scheduler_file, "--name", self.name,
             "--nthreads", str(SLOTS), *slots, "--no-nanny", "--no-dashboard",
             "--local-directory", str(self.dir / "dask"), "--preload", "corral.dask.node"],
            stdout=log, stderr=log, cwd=self.dir,
            env={**os.environ, "CORRAL_SOCKET": self.daemon.socket})
        log.close()

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()

    def containers(self) -> list[str]:
        client = self.daemon.client()
        try:
            return [c["id"] for c in client.call("list")]
        finally:
            client.close()

    def close(self) -> None:
        self.stop_worker()
        keeper = self.daemon.keeper_pid()
        left = self.containers()
        if self.daemon.proc.poll() is None:
            self.daemon.stop()
        wait_gone(keeper)
        remove_cgroups(self.cgroup)
        assert not left, f"{self.name}'s daemon still has containers {left}"


class Cluster:
    def __init__(self, base) -> None:
        self.base = base
        self.scheduler_file = str(base / "scheduler.json")
        log = open(base / "scheduler.log", "ab")
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", self.scheduler_file], stdout=log, stderr=log, cwd=base)
        log.close()
        self.nodes: list[Node] = []
        self.client: distributed.Client | None = None

    def start(self, names=("node-a", "node-b")) -> Cluster:
        for name in names:
            self.nodes.append(Node(name, self.base, self.scheduler_file))
        deadline = time.monotonic() + 60
        while not os.path.exists(self.scheduler_file):
            assert time.monotonic() < deadline, (self.base / "scheduler.log").read_text()
            time.sleep(0.1)
        self.address = json.loads(open(self.scheduler_file).read())["address"]
        for node in self.nodes:
            node.start_worker()
        self.client = distributed.Client(scheduler_file=self.scheduler_file, timeout=60)
        self.wait_for_slots(SLOTS * len(self.nodes))
        return self

    def slots(self) -> dict[str, float]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return {w["name"]: w["resources"].get(corral.dask.SLOTS, 0) for w in workers.values()}

    def wait_for_slots(self, total: int) -> None:
        deadline = time.monotonic() + 60
        while sum(self.slots().values()) != total:
            if time.monotonic() > deadline:
                logs = {n.name: [line for line in (n.dir / "worker.log").read_text().splitlines()
                                 if "corral" in line or "Error" in line] for n in self.nodes}
                raise AssertionError(f"slots {self.slots()}; the workers said {logs}")
            time.sleep(0.1)

    def addresses(self) -> dict[str, str]:
        """worker name -> address."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return {w["name"]: address for address, w in workers.items()}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        errors = []
        for node in self.nodes:
            try:
                node.close()
            except AssertionError as exc:
                errors.append(str(exc))
        self.scheduler.terminate()
        self.scheduler.wait(30)
        assert not errors, errors


@pytest.fixture
def cluster(tmp_path, _no_leaks):
    c = Cluster(tmp_path)
    try:
        yield c.start()
    finally:
        c.close()


def batch(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_capturing([*CORRAL, "--root", str(cluster.base / "submitter"), "batch",
                          "--dask", cluster.address, *args], timeout=timeout)


def write_jobs(path, jobs: list[dict]) -> str:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return str(path)


def summary(results) -> dict:
    return json.loads((results / "summary.json").read_text())


def test_batch_spreads_over_both_nodes_and_never_overfills_one(cluster, tmp_path):
    """Both nodes run jobs, neither more than its slots at once (each job notes when it
    ran); retries, timeouts, errors and the --results layout are a local batch's."""
    marks = tmp_path / "marks"
    marks.mkdir()
    jobs = [{"name": f"ok-{i}", "mounts": [f"{marks}:/marks:rw"],
             "args": f"date +%s.%N > /marks/{i}.start; sleep 0.3; echo out-{i}; "
                     f"date +%s.%N > /marks/{i}.end"} for i in range(16)]
    jobs += [{"name": "bad", "args": "echo no >&2; exit 4"},
             {"name": "missing", "args": ["/no/such/command"]},
             {"name": "slow", "args": ["sleep", "30"], "timeout": "0.3s", "retries": 0}]
    results = tmp_path / "results"
    proc = batch(cluster, "--retries", "1", "--results", str(results),
                 write_jobs(tmp_path / "jobs.jsonl", jobs))
    assert proc.returncode == 3, proc.stderr
    got = summary(results)
    assert got["engine"] == "dask" and got["scheduler"] == cluster.address
    assert got["parallel"] == 2 * SLOTS  # the cluster's slots
    assert got["counts"] == {"total": 19, "succeeded": 16, "failed": 3, "exit_status": 1,
                             "timed_out": 1, "error": 1, "retried": 1, "stopped": 0,
                             "not_run": 0}
    by_name = {j["name"]: j for j in got["jobs"]}
    assert (by_name["bad"]["reason"], by_name["bad"]["attempts"]) == ("exit_status", 2)
    assert by_name["missing"]["attempts"] == 1 and "/no/such/command" in by_name["missing"]["error"]
    assert by_name["slow"]["timed_out"] and by_name["slow"]["exit_status"] == 137
    addresses = cluster.addresses()
    nodes = {by_name[f"ok-{i}"]["node"] for i in range(16)}
    assert nodes == set(addresses.values()), nodes  # both nodes ran jobs
    for i in range(16):
        assert (results / f"ok-{i}" / "stdout").read_text() == f"out-{i}\n"
    assert (results / "bad" / "stderr").read_text() == "no\n"
    one = json.loads((results / "bad" / "result.json").read_text())
    assert one["node"] in nodes and one["earlier_attempts"][0]["exit_status"] == 4
    # Never more jobs on a node at once than its slots.
    for node in nodes:
        spans = [(float((marks / f"{i}.start").read_text()),
                  float((marks / f"{i}.end").read_text()))
                 for i in range(16) if by_name[f"ok-{i}"]["node"] == node]
        most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
        assert most <= SLOTS, (node, spans)
    assert "19 jobs in" in proc.stdout and "16 succeeded, 3 failed" in proc.stdout


def test_python_api_submit_map_and_cancel(cluster):
    """corral.dask.map gives futures of JobResults; cancelling one stops its job and its
    node deletes the container."""
    futures = corral.dask.map([Job(["sh", "-c", f"echo {i}"]) for i in range(4)] +
                              [("fails", Job(["sh", "-c", "exit 3"]))], client=cluster.client)
    results = [f.result(timeout=60) for f in futures]
    assert [r.stdout for r in results[:4]] == ["0\n", "1\n", "2\n", "3\n"]
    assert results[4].name == "fails" and results[4].exit_status == 3 and not results[4].ok
    assert all(r.node in cluster.addresses().values() for r in results)
    long = corral.dask.submit(Job(["sleep", "60"]), name="long", client=cluster.client)
    deadline = time.monotonic() + 60
    while not any(n.containers() for n in cluster.nodes):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    long.cancel()
    deadline = time.monotonic() + 30
    while any(n.containers() for n in cluster.nodes):
        assert time.monotonic() < deadline, [n.containers() for n in cluster.nodes]
        time.sleep(0.1)


@pytest.mark.parametrize("retries", [1, 0])
def test_worker_killed_mid_batch(cluster, tmp_path, retries):
    """SIGKILL of one worker while its jobs run: its node's daemon deletes them (the
    worker's connection closed) and each is retried on the other node, or, without tries
    left, reported failed naming the lost worker; never lost silently."""
    jobs = [{"name": f"long-{i}", "args": ["sleep", "2"]} for i in range(2 * SLOTS)]
    results = tmp_path / "results"
    out = tmp_path / "out"
    victim = cluster.nodes[0]
    victim_address = cluster.addresses()[victim.name]
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(
            [*CORRAL, "--root", str(tmp_path / "submitter"), "batch", "--dask",
             cluster.address, "--retries", str(retries), "--results", str(results),
             write_jobs(tmp_path / "jobs.jsonl", jobs)], stdout=stdout, stderr=stdout)
    try:
        deadline = time.monotonic() + 60
        while len(victim.containers()) < SLOTS:
            assert time.monotonic() < deadline and proc.poll() is None, out.read_text()
            time.sleep(0.05)
        os.kill(victim.worker.pid, signal.SIGKILL)
        victim.worker.wait()
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 30
    while victim.containers():  # gone with the worker's connection
        assert time.monotonic() < deadline, victim.containers()
        time.sleep(0.1)
    got = summary(results)
    survivor = cluster.addresses()[cluster.nodes[1].name]
    if retries:
        assert code == 0, out.read_text()
        assert got["counts"]["succeeded"] == len(jobs) and got["counts"]["retried"] == SLOTS
        assert {j["node"] for j in got["jobs"]} == {survivor}
        for job in (j for j in got["jobs"] if j["attempts"] == 2):
            record = json.loads((results / job["name"] / "result.json").read_text())
            assert record["earlier_attempts"][0]["error"] == (
                f"its Dask worker {victim_address} was lost mid-job"), record
    else:
        assert code == 3, out.read_text()
        lost = [j for j in got["jobs"] if j["status"] == "failed"]
        assert len(lost) == SLOTS and got["counts"]["succeeded"] == SLOTS, got["jobs"]
        for job in lost:
            assert job["reason"] == "error" and job["attempts"] == 1, job
            assert job["error"] == f"its Dask worker {victim_address} was lost mid-job"
        assert {j["node"] for j in got["jobs"] if j["status"] == "succeeded"} == {survivor}
        assert "was lost mid-job" in out.read_text()


def test_ctrl_c_cancels_every_task_and_nodes_delete_theirs(cluster, tmp_path):
    """SIGINT while both nodes run jobs: exit 130, and by then every node has deleted the
    containers it started (the submitter waits for each node to say so).  SIGKILL of the
    submitter: the nodes delete theirs all the same."""
    jobs = [{"name": f"long-{i}", "args": ["sleep", "60"]} for i in range(3 * SLOTS)]
    results = tmp_path / "results"
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(
            [*CORRAL, "--root", str(tmp_path / "submitter"), "batch", "--dask",
             cluster.address, "--results", str(results),
             write_jobs(tmp_path / "jobs.jsonl", jobs)], stdout=stdout, stderr=stdout)
    try:
        deadline = time.monotonic() + 60
        while [len(n.containers()) for n in cluster.nodes] != [SLOTS, SLOTS]:
            assert time.monotonic() < deadline and proc.poll() is None, out.read_text()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, out.read_text()
    assert [n.containers() for n in cluster.nodes] == [[], []]
    got = summary(results)
    assert got["interrupted"] == "SIGINT"
    assert got["counts"]["stopped"] == 2 * SLOTS and got["counts"]["succeeded"] == 0
    # A submitter killed outright: the scheduler drops its tasks, the nodes stop them.
    proc = subprocess.Popen([*CORRAL, "--root", str(tmp_path / "submitter"), "batch", "-q",
                             "--dask", cluster.address, str(tmp_path / "jobs.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sum(len(n.containers()) for n in cluster.nodes) < 2 * SLOTS:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while any(n.containers() for n in cluster.nodes):
        assert time.monotonic() < deadline, [n.containers() for n in cluster.nodes]
        time.sleep(0.1)
    # The cluster took no harm: a job runs there afterwards.
    assert corral.dask.submit(Job(["true"]), client=cluster.client).result(60).ok


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_input(tmp_path, _no_leaks):
    """An unreachable scheduler, a cluster whose worker cannot reach its daemon (so it has
    no slots) and clashing flags: one clear error line each, exit 1."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"args": ["true"]}])
    root = str(tmp_path / "submitter")
    address = f"tcp://127.0.0.1:{_free_port()}"
    proc = run_capturing([*CORRAL, "--root", root, "batch", "--dask", address, jobs])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"corral: cannot reach the Dask scheduler at {address}: " +
        proc.stderr.split(f"{address}: ", 1)[1].strip()], proc.stderr
    for flags, field in ((["--socket", "/x.sock"], "--dask"),
                         (["--cgroup-parent", "x"], "--cgroup-parent")):
        proc = run_capturing([*CORRAL, "--root", root, "batch", "--dask", address, *flags,
                              jobs])
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert field in proc.stderr
    # A scheduler whose one worker's daemon does not answer: the worker declares no slots.
    bare = Cluster(tmp_path)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(bare.scheduler_file):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        address = json.loads(open(bare.scheduler_file).read())["address"]
        log = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen(
            [DASK, "worker", address, "--nthreads", "2", "--no-nanny", "--no-dashboard",
             "--local-directory", str(tmp_path / "dask"), "--preload", "corral.dask.node"],
            stdout=log, stderr=log, cwd=tmp_path,
            env={**os.environ, "CORRAL_SOCKET": str(tmp_path / "nobody.sock")})
        log.close()
        bare.client = distributed.Client(address, timeout=60)
        bare.client.wait_for_workers(1, timeout=60)
        assert list(bare.slots().values()) == [0]  # one worker, no slots
        assert f"cannot reach corral supervise at {tmp_path / 'nobody.sock'}" in (
            tmp_path / "worker.log").read_text()
        proc = run_capturing([*CORRAL, "--root", root, "batch", "--dask", address, jobs])
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            f"corral: no worker of the Dask cluster at {address} has corral job slots "
            "(start workers with `dask worker ADDRESS --preload corral.dask.node`)"]
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        bare.close()


def test_bench_dask_runs_and_leaves_nothing(_no_leaks):
    """bench/dask.py (docs/performance.md) on a few jobs: both batches run, the overhead
    line is printed, and its workspace, cgroups and processes are gone."""
    import glob

    before = set(glob.glob("/tmp/corral-bench-*"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "bench.dask", "6", "--parallel", "2"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "corral batch (local, embedded engine)" in out and "overhead per job" in out, out
    assert "--dask (2 workers x 1 slots)" in out, out
    assert not glob.glob(f"/sys/fs/cgroup/*/corral-bench-{proc.pid}")
    assert set(glob.glob("/tmp/corral-bench-*")) <= before
