"""Write a trained ConceptCLIP as a folder that open_clip loads with its own API.

    model = open_clip.create_model("local-dir:/path/to/export")
    tokenizer = open_clip.get_tokenizer("local-dir:/path/to/export")

The folder holds:
- `open_clip_config.json`: {"model_cfg": ..., "preprocess_cfg": ...}; the image tower is
  open_clip's own VisionTransformer, the text tower its HF adapter (CustomTextCLIP);
- `open_clip_model.safetensors`: the full open_clip state dict;
- the tokenizer files (`tokenizer.json`, `tokenizer_config.json`): open_clip's
  `get_tokenizer("local-dir:...")` always reads the tokenizer from the folder itself;
- `text/`: the text tower as a Hugging Face model folder (config.json, weights, tokenizer).

What open_clip requires, and so what is not relocatable: `text_cfg.hf_model_name` is passed to
`transformers.AutoConfig.from_pretrained`, which resolves a relative path against the working
directory, not against the config file. The export therefore writes the absolute path of
`<out>/text`; after moving the folder, `relink_text_tower(new_location)` (or
`medconcept export-open-clip --relink DIR`) rewrites it. Nothing else names a path.

Only the global image and text embeddings, the logit scale (clamped as ConceptCLIP clamps it)
and the SigLIP logit bias are exported: the PC-Align heads (patch and concept MLPs, their
scale and bias) have no place in an open_clip model and are left out.

open_clip is a test extra: this module never imports it (tests load the folder with it).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"  # the name open_clip's local-dir loader prefers
TEXT_FOLDER = "text"
# Encoder-only Hugging Face model types open_clip's HF text adapter knows (open_clip/hf_configs.py).
HF_TEXT_TYPES = ("bert", "roberta", "xlm-roberta")
IMAGE_POOLS = {"token": "tok", "avg": "avg"}
IMAGE_ACTS = ("gelu", "quick_gelu")
TEXT_POOLERS = {"cls": "cls_last_hidden_state_pooler", "mean": "mean_pooler"}  # never BERT's tanh pooler
# Special-token roles a Hugging Face tokenizer needs named, by BERT's and RoBERTa's spellings.
SPECIAL_ROLES = {"unk_token": ("[UNK]", "<unk>"), "cls_token": ("[CLS]", "<s>"),
                 "sep_token": ("[SEP]", "</s>"), "mask_token": ("[MASK]", "<mask>")}
# Probe texts whose ids must agree between medconcept's tokenizer and the exported one.
# timm ViT block parameter names -> open_clip ResidualAttentionBlock names (same layouts: qkv rows q|k|v).
BLOCK_NAMES = (("norm1.", "ln_1."), ("attn.qkv.weight", "attn.in_proj_weight"), ("attn.qkv.bias", "attn.in_proj_bias"),
               ("attn.proj.", "attn.out_proj."), ("norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
               ("mlp.fc2.", "mlp.c_proj."))
PROBE_TEXTS = ("Axial CT shows a pleural effusion.", "", "Ground-glass opacity (GGO), right lung; no nodule.")


def read_trained_config(trained_dir: str | Path) -> dict:
    """config.json of a medconcept ConceptCLIP training output; ValueError naming what is wrong."""
    folder = Path(trained_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (expected a train_conceptclip output folder)")
    needed = ["config.json", "model.safetensors", "tokenizer/tokenizer.json"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: not a medconcept training output (missing {', '.join(missing)})")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / 'config.json'}: not JSON ({error})") from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{folder / 'config.json'}: no model config (the 'model' key of a training output)")
    kind = model.get("model")
    if kind == "fvlm":
        raise ValueError(f"{folder}: an fVLM model (3-D CT tower, anatomy-level alignment); open_clip has no such "
                         "architecture, only ConceptCLIP exports")
    if kind != "conceptclip":
        raise ValueError(f"{folder}: model kind {kind!r} is not ConceptCLIP")
    preprocess = config.get("preprocess")
    if not isinstance(preprocess, dict) or "mean" not in preprocess or "std" not in preprocess:
        raise ValueError(f"{folder / 'config.json'}: no preprocess mean/std (written by train_conceptclip)")
    return config


def check_expressible(model_cfg: dict) -> None:
    """ValueError when open_clip's towers cannot compute what this ConceptCLIP computes."""
    from models.image_encoder import ImageEncoderConfig
    from models.text_encoder import TextEncoderConfig

    image = ImageEncoderConfig.from_dict(model_cfg["image"])
    text = TextEncoderConfig.from_dict(model_cfg["text"])
    problems = []
    if image.pool not in IMAGE_POOLS:
        problems.append(f"image.pool {image.pool!r} (open_clip pools 'token' or 'avg')")
    if image.act not in IMAGE_ACTS:
        problems.append(f"image.act {image.act!r} (open_clip's ViT has GELU or QuickGELU)")
    if image.width % image.heads:
        problems.append(f"image.width {image.width} not a multiple of image.heads {image.heads}")
    if text.pool not in TEXT_POOLERS:
        problems.append(f"text.pool {text.pool!r} (open_clip's HF poolers: cls, mean)")
    if image.attention_window is not None:
        problems.append(f"image.attention_window {image.attention_window} (open_clip's ViT attends globally)")
    if problems:
        raise ValueError("open_clip cannot express this ConceptCLIP: " + "; ".join(problems))


