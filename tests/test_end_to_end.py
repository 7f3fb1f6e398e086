"""End to end: clone the repository into a temporary folder and run `dvc repro` there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("MEDCONCEPT_DASK_ADDRESS", None)
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, repo_root) -> Path:
    """A fresh clone of the committed repository after `dvc repro`."""
    clone = tmp_path_factory.mktemp("e2e") / "medconcept"
    run(["git", "clone", "--quiet", str(repo_root), str(clone)], cwd=clone.parent)
    run([sys.executable, "-m", "dvc", "repro"], cwd=clone)
    return clone


def test_dvc_repro_runs_every_stage_and_ends_up_to_date(reproduced):
    stages = yaml.safe_load((reproduced / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages)
    status = run([sys.executable, "-m", "dvc", "status"], cwd=reproduced).stdout
    assert "up to date" in status, status
    for name, stage in stages.items():
        for metric in stage.get("metrics", []):
            path = next(iter(metric)) if isinstance(metric, dict) else metric
            assert (reproduced / path).is_file(), f"{name} did not write {path}"


def test_ingest_counts_in_the_pipeline(reproduced):
    summary = json.loads((reproduced / "data" / "ingest" / "summary.json").read_text())
    assert (summary["items_in"], summary["items_out"], summary["rejected"]) == (49, 40, 9)


def test_second_repro_runs_nothing(reproduced):
    out = run([sys.executable, "-m", "dvc", "repro"], cwd=reproduced).stdout
    assert "Running stage" not in out, out
