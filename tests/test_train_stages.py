"""Both training stages end to end on small learnable inputs made here: outputs, held-out
loss going down, weights loadable with weights_only, lineage, and the CLI contract."""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import stage_params

FINDINGS = ["nodule", "effusion", "cardiomegaly", "emphysema"]


def _figure(rng, present: list[int], size=64) -> bytes:
    from PIL import Image

    img = rng.normal(60, 8, (size, size, 3))
    for k in present:  # each finding: a bright blob of its own colour in its own quadrant
        y, x = (k // 2) * 32 + 16, (k % 2) * 32 + 16
        img[y - 8 : y + 8, x - 8 : x + 8, k % 3] = 230
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def figure_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    rng = np.random.default_rng(0)
    members, figures, concepts, mentions = {}, [], [], []
    for i in range(96):
        present = [k for k in range(4) if rng.random() < 0.4] or [int(rng.integers(0, 4))]
        key, pmcid = f"PMC{i // 2:04d}_fig{i % 2}", f"PMC{i // 2:04d}"
        caption, spans = "Axial image shows", []
        for n, k in enumerate(present):
            caption += (" and " if n else " ") + "a "
            spans.append((len(caption), len(caption) + len(FINDINGS[k]), f"C{k}"))
            caption += FINDINGS[k]
        caption += "."
        members[f"{key}.jpg"] = _figure(rng, present)
        members[f"{key}.json"] = json.dumps({"key": key, "caption": caption}).encode()
        figures.append({"key": key, "pmcid": pmcid, "caption": caption, "subcaptions": [], "sha256": key})
        concepts.append({"key": key, "cuis": [c for *_, c in spans]})
        mentions += [{"key": key, "text_field": "caption", "start": s, "end": e, "cui": c, "negated": False,
                      "uncertain": False, "text": caption[s:e], "preferred_name": caption[s:e].capitalize()}
                     for s, e, c in spans]
    (root / "shards").mkdir()
    with tarfile.open(root / "shards" / "figures-000000.tar", "w") as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    pq.write_table(pa.Table.from_pylist(figures), root / "figures.parquet")
    pq.write_table(pa.Table.from_pylist(concepts), root / "caption_concepts.parquet")
    pq.write_table(pa.Table.from_pylist(mentions), root / "mentions.parquet")
    return root


def _check_outputs(out: Path, model_loader):
    for name in ("model.safetensors", "config.json", "tokenizer/tokenizer.json", "curve.csv", "metrics.json",
                 "lineage.json", "summary.json", "rejected.parquet", "split.parquet"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert rows[0]["step"] == "0" and float(rows[-1]["validation_loss"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    # "clearly below": the soft-target InfoNCE has a floor well above 0 (groups of normal rows)
    assert metrics["validation_loss_end"] < min(0.95 * metrics["validation_loss_start"],
                                                metrics["validation_loss_start"] - 0.1), metrics
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["code"]["git_commit"] and "torch" in lineage["packages"]
    assert all("sha256" in v or "files" in v for v in lineage["inputs"].values())
    model, tok, config = model_loader(out)
    assert not model.training and tok.vocab_size == config["model"]["text"]["vocab_size"]
    # the checkpoint loads under weights_only (no pickled code)
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts and torch.load(ckpts[-1], weights_only=True)["step"] == metrics["steps"]
    return metrics, model, tok, config


def test_train_conceptclip_stage(figure_inputs, repo_root, tmp_path):
    from flows.train_conceptclip import train_conceptclip_flow
    from tasks.training.conceptclip_stage import load_trained

    out = tmp_path / "cc"
    params = stage_params(
        repo_root, **{"train_conceptclip.figures": figure_inputs / "figures.parquet",
                      "train_conceptclip.shards_dir": figure_inputs / "shards",
                      "train_conceptclip.caption_concepts": figure_inputs / "caption_concepts.parquet",
                      "train_conceptclip.mentions": figure_inputs / "mentions.parquet",
                      "train_conceptclip.output_dir": out, "train_conceptclip.checkpoint_dir": out / "checkpoints",
                      "train_conceptclip.presets.tiny.max_steps": 40, "train_conceptclip.presets.tiny.batch_size": 16,
                      "train_conceptclip.presets.tiny.eval_every": 10, "train_conceptclip.presets.tiny.warmup_steps": 5})
    metrics = train_conceptclip_flow(params=params)
    assert metrics["concepts"] == 4
    _, model, tok, config = _check_outputs(out, load_trained)
    # what predict needs: the trained concepts in the captions' words, and how the images were stored
    assert config["concepts"] == [{"cui": f"C{k}", "preferred_name": f.capitalize(), "surface": f}
                                  for k, f in enumerate(FINDINGS)]
    assert config["preprocess"]["source_image"] == {k: params["figures"][k]
                                                    for k in ("max_side", "jpeg_quality", "max_pixels")}
    split = pq.read_table(out / "split.parquet").to_pylist()
    by_article = {}
    for r in split:
        by_article.setdefault(r["pmcid"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_article.values()), "an article on both sides of the split"
    # zero-shot scoring runs on the trained model (its quality is the evaluate stage's test)
    enc = tok.encode([f"a {f}" for f in FINDINGS])
    images = torch.zeros(2, 3, config["preprocess"]["image_size"], config["preprocess"]["image_size"])
    scores = model.zero_shot_scores(images, enc["input_ids"], enc["attention_mask"], patch_weight=0.2)
    assert scores.shape == (2, 4) and torch.isfinite(scores).all()
    # a second run with the same params resumes from the last checkpoint and trains no more
    again = train_conceptclip_flow(params=params)
    assert again["validation_loss_end"] == metrics["validation_loss_end"]
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 40


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, np.diag([6.0, 6.0, 8.0, 1.0])), str(path))


@pytest.fixture(scope="module")
def ct_inputs(tmp_path_factory):
    """Phantoms (x, y, z) = (32, 32, 16): a lung box (id 10) that may hold a dense nodule, a liver
    box (id 5) that may hold a dark mass, a heart (id 51) that may be enlarged."""
    root = tmp_path_factory.mktemp("ct")
    (root / "volumes").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    studies, anat, texts = [], [], []
    for i in range(36):
        vol = rng.normal(-700, 30, (32, 32, 16)).astype(np.int16)
        lab = np.zeros((32, 32, 16), dtype=np.uint8)
        lab[2:14, 4:28, 2:14] = 10
        lab[18:30, 4:20, 2:12] = 5
        big = rng.random() < 0.5
        lab[18:30 if big else 22, 22:30 if big else 26, 10:15] = 51
        vol[lab == 10] = -850
        vol[lab == 5] = 60
        vol[lab == 51] = 40
        nodule, mass = rng.random() < 0.5, rng.random() < 0.5
        if nodule:
            vol[6:10, 10:14, 6:10] = 80
        if mass:
            vol[21:26, 8:13, 4:8] = -20
        sid = f"st{i:02d}"
        _nifti(root / "volumes" / f"{sid}.nii.gz", vol)
        _nifti(root / "labels" / f"se{i:02d}.nii.gz", lab)
        studies.append({"patient_id": f"p{i // 2:02d}", "study_id": sid, "series_id": f"se{i:02d}",
                        "volume": str(root / "volumes" / f"{sid}.nii.gz")})
        for name, ids, vox in (("lung", [10], 1), ("liver", [5], 1), ("heart", [51], 1)):
            anat.append({"series_id": f"se{i:02d}", "anatomy": name, "label_ids": ids, "voxels": 100,
                         "touches_fov_edge": False})
        for name, flag, finding in (("lung", nodule, "nodule"), ("liver", mass, "liver_mass"),
                                    ("heart", big, "cardiomegaly")):
            texts.append({"study_id": sid, "anatomy": name,
                          "description": f"{name}: {finding.replace('_', ' ')}." if flag else f"{name} shows no significant abnormality.",
                          "is_normal": not flag, "finding_cuis": [], "finding_keys": [finding] if flag else []})
    pq.write_table(pa.Table.from_pylist(studies), root / "studies.parquet")
    pq.write_table(pa.Table.from_pylist(anat), root / "anatomy.parquet")
    pq.write_table(pa.Table.from_pylist(texts), root / "anatomy_texts.parquet")
    # reference labels of every study, and of one whose volume is not here
    pq.write_table(pa.Table.from_pylist([{"study_id": r["study_id"], "Cardiomegaly": 0} for r in studies]
                                        + [{"study_id": "st99", "Cardiomegaly": 1}]), root / "reference_labels.parquet")
    return root


def _fvlm_prepare(params: dict) -> None:
    """fvlm_prepare's functions, as its flow runs them: the tensors train_fvlm reads."""
    from tasks.training import fvlm_prepare_stage as stage

    cfg = {**params["fvlm_prepare"], **stage.other_sections(params)}
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    plan = stage.plan(cfg, out)
    stage.merge(cfg, out, plan, [stage.prepare_shard(shard, cfg, str(out)) for shard in plan.shards], None)


def test_train_fvlm_stage(ct_inputs, repo_root, tmp_path):
    from flows.train_fvlm import train_fvlm_flow
    from tasks.training.fvlm_stage import load_trained

    out = tmp_path / "fv"
    params = stage_params(
        repo_root, **{"fvlm_prepare.studies": ct_inputs / "studies.parquet", "fvlm_prepare.anatomy": ct_inputs / "anatomy.parquet",
                      "fvlm_prepare.labels_dir": ct_inputs / "labels", "fvlm_prepare.output_dir": tmp_path / "prepared",
                      "train_fvlm.studies": ct_inputs / "studies.parquet", "train_fvlm.anatomy": ct_inputs / "anatomy.parquet",
                      "train_fvlm.prepared": tmp_path / "prepared",
                      "train_fvlm.reference_labels": ct_inputs / "reference_labels.parquet",
                      "train_fvlm.anatomy_texts": ct_inputs / "anatomy_texts.parquet",
                      "train_fvlm.output_dir": out, "train_fvlm.checkpoint_dir": out / "checkpoints",
                      "train_fvlm.anatomies": "[lung, liver, heart]",
                      "train_fvlm.model": "{ct: {volume_size: [16, 32, 32], patch_size: [4, 8, 8], stem_channels: [8, 16], drop_path: 0.0}}",
                      "train_fvlm.tokenizer": "{vocab_size: 200, hf_folder: null}",  # the frozen MiniLM: unit-tested
                      "train_fvlm.augment": "{intensity_scale: 0.05, noise: 0.02}", "train_fvlm.lr": 0.002,
                      "train_fvlm.presets.tiny.max_steps": 50, "train_fvlm.presets.tiny.batch_size": 8,
                      "train_fvlm.presets.tiny.eval_every": 10, "train_fvlm.presets.tiny.warmup_steps": 5})
    _fvlm_prepare(params)
    metrics = train_fvlm_flow(params=params)
    assert metrics["train_pairs"] > 0 and metrics["validation_pairs"] > 0
    assert (metrics["studies_with_volume"], metrics["studies_with_report"], metrics["studies_paired"]) == (36, 36, 36)
    summary = json.loads((out / "summary.json").read_text())
    # 36 series and one reference-label key without a volume
    assert (summary["items_in"], summary["items_out"]) == (37, 36)
    assert summary["rejected_by_reason"] == {"label_without_volume": 1}
    _, model, tok, config = _check_outputs(out, load_trained)
    assert config["findings"] == {"cardiomegaly": 0, "liver_mass": 1, "nodule": 2}
    split = pq.read_table(out / "split.parquet").to_pylist()
    sides = {}
    for r in split:
        sides.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values()), "a patient on both sides of the split"
    # the same params, read by two loader workers: the run resumes at its last step
    again = train_fvlm_flow(params={**params, "train_fvlm": {**params["train_fvlm"], "num_workers": 2}})
    assert again["validation_loss_end"] == metrics["validation_loss_end"]
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 50


def test_fvlm_fingerprint_covers_the_prepared_tensors(tmp_path):
    """A resumed run must not pick up weights trained on other tensors: tensors.parquet (each
    file's sha256) and prepared.json are part of the run's identity."""
    from tasks.training.common import fingerprint
    from tasks.training.fvlm_stage import _fingerprint_files

    cfg = {"studies": tmp_path / "s.parquet", "anatomy": tmp_path / "a.parquet", "anatomy_texts": tmp_path / "t.parquet",
           "prepared": tmp_path / "prepared"}
    (tmp_path / "prepared").mkdir()
    for path in _fingerprint_files(cfg):
        path.write_text("x")
    before = fingerprint("train_fvlm", {}, files=_fingerprint_files(cfg), code_dirs=())
    for name in ("tensors.parquet", "prepared.json"):
        (tmp_path / "prepared" / name).write_text("changed")
        after = fingerprint("train_fvlm", {}, files=_fingerprint_files(cfg), code_dirs=())
        assert after != before, name
        before = after
