"""Atomic stage outputs: SIGKILL a stage at several points, rerun it, and compare every
output byte with an uninterrupted run (ingest, figures, ct_convert)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows._outputs import atomic_output_dir

pytestmark = pytest.mark.slow

SMALL_SAMPLE = ["sample.parts=[literature, ct]", "sample.literature.n_articles=6", "sample.ct.n_patients=4",
                "sample.ct.n_studies=6", "sample.ct.enhanced_studies=1", "sample.ct.studies_per_task=3"]
ONE_WORKER = ["dask.n_workers=1"]


def _tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (timing.json excepted: it holds seconds)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "timing.json"}


def _command(repo_root: Path, stage: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", f"flows.{stage}", *[a for o in overrides for a in ("-S", o)]]


def _run(repo_root: Path, stage: str, overrides: list[str]) -> None:
    result = subprocess.run(_command(repo_root, stage, overrides), cwd=repo_root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _kill_when(repo_root: Path, stage: str, overrides: list[str], ready) -> bool:
    """Start the stage, SIGKILL it once `ready()` holds; True if it was killed mid-run."""
    proc = subprocess.Popen(_command(repo_root, stage, overrides), cwd=repo_root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def _partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _has_files(folder: Path, pattern: str = "*") -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob(pattern))


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory, repo_root) -> Path:
    out = tmp_path_factory.mktemp("atomic") / "sample"
    _run(repo_root, "sample", [f"sample.output_dir={out}", *SMALL_SAMPLE, *ONE_WORKER])
    return out


STAGES = {
    "ingest": lambda sample, work: [f"ingest.source={sample / 'pmc'}"],
    "figures": lambda sample, work: [f"figures.articles={work / 'ingest' / 'articles.parquet'}",
                                     f"figures.shards_dir={work / 'ingest' / 'shards'}"],
    "ct_convert": lambda sample, work: [f"ct_convert.source={sample / 'ct' / 'input'}"],
}


@pytest.fixture(scope="module")
def reference(small_sample, tmp_path_factory, repo_root) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("reference")
    digests = {}
    for stage, inputs in STAGES.items():
        out = work / stage
        _run(repo_root, stage, [*inputs(small_sample, work), f"{stage}.output_dir={out}", *ONE_WORKER])
        digests[stage] = _tree_digest(out)
        assert digests[stage], f"{stage} wrote nothing"
    return work, digests


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_then_rerun_gives_the_uninterrupted_bytes(stage, small_sample, reference, tmp_path, repo_root):
    work, digests = reference
    out = tmp_path / stage
    overrides = [*STAGES[stage](small_sample, work), f"{stage}.output_dir={out}", *ONE_WORKER]
    # kill points: as soon as a first run starts building; a rerun once it has written data
    pattern = "*.nii.gz" if stage == "ct_convert" else "*.tar"
    # a first run killed before anything is complete leaves nothing
    killed = _kill_when(repo_root, stage, overrides, lambda: _has_files(_partial(out)))
    assert killed, "the stage finished before it could be killed"
    assert not out.exists() or not _has_files(out)
    _run(repo_root, stage, overrides)
    assert _tree_digest(out) == digests[stage]
    # a rerun into finished outputs, killed once it has written data, leaves the previous outputs whole
    killed = _kill_when(repo_root, stage, overrides, lambda: _has_files(_partial(out), pattern))
    assert killed, f"the stage finished before it wrote {pattern}"
    assert _tree_digest(out) == digests[stage], f"{stage} killed after writing {pattern} left a mix of outputs"
    assert not _partial(out).exists() or _has_files(_partial(out))  # only the next run tidies it


def test_a_failed_build_leaves_the_previous_outputs(tmp_path):
    final = tmp_path / "out"
    with atomic_output_dir(final) as build:
        (build / "table.parquet").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(final) as build:
            (build / "table.parquet").write_text("half")
            raise RuntimeError("stage failed")
    assert (final / "table.parquet").read_text() == "v1"
    assert not _partial(final).exists()


def test_a_swap_killed_between_its_renames_recovers_the_previous_outputs(tmp_path):
    final = tmp_path / "out"
    with atomic_output_dir(final) as build:
        (build / "a.txt").write_text("previous")
    os.rename(final, tmp_path / ".out.previous")  # the kill struck after the first rename
    (tmp_path / ".out.partial").mkdir()
    with atomic_output_dir(final, keep=["checkpoints"]) as build:
        assert (final / "a.txt").read_text() == "previous"
        (final / "checkpoints").mkdir()
        (final / "checkpoints" / "step-1").write_text("ckpt")
        (build / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    assert (final / "checkpoints" / "step-1").read_text() == "ckpt"
    assert not (tmp_path / ".out.previous").exists()
