"""A real Dask cluster: `dask scheduler` and two `dask worker` processes (127.0.0.1, their own
working directory), ingest -> figures -> link_concepts through MEDCONCEPT_DASK_ADDRESS from a
third folder with relative locations, every output byte compared with a local-Dask run; one
worker is SIGKILLed while it runs a figures task and the stage still completes, identically.

Who recovers the killed worker's task: Dask's scheduler, which reschedules a task whose
worker died (and recomputes results held only there), up to `distributed.scheduler.
allowed-failures` deaths per task. Prefect task retries cannot: they rerun a task whose
function raised, inside the worker process that ran it, and a killed worker raises nothing.
The test checks that the scheduler's remove-worker event lists the killed task, and that
the stage still ends with status 0 and the local bytes.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# 100-150 s alone on two shared cores (a Prefect test server, the sample, six stage runs)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, /proc")]

SMALL_SAMPLE = ["sample.parts=[literature, vocabulary]", "sample.literature.n_articles=6"]
LOCAL_DASK = ["dask.n_workers=1", "dask.processes=false"]
# several tasks per stage, so that both workers get some and a kill strikes mid-stage
TASK_SIZES = ["ingest.packages_per_task=3", "figures.articles_per_task=1", "link_concepts.figures_per_task=8"]
STAGES = ("ingest", "figures", "link_concepts")
KILLED_STAGE, KILLED_TASK = "figures", "figures_shard"
STAGE_TIMEOUT_S = 300
START_TIMEOUT_S = 60


def _stage_overrides(stage: str) -> list[str]:
    """Every location relative to the run folder, as a user would give it: the workers run
    elsewhere, so the flow boundary must make them absolute."""
    return {
        "ingest": ["ingest.source=sample/pmc", "ingest.output_dir=ingest"],
        "figures": ["figures.articles=ingest/articles.parquet", "figures.shards_dir=ingest/shards",
                    "figures.output_dir=figures"],
        "link_concepts": ["link_concepts.figures=figures/figures.parquet", "link_concepts.index_dir=umls_index",
                          "link_concepts.output_dir=link_concepts"],
    }[stage]


def _command(repo_root: Path, stage: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", f"flows.{stage}", "--params", str(repo_root / "params.yaml"),
            *[a for o in [*overrides, *TASK_SIZES] for a in ("-S", o)]]


def _environment(repo_root: Path, address: str | None = None) -> dict:
    """This interpreter's environment (the session's Prefect server included), the
    repository importable from any folder, and the scheduler's address or none."""
    env = {k: v for k, v in os.environ.items() if k != "MEDCONCEPT_DASK_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH")) if p)
    if address:
        env["MEDCONCEPT_DASK_ADDRESS"] = address
    return env


def _run(command: list[str], cwd: Path, env: dict) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=STAGE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]