def _build_trained(trained_dir: Path, model_cfg: dict):
    """The trained ConceptCLIP (weights loaded, eval mode) and its tokenizer."""
    from models import build_model
    from models.text_encoder import TextTokenizer
    from tasks.training.outputs import load_weights

    cfg = copy.deepcopy(model_cfg)
    cfg["image"]["weights"] = None  # the trained weights replace any start checkpoint
    try:
        model = build_model(cfg)
    except OSError as error:  # text.hf_folder gone: its config is the text tower's architecture
        raise ValueError(f"{trained_dir}: cannot rebuild the model ({error})") from None
    try:
        load_weights(model, trained_dir / "model.safetensors")
    except RuntimeError as error:
        raise ValueError(f"{trained_dir}: model.safetensors does not fit config.json's model: {error}") from None
    tokenizer = TextTokenizer.load(trained_dir / "tokenizer", int(cfg["text"]["context_length"]))
    return model.eval(), tokenizer


def image_state(model) -> dict[str, torch.Tensor]:
    """open_clip VisionTransformer keys (`visual.`) from the timm ViT and the image projection."""
    cfg = model.visual.cfg
    src = {k: v.detach().float().clone() for k, v in model.visual.vit.state_dict().items()}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return src[key]

    out = {"visual.conv1.weight": take("patch_embed.proj.weight"),
           "visual.class_embedding": take("cls_token").reshape(-1)}
    pos = take("pos_embed")[0].clone()
    if "patch_embed.proj.bias" in src:  # open_clip's conv1 has no bias: add it to every patch position
        pos[1:] += take("patch_embed.proj.bias")
    out["visual.positional_embedding"] = pos
    if cfg.pre_norm:
        out["visual.ln_pre.weight"], out["visual.ln_pre.bias"] = take("norm_pre.weight"), take("norm_pre.bias")
    for key in sorted(src):
        if not key.startswith("blocks."):
            continue
        _, index, rest = key.split(".", 2)
        new = next((rest.replace(old, name, 1) for old, name in BLOCK_NAMES if rest.startswith(old)), None)
        if new is not None:
            out[f"visual.transformer.resblocks.{index}.{new}"] = take(key)
    # timm's final norm: on every token before CLS pooling, on the pooled mean after "avg" pooling
    final = "norm" if cfg.pool == "token" else "fc_norm"
    out["visual.ln_post.weight"], out["visual.ln_post.bias"] = take(f"{final}.weight"), take(f"{final}.bias")
    out["visual.proj"] = model.image_proj.weight.detach().float().t().contiguous()
    left = sorted(set(src) - used)
    if left:
        raise ValueError(f"open_clip cannot express this image tower: timm weights without a place {left[:6]}")
    return out


def text_state(model) -> dict[str, torch.Tensor]:
    """open_clip HFTextEncoder keys (`text.`): the Hugging Face model and a bias-free projection."""
    out = {f"text.transformer.{k}": v.detach().float().clone()
           for k, v in model.text.bert.state_dict().items()
           if not k.startswith("pooler.")}  # BERT's tanh pooler is unused by ConceptCLIP's pools
    out["text.proj.weight"] = model.text_proj.weight.detach().float().clone()
    return out


def logit_state(model) -> dict[str, torch.Tensor]:
    """open_clip applies exp(logit_scale) unclamped: export the value ConceptCLIP uses."""
    scale = model.logit_scale.detach().float().clamp(max=model.max_logit_scale)
    return {"logit_scale": scale.clone(), "logit_bias": model.logit_bias.detach().float().clone()}


def hf_tokenizer(tokenizer):
    """A transformers fast tokenizer with the same vocabulary, normalizer and special tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer.tok.to_str())  # a copy: padding and truncation are HF's to set
    pad = backend.id_to_token(tokenizer.pad_id)
    if pad is None:
        raise ValueError(f"tokenizer: pad id {tokenizer.pad_id} has no token")
    special = {"pad_token": pad}
    for role, names in SPECIAL_ROLES.items():
        found = next((n for n in names if backend.token_to_id(n) is not None), None)
        if found:
            special[role] = found
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tokenizer.context_length, **special)


def check_tokenizer_ids(folder: Path, tokenizer) -> None:
    """The saved tokenizer gives medconcept's ids, truncation included (padding as open_clip asks)."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    long_text = " ".join([PROBE_TEXTS[0]] * (tokenizer.context_length // 2 + 1))
    texts = list(PROBE_TEXTS) + [long_text]
    ours = tokenizer.encode(texts)["input_ids"]
    theirs = loaded(texts, return_tensors="pt", max_length=tokenizer.context_length, padding="max_length",
                    truncation=True).input_ids
    if not torch.equal(ours, theirs):
        raise ValueError("the exported tokenizer's ids differ from medconcept's (transformers' tokenizer "
                         f"wrapper changed?): {ours.tolist()} != {theirs.tolist()}")


