"""Determinism end to end: two fresh clones of the committed repository, each running
`dvc repro` on a tiny sample under its own PYTHONHASHSEED, record the same hash for
every output in dvc.lock and write the same bytes in every metric file.

timing.json files are not DVC outputs, so they are outside the comparison by design.
The clones run side by side (one Dask worker thread each) to keep the pair within a
few minutes on two cores.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

# Small enough for two runs at once on two cores; big enough that every stage has work,
# both splits hold several held-out items and both models get evaluable labels.
TINY = {
    "dask": {"n_workers": 1, "processes": False},
    "sample": {"literature": {"n_articles": 10, "figures_per_article": [3, 4]},
               "ct": {"n_patients": 10, "n_studies": 12, "enhanced_studies": 1, "tilted_studies": 1,
                      "studies_per_task": 4}},
    "train_conceptclip": {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "warmup_steps": 2,
                          "batch_size": 8},
    "train_fvlm": {"max_steps": 4, "eval_every": 2, "checkpoint_every": 2, "warmup_steps": 1, "batch_size": 4,
                   "split": {"validation_fraction": 0.25, "test_fraction": 0.35}},
    # one candidate each: 10 articles leave too few validation figures to tune on
    "evaluate": {"min_positives": 1, "bootstrap": {"n": 20},
                 "conceptclip_tuning": {"prompt_templates": [["{name}"]], "prompt_wording": ["surface"],
                                        "patch_weight": [1.0]},
                 "fvlm_tuning": {"prompts": [{"positive": "{finding} in the {anatomy}.",
                                              "negative": "{anatomy} shows no significant abnormality."}]}},
}
HASH_SEEDS = ("1", "2")
REPRO_TIMEOUT_S = 1200


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _start_repro(repo_root: Path, clone: Path, hash_seed: str) -> subprocess.Popen:
    subprocess.run(["git", "clone", "--quiet", str(repo_root), str(clone)], check=True, timeout=120)
    params = clone / "params.yaml"
    params.write_text(yaml.safe_dump(_merge(yaml.safe_load(params.read_text()), TINY), sort_keys=False))
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, DVC_NO_ANALYTICS="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("MEDCONCEPT_DASK_ADDRESS", None)
    with open(clone.parent / f"repro-{hash_seed}.log", "w") as log:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def two_clones(tmp_path_factory, repo_root) -> tuple[Path, Path]:
    clones = [tmp_path_factory.mktemp(f"determinism-{seed}") / "medconcept" for seed in HASH_SEEDS]
    runs = [_start_repro(repo_root, clone, seed) for clone, seed in zip(clones, HASH_SEEDS)]
    try:
        for run, clone, seed in zip(runs, clones, HASH_SEEDS):
            code = run.wait(timeout=REPRO_TIMEOUT_S)
            log = (clone.parent / f"repro-{seed}.log").read_text()
            assert code == 0, f"dvc repro (PYTHONHASHSEED={seed}) failed ({code}):\n{log[-4000:]}"
    finally:
        for run in runs:
            if run.poll() is None:  # a failed or timed-out pair: stop the other run and its stages too
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    return clones[0], clones[1]


def _lock(clone: Path) -> dict:
    return yaml.safe_load((clone / "dvc.lock").read_text())["stages"]


def _outs(clone: Path) -> dict[tuple[str, str], dict]:
    return {(stage, out["path"]): {k: out.get(k) for k in ("md5", "size", "nfiles")}
            for stage, entry in _lock(clone).items() for out in entry.get("outs", [])}


def test_both_clones_ran_every_stage_with_the_same_params(two_clones):
    first, second = two_clones
    stages = yaml.safe_load((first / "dvc.yaml").read_text())["stages"]
    assert set(_lock(first)) == set(_lock(second)) == set(stages)
    for name in stages:
        assert _lock(first)[name].get("params") == _lock(second)[name].get("params"), name


def test_every_output_hash_in_dvc_lock_is_identical(two_clones):
    first, second = (_outs(clone) for clone in two_clones)
    assert first.keys() == second.keys()
    assert all(value["md5"] for value in first.values())
    differing = {key: (first[key], second[key]) for key in first if first[key] != second[key]}
    assert not differing, "outputs that differ between the clones:\n" + "\n".join(
        f"  {stage}: {path}  {a['md5']} != {b['md5']}" for (stage, path), (a, b) in sorted(differing.items()))


def test_every_metric_file_is_identical(two_clones):
    first, second = two_clones
    stages = yaml.safe_load((first / "dvc.yaml").read_text())["stages"]
    metrics = sorted(next(iter(m)) if isinstance(m, dict) else m
                     for stage in stages.values() for m in stage.get("metrics", []))
    assert "data/evaluate/metrics.json" in metrics
    differing = [path for path in metrics if (first / path).read_bytes() != (second / path).read_bytes()]
    assert differing == []
    headline = yaml.safe_load((first / "data/evaluate/metrics.json").read_text())
    # both models were scored, so the comparison covers trained weights, not only counts
    assert headline["conceptclip"]["macro_auc"] is not None and headline["fvlm"]["macro_auc"] is not None
