"""export-open-clip: a ConceptCLIP folder that open_clip loads with its own API gives medconcept's embeddings."""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched: open_clip and transformers read local folders only
os.environ["TRANSFORMERS_OFFLINE"] = "1"

open_clip = pytest.importorskip("open_clip")

from models import build_model  # noqa: E402
from models.text_encoder import TextTokenizer  # noqa: E402
from tasks.training.export_open_clip import (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, export_open_clip,  # noqa: E402
                                             relink_text_tower)
from tasks.training.outputs import write_model  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
CAPTIONS = [
    "Axial CT shows ground-glass opacity (GGO) in the right lung and a pleural effusion.",
    "Chest radiograph with a left pneumothorax; no cardiomegaly.",
    "Hypoattenuating hepatic lesion and splenomegaly on abdominal CT.",
]
PROBES = CAPTIONS + ["", "  NORMAL   chest\tradiograph ", "pleural effusion " * 20]  # case, spacing, truncation
CONTEXT = 24
PREPROCESS = {"image_size": 64, "mean": 0.5, "std": 0.5, "letterbox": True}


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(CAPTIONS * 2, vocab_size=90, context_length=CONTEXT)


def pad_not_zero(tokenizer: TextTokenizer) -> TextTokenizer:
    """The same tokenizer with [PAD] and [MASK] ids swapped: open_clip masks by pad_token_id, which must follow."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.tok.to_str())
    swap = {"[PAD]": "[MASK]", "[MASK]": "[PAD]"}
    vocab = data["model"]["vocab"]
    data["model"]["vocab"] = {swap.get(t, t): i for t, i in vocab.items()}
    for token in data["added_tokens"]:
        token["id"] = vocab[swap.get(token["content"], token["content"])]
    swapped = TextTokenizer(Tokenizer.from_str(json.dumps(data)), tokenizer.context_length)
    assert swapped.pad_id == vocab["[MASK]"] != 0
    return swapped


def tiny_cfg(tokenizer, image=None, text=None) -> dict:
    cfg = json.loads((CONFIGS / "conceptclip_tiny.json").read_text())
    cfg["image"].update(depth=2, attention_window=None, **(image or {}))  # open_clip attends globally
    cfg["text"].update(vocab_size=tokenizer.vocab_size, context_length=CONTEXT, **(text or {}))
    return cfg


def perturbed(cfg: dict, seed: int = 0):
    """Random init, then biases, norms and embeddings moved off their init so a misplaced one shows."""
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower() or name.endswith(("pos_embed", "cls_token")):
                p.add_(torch.randn_like(p) * 0.5)
        model.logit_scale.fill_(2.5)  # below the clamp
        model.logit_bias.fill_(-3.25)
    return model


def write_trained(folder: Path, model, cfg: dict, tokenizer, preprocess=PREPROCESS) -> Path:
    config = {"model": cfg, "concept_ids": [], **({"preprocess": preprocess} if preprocess else {})}
    write_model(folder, model, config, tokenizer)
    return folder


def embeddings_match(model, tokenizer, export: Path) -> None:
    oc_model = open_clip.create_model(f"local-dir:{export}").eval()
    oc_tok = open_clip.get_tokenizer(f"local-dir:{export}")
    assert type(oc_model).__name__ == "CustomTextCLIP"
    enc = tokenizer.encode(PROBES)
    ids = oc_tok(PROBES)
    assert torch.equal(ids, enc["input_ids"])
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours_img, _ = model.encode_image(images, patches=False)
        ours_txt, _ = model.encode_text(enc["input_ids"], enc["attention_mask"])
        theirs_img = oc_model.encode_image(images, normalize=True)
        theirs_txt = oc_model.encode_text(ids, normalize=True)
    torch.testing.assert_close(theirs_img, ours_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs_txt, ours_txt, atol=1e-5, rtol=0)
    scale, _ = model.scales()
    torch.testing.assert_close(oc_model.logit_scale.exp(), scale.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(oc_model.logit_bias, model.logit_bias.detach(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("image,text,pad_moved", [
    ({"pool": "avg", "pre_norm": False}, {"pool": "cls"}, False),
    ({"pool": "token", "pre_norm": True, "act": "quick_gelu", "norm_eps": 1e-5}, {"pool": "mean"}, False),
    ({"pool": "token", "pre_norm": False}, {"pool": "cls"}, True),
    ({"pool": "avg", "pre_norm": True}, {"pool": "mean"}, True),
], ids=["avg-bias-cls", "token-prenorm-quickgelu-mean", "token-bias-cls-pad4", "avg-prenorm-mean-pad4"])
def test_open_clip_loads_the_export_with_equal_embeddings(tmp_path, tokenizer, image, text, pad_moved):
    tokenizer = pad_not_zero(tokenizer) if pad_moved else tokenizer
    cfg = tiny_cfg(tokenizer, image, text)
    model = perturbed(cfg)
    trained = write_trained(tmp_path / "trained", model, cfg, tokenizer)
    export = export_open_clip(trained, tmp_path / "export")
    assert {OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, "tokenizer.json", "text"} <= {p.name for p in export.iterdir()}
    assert not list(tmp_path.glob(".*.partial"))
    embeddings_match(model, tokenizer, export)


def test_the_logit_scale_is_exported_clamped_and_the_folder_relinks_after_a_move(tmp_path, tokenizer):
    cfg = tiny_cfg(tokenizer)
    model = perturbed(cfg, seed=3)
    with torch.no_grad():
        model.logit_scale.fill_(model.max_logit_scale + 1.0)  # ConceptCLIP clamps; open_clip does not
    export = export_open_clip(write_trained(tmp_path / "trained", model, cfg, tokenizer), tmp_path / "export")
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(export), str(moved))
    relink_text_tower(moved)
    text_cfg = json.loads((moved / OPEN_CLIP_CONFIG).read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == str(moved.resolve() / "text")
    embeddings_match(model, tokenizer, moved)


def test_the_command_line_exports_and_refuses_with_status_2(tmp_path, tokenizer, capsys):
    from flows.cli import USAGE, main

    assert "export-open-clip" in USAGE
    cfg = tiny_cfg(tokenizer)
    trained = write_trained(tmp_path / "trained", perturbed(cfg), cfg, tokenizer)
    assert main(["export-open-clip", str(trained), str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / OPEN_CLIP_CONFIG).is_file()
    assert main(["export-open-clip", "--relink", str(tmp_path / "export")]) == 0
    assert main(["export-open-clip", str(trained), str(tmp_path / "export")]) == 2  # not empty: never overwritten
    assert "not an empty folder" in capsys.readouterr().err


# -- refusals ---------------------------------------------------------------------------------------------

def test_refuses_a_folder_that_is_not_a_training_output(tmp_path):
    (tmp_path / "somewhere").mkdir()
    (tmp_path / "somewhere" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a medconcept training output"):
        export_open_clip(tmp_path / "somewhere", tmp_path / "out")
    with pytest.raises(ValueError, match="not a folder"):
        export_open_clip(tmp_path / "absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_an_fvlm_model(tmp_path, tokenizer):
    folder = tmp_path / "train_fvlm"
    (folder / "tokenizer").mkdir(parents=True)
    tokenizer.save(folder / "tokenizer")
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"model": {"model": "fvlm"}, "findings": []}))
    with pytest.raises(ValueError, match="fVLM"):
        export_open_clip(folder, tmp_path / "out")


@pytest.mark.parametrize("image,words", [({"pool": "max"}, "image.pool 'max'"),
                                         ({"act": "gelu_tanh"}, "image.act 'gelu_tanh'"),
                                         ({"attention_window": 1}, "image.attention_window 1")])
def test_refuses_an_image_tower_open_clip_cannot_express(tmp_path, tokenizer, image, words):
    cfg = tiny_cfg(tokenizer)
    trained = write_trained(tmp_path / "trained", perturbed(cfg), cfg, tokenizer)
    config = json.loads((trained / "config.json").read_text())
    config["model"]["image"].update(image)
    (trained / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"open_clip cannot express this ConceptCLIP: {words}"):
        export_open_clip(trained, tmp_path / "out")


def test_refuses_a_text_tower_open_clip_has_no_adapter_for(tmp_path, tokenizer):
    from transformers import DistilBertConfig, DistilBertModel

    hf_folder = tmp_path / "distilbert"
    DistilBertModel(DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2,
                                     hidden_dim=64, max_position_embeddings=CONTEXT)).save_pretrained(hf_folder)
    cfg = tiny_cfg(tokenizer, text={"hf_folder": str(hf_folder)})
    trained = write_trained(tmp_path / "trained", perturbed(cfg), cfg, tokenizer)
    with pytest.raises(ValueError, match="Hugging Face model type 'distilbert'"):
        export_open_clip(trained, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*.partial"))


def test_refuses_weights_that_do_not_fit_the_config_and_a_missing_preprocess(tmp_path, tokenizer):
    cfg = tiny_cfg(tokenizer)
    model = perturbed(cfg)
    wider = copy.deepcopy(cfg)
    wider["image"]["depth"] = 3
    trained = write_trained(tmp_path / "trained", model, wider, tokenizer)  # config says 3 blocks, weights hold 2
    with pytest.raises(ValueError, match="does not fit config.json's model"):
        export_open_clip(trained, tmp_path / "out")
    bare = write_trained(tmp_path / "bare", model, cfg, tokenizer, preprocess=None)
    with pytest.raises(ValueError, match="no preprocess mean/std"):
        export_open_clip(bare, tmp_path / "out")