def open_clip_config(model, preprocess: dict, text_dir: Path) -> dict:
    """open_clip_config.json: the model config CustomTextCLIP takes, and image preprocessing."""
    image, text = model.visual.cfg, model.text.cfg
    vision_cfg = {
        "image_size": image.image_size, "patch_size": image.patch_size, "width": image.width,
        "layers": image.depth, "head_width": image.width // image.heads, "mlp_ratio": image.mlp_ratio,
        "no_ln_pre": not image.pre_norm, "pool_type": IMAGE_POOLS[image.pool],
        "final_ln_after_pool": image.pool == "avg", "norm_kwargs": {"eps": image.norm_eps},
    }
    text_cfg = {
        "hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
        "hf_proj_type": "linear", "hf_pooler_type": TEXT_POOLERS[text.pool],
        "context_length": text.context_length, "vocab_size": model.text.bert.config.vocab_size,
        "width": model.text.width,
    }
    logits = {k: v.item() for k, v in logit_state(model).items()}

    def per_channel(value) -> list[float]:
        return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]

    return {
        "model_cfg": {
            "embed_dim": model.image_proj.out_features, "quick_gelu": image.act == "quick_gelu",
            "init_logit_scale": logits["logit_scale"], "init_logit_bias": logits["logit_bias"],
            "custom_text": True, "vision_cfg": vision_cfg, "text_cfg": text_cfg,
        },
        "preprocess_cfg": {
            "size": image.image_size, "mean": per_channel(preprocess["mean"]), "std": per_channel(preprocess["std"]),
            # training letterboxes (border-mean fill) and resizes bilinearly; "longest" pads with fill_color
            "interpolation": "bilinear", "resize_mode": "longest" if preprocess.get("letterbox") else "squash",
        },
    }


def write_text_tower(bert, hf_tok, pad_id: int, folder: Path) -> None:
    """The text tower as a Hugging Face model folder, its pad_token_id the tokenizer's pad id."""
    model_type = bert.config.model_type
    if model_type not in HF_TEXT_TYPES:
        raise ValueError(f"open_clip cannot express this text tower: Hugging Face model type {model_type!r} "
                         f"(open_clip's HF adapter knows {', '.join(HF_TEXT_TYPES)})")
    config = copy.deepcopy(bert.config)
    if config.pad_token_id != pad_id:
        if model_type != "bert":  # RoBERTa's position ids count from its pad id: changing it changes outputs
            raise ValueError(f"open_clip cannot express this text tower: its pad_token_id {config.pad_token_id} "
                             f"is not the tokenizer's pad id {pad_id} (open_clip masks by pad_token_id)")
        config.pad_token_id = pad_id  # open_clip builds the attention mask from it; BERT's outputs ignore it
    state = {k: v for k, v in bert.state_dict().items() if not k.startswith("pooler.")}
    bert.save_pretrained(str(folder), state_dict=state)
    config.save_pretrained(str(folder))  # over the original's config.json
    hf_tok.save_pretrained(str(folder))


def _write_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(path), metadata={"format": "pt"})


def _write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def export_open_clip(trained_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the open_clip folder for a train_conceptclip output; returns its absolute path.

    The folder is built as a hidden sibling and renamed into place, so a failure leaves nothing;
    an existing non-empty out_dir is refused rather than overwritten.
    """
    trained = Path(trained_dir)
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder; choose a new export folder")
    config = read_trained_config(trained)
    model_cfg = config["model"]
    check_expressible(model_cfg)
    model, tokenizer = _build_trained(trained, model_cfg)
    state = {**image_state(model), **text_state(model), **logit_state(model)}
    hf_tok = hf_tokenizer(tokenizer)
    oc_cfg = open_clip_config(model, config["preprocess"], out / TEXT_FOLDER)

    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        write_text_tower(model.text.bert, hf_tok, tokenizer.pad_id, partial / TEXT_FOLDER)
        hf_tok.save_pretrained(str(partial))
        check_tokenizer_ids(partial, tokenizer)
        _write_json(oc_cfg, partial / OPEN_CLIP_CONFIG)
        _write_weights(state, partial / OPEN_CLIP_WEIGHTS)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def relink_text_tower(export_dir: str | Path) -> Path:
    """Point open_clip_config.json's text tower at `<export_dir>/text` after the folder moved."""
    folder = Path(export_dir).resolve()
    path = folder / OPEN_CLIP_CONFIG
    if not path.is_file() or not (folder / TEXT_FOLDER / "config.json").is_file():
        raise ValueError(f"{folder}: not an open_clip export (needs {OPEN_CLIP_CONFIG} and {TEXT_FOLDER}/config.json)")
    data = json.loads(path.read_text(encoding="utf-8"))
    text_cfg = data["model_cfg"]["text_cfg"]
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(folder / TEXT_FOLDER)
    tmp = path.with_suffix(".json.tmp")
    _write_json(data, tmp)
    os.replace(tmp, path)
    return folder

