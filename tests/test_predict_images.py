"""`medconcept predict` on images with a ConceptCLIP folder: the annotation API against the
model's own zero-shot and map functions, a user's image preprocessed exactly as training read
its figure from the shards, candidates as CUIs or names, outputs without file names, and
clear errors for wrong inputs."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flows import predict as cli
from models import build_model
from models.text_encoder import TextTokenizer
from tasks.figures.images import normalise
from tasks.figures.shards import write_shard
from tasks.predict import annotate as ann
from tasks.predict.images import model_image
from tasks.predict.model_folder import NotAModelFolder, open_model
from tasks.training import conceptclip_data as cd
from tasks.training.conceptclip_records import FigureRecord
from tasks.training.outputs import write_model

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["Axial CT of the chest shows a right pleural effusion.", "Chest radiograph with a nodule.",
            "MRI of the brain: no mass.", "Ultrasound of the liver shows a cyst."]
SOURCE = {"max_side": 1024, "jpeg_quality": 90, "max_pixels": 178956970}
CONCEPTS = [{"cui": "C0032227", "preferred_name": "Pleural effusion", "surface": "pleural effusion"},
            {"cui": "C0028259", "preferred_name": "Nodule", "surface": "nodule"}]


def _png(size=(90, 60), seed=0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conceptclip")
    tokenizer = TextTokenizer.train(CAPTIONS, 80, 32)
    cfg = json.loads((ROOT / "models/configs/conceptclip_tiny.json").read_text())
    cfg["text"]["vocab_size"] = tokenizer.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg)
    config = {"model": cfg, "concept_ids": {c["cui"]: i for i, c in enumerate(CONCEPTS)}, "concepts": CONCEPTS,
              "preprocess": {"image_size": cfg["image"]["image_size"], "mean": cd.MEAN, "std": cd.STD,
                             "letterbox": True, "source_image": SOURCE},
              "zero_shot": {"patch_weight": 0.5, "top_k": 3}, "preset": "tiny"}
    write_model(folder, model, config, tokenizer)
    return folder


def test_a_users_image_is_the_tensor_training_read_from_the_shards(tmp_path):
    data = _png((130, 70))
    stored = normalise(data, SOURCE["max_pixels"], SOURCE["max_side"], SOURCE["jpeg_quality"])  # the figures stage
    write_shard(tmp_path / "figures-000000.tar", [("PMC1_fig1", stored.jpeg, {})])
    index = cd.index_shards(tmp_path)
    record = FigureRecord(key="PMC1_fig1", pmcid="PMC1", shard=index["PMC1_fig1"][0], caption=CAPTIONS[0],
                             cuis=[], spans=[])
    dataset = cd.FigureDataset([record], index, TextTokenizer.train(CAPTIONS, 80, 32), {}, 64, None)
    base, tensor = model_image(data, {"image_size": 64, "source_image": SOURCE})
    assert torch.equal(base, dataset.base_image(0))
    assert torch.equal(tensor, dataset.image(0, -1))


def test_annotate_gives_the_models_own_zero_shot_scores_and_maps(model_dir):
    folder = open_model(model_dir)
    images = torch.stack([model_image(_png(seed=s), folder.config["preprocess"])[1] for s in range(3)])
    candidates = [ann.Candidate("C0032227", "pleural effusion"), ann.Candidate(None, "a dark round nodule")]
    how = ann.Wording(templates=("{name}", "an image of {name}"), patch_weight=0.3, top_k=3)
    out = ann.annotate(folder.model, folder.tokenizer, images, candidates, how)
    texts = [t.format(name=c.name) for c in candidates for t in how.templates]
    enc = folder.tokenizer.encode(texts)
    direct = folder.model.zero_shot_scores(images, enc["input_ids"], enc["attention_mask"], 0.3, 3)
    assert np.allclose(out["score"], direct.view(3, 2, 2).mean(-1).numpy(), atol=1e-6)
    maps = folder.model.patch_concept_map(images, enc["input_ids"], enc["attention_mask"])
    assert np.allclose(out["maps"], maps.view(3, 2, 2, *maps.shape[-2:]).mean(2).numpy(), atol=1e-6)
    assert out["maps"].shape[-1] == folder.config["model"]["image"]["image_size"] // folder.config["model"]["image"]["patch_size"]
    assert ((out["pc_align_probability"] > 0) & (out["pc_align_probability"] < 1)).all()


def test_candidates_are_cuis_or_names_and_default_to_the_trained_concepts():
    config = {"concepts": CONCEPTS}
    assert [c.name for c in ann.resolve_candidates(None, config, "surface")] == ["pleural effusion", "nodule"]
    assert [c.name for c in ann.resolve_candidates(None, config, "preferred")] == ["Pleural effusion", "Nodule"]
    got = ann.resolve_candidates(["C0028259", "ground  glass", "C0011849", "ground glass"], config, "surface",
                                 {"C0011849": "Diabetes Mellitus"})
    assert got == [ann.Candidate("C0028259", "nodule"), ann.Candidate(None, "ground glass"),
                   ann.Candidate("C0011849", "Diabetes Mellitus")]
    with pytest.raises(ValueError, match="C0000001"):
        ann.resolve_candidates(["C0000001"], config, "surface")
    with pytest.raises(ValueError, match="empty"):
        ann.resolve_candidates(["  "], config, "surface")
    with pytest.raises(ValueError, match="no trained concepts"):
        ann.resolve_candidates(None, {}, "surface")


def test_predict_writes_scores_and_maps_without_file_names(model_dir, tmp_path):
    images = tmp_path / "John_Doe_1970"
    images.mkdir()
    (images / "John_Doe_chest.png").write_bytes(_png(seed=1))
    (images / "nested").mkdir()
    (images / "nested" / "b.jpg").write_bytes(_png(seed=2))
    (images / "broken.png").write_bytes(b"\x89PNG not an image")
    (images / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    assert cli.main([str(model_dir), str(images), "--out", str(out), "--concepts", "C0032227", "cyst",
                     "--top-maps", "2"]) == 0
    summary = json.loads((out / "predictions.json").read_text())
    assert (summary["images_in"], summary["images_scored"]) == (3, 2)
    assert [r["reason"] for r in summary["images_refused"]] == ["undecodable_image"]
    for item in summary["images"]:
        record = json.loads((out / f"{item['image']}.json").read_text())
        assert {c["name"] for c in record["concepts"]} == {"pleural effusion", "cyst"}
        scores = [c["score"] for c in record["concepts"]]
        assert scores == sorted(scores, reverse=True)
        assert (out / f"{item['image']}.png").stat().st_size > 1000
    assert summary["scoring"]["patch_weight"] == 0.5  # the training stage's zero_shot setting
    for path in out.iterdir():
        assert "John" not in path.name and b"John" not in path.read_bytes()


def test_tuned_by_takes_evaluates_validation_choice(model_dir, tmp_path):
    tuned = tmp_path / "evaluate_conceptclip"
    tuned.mkdir()
    chosen = {"patch_weight": 1.0, "prompt_templates": ["a photo of {name}"], "prompt_wording": "preferred"}
    (tuned / "metrics_detail.json").write_text(json.dumps({"tuning": {"chosen": chosen}}))
    (tmp_path / "a.png").write_bytes(_png())
    out = tmp_path / "out"
    assert cli.main([str(model_dir), str(tmp_path / "a.png"), "--out", str(out), "--tuned-by", str(tuned)]) == 0
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["scoring"] == {"templates": ["a photo of {name}"], "patch_weight": 1.0, "top_k": 3,
                                  "wording": "preferred"}
    record = json.loads((out / f"{summary['images'][0]['image']}.json").read_text())
    assert {c["name"] for c in record["concepts"]} == {"Pleural effusion", "Nodule"}


def test_wrong_inputs_are_clear_errors(model_dir, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(_png())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main([str(tmp_path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert "not a medconcept model" in capsys.readouterr().err
    assert cli.main([str(model_dir), str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert cli.main([str(model_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                     "--template", "no placeholder"]) == 2
    assert "{name}" in capsys.readouterr().err
    assert cli.main([str(model_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                     "--patch-weight", "1.5"]) == 2
    assert "patch_weight" in capsys.readouterr().err
    bad = tmp_path / "bad_model"
    bad.mkdir()
    for name in ("model.safetensors", "tokenizer"):
        (bad / name).mkdir() if name == "tokenizer" else (bad / name).write_bytes(b"")
    (bad / "config.json").write_text(json.dumps({"model": {"model": "resnet"}, "preprocess": {}}))
    with pytest.raises(NotAModelFolder, match="resnet"):
        open_model(bad)