def _tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (timing.json excepted: it holds seconds)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "timing.json"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A scheduler and workers as separate process groups in `workdir`, stopped by stop()."""

    def __init__(self, workdir: Path, env: dict, n_workers: int):
        self.workdir, self.env, self.n_workers = workdir, env, n_workers
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.processes: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}   # worker address -> its process

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen([sys.executable, "-m", *args], cwd=self.workdir, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def start(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self._start("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port,
                                  "--no-dashboard"])
        for index in range(self.n_workers):
            worker_port = _free_port()
            # no nanny: a killed worker stays dead, as a lost node would
            self.workers[f"tcp://127.0.0.1:{worker_port}"] = self._start(f"worker-{index}", [
                "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--worker-port",
                str(worker_port), "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{index}"])

    def client(self):
        """A client once every worker has joined."""
        # prefect-dask's own distributed.Client subclass (the declared dependency); not the
        # process's default client, which prefect-dask would run the local runs on
        from prefect_dask.client import PrefectDaskClient

        client = PrefectDaskClient(self.address, timeout=START_TIMEOUT_S, set_as_default=False)
        client.wait_for_workers(self.n_workers, timeout=START_TIMEOUT_S)
        assert set(client.scheduler_info()["workers"]) == set(self.workers)
        return client

    def kill_worker(self, address: str) -> None:
        os.killpg(self.workers[address].pid, signal.SIGKILL)
        self.workers[address].wait()

    def stop(self) -> list[str]:
        """Stop every process group; what is still alive afterwards."""
        groups = {p.pid for p in self.processes}
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        left = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getpgid(proc.pid) in groups and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:160]}")
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        return left


def _transitions(client) -> int:
    """How many task state changes the scheduler has made: grows when a stage runs there."""
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def _run_killing_a_worker(client, cluster: Cluster, command: list[str], cwd: Path, env: dict) -> tuple[str, str]:
    """Run the stage; SIGKILL one worker as soon as it executes one of the stage's tasks.
    Returns (killed worker, the key of the task it was running)."""
    stage = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        killed = None
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while killed is None and stage.poll() is None and time.monotonic() < deadline:
            for worker, stacks in client.call_stack().items():  # tasks executing right now
                running = [key for key in stacks if KILLED_TASK in str(key)]
                if running:
                    cluster.kill_worker(worker)
                    killed = (worker, running[0])
                    break
            else:
                time.sleep(0.05)
        out, err = stage.communicate(timeout=max(1, deadline - time.monotonic()))
        assert killed, f"no worker ran a {KILLED_TASK} task while the stage ran:\n{err[-2000:]}"
        assert stage.returncode == 0, f"the stage failed after its worker was killed:\n{err[-3000:]}"
        return killed
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)
            stage.wait()


def _local_run(stage: str, overrides: list[str], folder: Path, repo_root: Path, monkeypatch) -> None:
    """The stage in this process on a local threaded Dask cluster, started in `folder`."""
    from flows._stage import run_stage
    from tasks.common.params import load_params

    flow = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
    params = load_params(repo_root / "params.yaml", [*overrides, *TASK_SIZES, *LOCAL_DASK])
    with monkeypatch.context() as m:
        m.chdir(folder)
        run_stage(flow, params)


def test_a_cluster_run_with_a_killed_worker_writes_the_local_bytes(tmp_path, repo_root, monkeypatch):
    inputs, local, remote, workdir = (tmp_path / name for name in ("inputs", "local", "cluster", "workers"))
    for folder in (inputs, local, remote, workdir):
        folder.mkdir()
    sample, umls_index = inputs / "sample", inputs / "umls_index"
    cluster, client = Cluster(workdir, _environment(repo_root), n_workers=2), None
    try:
        cluster.start()  # the processes start while this process makes the inputs
        _local_run("sample", [f"sample.output_dir={sample}", *SMALL_SAMPLE], inputs, repo_root, monkeypatch)
        _local_run("umls_index", [f"umls_index.meta_dir={sample / 'umls' / 'META'}",
                                  f"umls_index.semantic_groups={sample / 'umls' / 'SemGroups.txt'}",
                                  f"umls_index.output_dir={umls_index}"], inputs, repo_root, monkeypatch)
        for run_folder in (local, remote):  # the same relative layout in both run folders
            (run_folder / "sample").symlink_to(sample)
            (run_folder / "umls_index").symlink_to(umls_index)
        client = cluster.client()
        for stage in STAGES:
            overrides = _stage_overrides(stage)
            before = _transitions(client)
            _local_run(stage, overrides, local, repo_root, monkeypatch)
            assert _transitions(client) == before, f"the local {stage} run used the cluster"
            command, env = _command(repo_root, stage, overrides), _environment(repo_root, cluster.address)
            if stage == KILLED_STAGE:
                killed_worker, killed_key = _run_killing_a_worker(client, cluster, command, remote, env)
                assert list(client.scheduler_info()["workers"]) == [w for w in cluster.workers if w != killed_worker]
                # the scheduler saw the task die with its worker and gave it to the other one
                (removed,) = [event for _, event in client.get_events(killed_worker)
                              if event["action"] == "remove-worker"]
                assert killed_key in removed["processing-tasks"] | removed["lost-computed-tasks"]
            else:
                _run(command, remote, env)
            assert _transitions(client) > before, f"{stage} ran no task on the cluster"
            expected = _tree_digest(local / stage)
            assert expected, f"{stage} wrote nothing"
            assert _tree_digest(remote / stage) == expected, f"{stage}: the cluster run wrote other bytes"
    finally:
        if client is not None:
            client.close()
        left = cluster.stop()
    assert not left, "cluster processes still running:\n" + "\n".join(left)
