"""A trained model folder as `medconcept predict` opens it: what a training stage wrote, checked
before any weight is read, so a wrong folder is an error that says what is missing."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

KINDS = ("conceptclip", "fvlm")
REQUIRED = ("config.json", "model.safetensors", "tokenizer")


class NotAModelFolder(ValueError):
    """The folder given as a model is not a medconcept training stage's output."""


@dataclass
class ModelFolder:
    path: Path
    kind: str  # conceptclip | fvlm
    config: dict
    model: object
    tokenizer: object


def read_config(folder: str | Path) -> tuple[Path, str, dict]:
    """(folder, kind, config.json) of a trained model folder, or NotAModelFolder naming why."""
    path = Path(folder)
    if not path.is_dir():
        raise NotAModelFolder(f"model folder {path}: not a folder")
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise NotAModelFolder(f"model folder {path}: not a medconcept model (missing {', '.join(missing)}; "
                              "a train_conceptclip or train_fvlm output_dir holds them)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotAModelFolder(f"model folder {path}: config.json does not parse ({exc})") from None
    kind = (config.get("model") or {}).get("model") if isinstance(config, dict) else None
    if kind not in KINDS:
        raise NotAModelFolder(f"model folder {path}: config.json names model kind {kind!r}, "
                              f"expected one of {list(KINDS)}")
    if "preprocess" not in config:
        raise NotAModelFolder(f"model folder {path}: config.json has no 'preprocess' (what inference must "
                              "repeat); retrain with this version of medconcept")
    return path, kind, config


def open_model(folder: str | Path, expect: str | None = None) -> ModelFolder:
    """The model in eval mode with its tokenizer and config; `expect` a kind, or any."""
    from tasks.training.outputs import load_trained

    path, kind, _ = read_config(folder)
    if expect and kind != expect:
        raise NotAModelFolder(f"model folder {path} holds a {kind} model; this input needs a {expect} model")
    try:
        model, tokenizer, config = load_trained(path)
    except (RuntimeError, KeyError, ValueError) as exc:  # weights that do not fit their own config
        raise NotAModelFolder(f"model folder {path}: the weights do not load into its config ({exc})"[:600]) from None
    return ModelFolder(path, kind, config, model, tokenizer)
