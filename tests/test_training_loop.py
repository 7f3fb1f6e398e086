"""The shared training loop: kill-and-resume, DDP equivalence, schedules, splits."""
from __future__ import annotations

import multiprocessing as mp
import signal

import pytest
import torch

from tasks.training.checkpoint import list_checkpoints
from tasks.training.optim import warmup_cosine
from tasks.training.splits import TEST, TRAIN, VALIDATION, SplitSpec
from tests.helpers.toy_training import ddp_worker, kill_worker, run_toy

LOOP = {"max_steps": 12, "batch_size": 8, "lr": 3e-3, "warmup_steps": 3, "checkpoint_every": 4,
        "eval_every": 4, "seed": 3, "threads": 1}


def _same_state(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_kill_and_resume_gives_identical_weights(tmp_path):
    reference = run_toy(LOOP, str(tmp_path / "ref"))
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=kill_worker, args=(LOOP, str(tmp_path / "run"), 6))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    # killed after step 6: the last checkpoint is step 4, so 2 steps are redone
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [4]
    resumed = run_toy(LOOP, str(tmp_path / "run"))
    assert resumed.resumed_from == 4
    assert _same_state(reference.model.state_dict(), resumed.model.state_dict()) == []
    assert [r["train_loss"] for r in resumed.curve] == [r["train_loss"] for r in reference.curve]


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    cfg = dict(LOOP, max_steps=4)
    run_toy(cfg, str(tmp_path), fingerprint="a")
    assert run_toy(cfg, str(tmp_path), fingerprint="a").resumed_from == 4
    assert run_toy(cfg, str(tmp_path), fingerprint="b").resumed_from == 0
    # the run with other params replaced the stale checkpoints
    assert run_toy(cfg, str(tmp_path), fingerprint="a").resumed_from == 0


def test_run_fingerprint_covers_the_training_code(tmp_path):
    from tasks.training.common import CODE_DIRS, fingerprint

    code = tmp_path / "models"
    code.mkdir()
    (code / "net.py").write_text("WIDTH = 64\n")
    before = fingerprint("train_fvlm", {"lr": 1e-3}, code_dirs=(code,))
    assert fingerprint("train_fvlm", {"lr": 1e-3}, code_dirs=(code,)) == before
    (code / "net.py").write_text("WIDTH = 128\n")  # same params and data, other code
    assert fingerprint("train_fvlm", {"lr": 1e-3}, code_dirs=(code,)) != before
    assert {d.name for d in CODE_DIRS} == {"models", "training", "common"} and all(d.is_dir() for d in CODE_DIRS)


def test_ddp_two_gloo_ranks_match_one_process(tmp_path):
    cfg = dict(LOOP, max_steps=6, eval_every=1, checkpoint_every=100)
    single = run_toy(cfg, None)
    out = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(ddp_worker, args=(2, str(tmp_path / "init"), cfg, str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    one = [r["train_loss"] for r in single.curve]
    two = [r["train_loss"] for r in ddp["curve"]]
    assert len(one) == len(two) == 7
    assert one[-1] < one[0] - 0.05, "the toy run should learn"
    for a, b in zip(one, two):
        assert a == pytest.approx(b, abs=1e-4, rel=1e-4)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(v, ddp["model"][k], atol=1e-4, rtol=1e-3), k


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, 4, 20) for s in range(20)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] < 0.05


def test_split_is_by_source_and_stable():
    ids = [f"PMC{i:07d}" for i in range(4000)]
    spec = SplitSpec("pmcid", 0.15, 0.2, "s")
    sides = [spec.of(i) for i in ids]
    assert 0.17 < sides.count(TEST) / len(ids) < 0.23 and 0.12 < sides.count(VALIDATION) / len(ids) < 0.18
    assert sides == [spec.of(i) for i in ids]
    assert sides != [SplitSpec("pmcid", 0.15, 0.2, "other").of(i) for i in ids]
    assert set(sides) == {TRAIN, VALIDATION, TEST}
    # a wider validation side takes sources from train only: the test side stays what it was
    wider = [SplitSpec("pmcid", 0.3, 0.2, "s").of(i) for i in ids]
    assert [i for i, s in zip(ids, wider) if s == TEST] == [i for i, s in zip(ids, sides) if s == TEST]
    assert all(w == VALIDATION for s, w in zip(sides, wider) if s == VALIDATION)


def test_preset_resolution_and_section_overrides(repo_root):
    from tasks.common.params import load_params
    from tasks.training.common import resolve

    params = load_params(repo_root / "params.yaml", ["train_conceptclip.lr=0.0003",
                                                     "train_conceptclip.model={pc_align_weight: 0.25}"])
    cfg, model_cfg = resolve(params, "train_conceptclip", repo_root)
    assert cfg["lr"] == 0.0003 and cfg["max_steps"] == params["train_conceptclip"]["presets"]["tiny"]["max_steps"]
    assert model_cfg["pc_align_weight"] == 0.25 and "image" in model_cfg
    base, base_model = resolve(load_params(repo_root / "params.yaml", ["train_fvlm.preset=base"]), "train_fvlm", repo_root)
    assert base_model["ct"]["width"] == 768 and base["batch_size"] == params["train_fvlm"]["presets"]["base"]["batch_size"]
