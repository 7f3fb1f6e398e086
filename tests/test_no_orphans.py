"""SIGKILL of a stage, or of `flows.with_prefect`, leaves none of the processes it started.

Each test starts a real stage (the sample stage, which needs no inputs) as a subprocess
without PREFECT_API_URL, so that it starts its own temporary Prefect server, and with two
Dask worker processes; waits until the server and the workers are up; kills it with
SIGKILL; then waits a bounded time for every descendant recorded before the kill to exit.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the kernel-side kill-with-parent is Linux only"
)

STARTUP_LIMIT_S = 180  # a temporary server and two Dask workers, on two busy cores
EXIT_LIMIT_S = 30
POLL_S = 0.25
DASK_WORKERS = 2


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    """One Prefect home for this module's temporary servers: the database is created once
    (seconds) and shared with no other run."""
    return tmp_path_factory.mktemp("prefect_home")


def _environment(prefect_home) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(prefect_home)
    return env


def _sample_stage_command(tmp_path) -> list[str]:
    return [
        sys.executable, "-m", "flows.sample",
        "-S", f"sample.output_dir={tmp_path / 'sample'}",
        "-S", f"dask.n_workers={DASK_WORKERS}",
        "-S", "dask.processes=true",
    ]


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _is_listening(process: psutil.Process) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in process.net_connections(kind="tcp"))
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


def _descendants(pid: int) -> dict[tuple[int, float], psutil.Process]:
    """(pid, create time) -> process: a pid alone could be reused after the kill."""
    found = {}
    for process in psutil.Process(pid).children(recursive=True):
        try:
            found[(process.pid, process.create_time())] = process
        except psutil.NoSuchProcess:
            pass
    return found


def _wait_until_up(started: subprocess.Popen) -> dict[tuple[int, float], psutil.Process]:
    """The descendants once the Prefect server listens and the Dask workers run."""
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if started.poll() is not None:
            pytest.fail(f"the command exited ({started.returncode}) before it could be killed")
        processes = _descendants(started.pid)
        servers = [p for p in processes.values() if "uvicorn" in _cmdline(p) and _is_listening(p)]
        workers = [p for p in processes.values() if "multiprocessing.spawn" in _cmdline(p)]
        if servers and len(workers) >= DASK_WORKERS:
            return processes
        time.sleep(POLL_S)
    pytest.fail(f"no Prefect server and {DASK_WORKERS} Dask workers within {STARTUP_LIMIT_S} s")


def _still_running(processes: dict[tuple[int, float], psutil.Process]) -> list[str]:
    left = []
    for (pid, created), process in processes.items():
        try:
            alive = process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            left.append(f"{pid}: {_cmdline(process)[:160]}")
    return left


def _kill_and_list_leftovers(started: subprocess.Popen) -> list[str]:
    processes = _wait_until_up(started)
    started.send_signal(signal.SIGKILL)
    started.wait()
    deadline = time.monotonic() + EXIT_LIMIT_S
    try:
        while (left := _still_running(processes)) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return left
    finally:
        for process in processes.values():  # a failing run must not leave them behind either
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def _start(command: list[str], prefect_home, repo_root) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=repo_root, env=_environment(prefect_home),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _leftovers_after_kill(command: list[str], prefect_home, repo_root) -> list[str]:
    started = _start(command, prefect_home, repo_root)
    try:
        return _kill_and_list_leftovers(started)
    finally:
        started.kill()
        started.wait()


def test_killed_stage_leaves_no_server_or_dask_process(tmp_path, prefect_home, repo_root):
    left = _leftovers_after_kill(_sample_stage_command(tmp_path), prefect_home, repo_root)
    assert not left, "still running after SIGKILL of the stage:\n" + "\n".join(left)


def test_killed_with_prefect_leaves_no_descendant(tmp_path, prefect_home, repo_root):
    # The shell between the wrapper and the stage stands for dvc's: the stage is a
    # grandchild, so only the wrapper's temporary server ties it to the wrapper.
    stage = shlex.join(_sample_stage_command(tmp_path))
    command = [sys.executable, "-m", "flows.with_prefect", "sh", "-c", f"{stage}; exit $?"]
    left = _leftovers_after_kill(command, prefect_home, repo_root)
    assert not left, "still running after SIGKILL of flows.with_prefect:\n" + "\n".join(left)


def test_url_of_an_exited_owners_server_is_refused(repo_root):
    """A process given the temporary server of a process that has exited stops at once,
    with a one-line reason, instead of running against a server that is gone."""
    from flows._runtime import PREFECT_SERVER_OWNER_ENV

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", PREFECT_SERVER_OWNER_ENV: str(exited.pid)}
    result = subprocess.run(
        [sys.executable, "-c", "from flows._runtime import ensure_prefect_api; ensure_prefect_api()"],
        cwd=repo_root, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"PREFECT_API_URL is stale: process {exited.pid}, whose temporary Prefect server "
        "this process uses, has exited; unset it or rerun the whole command"
    ]
