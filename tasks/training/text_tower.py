"""The text tower both training stages configure the same way: a WordPiece tokenizer trained
on the training text, or a local Hugging Face folder (optionally frozen)."""
from __future__ import annotations

from pathlib import Path


def build_tokenizer(cfg: dict, texts: list[str], context_length: int, repo: Path):
    from models.text_encoder import TextTokenizer, resolve_hf_folder

    tcfg = cfg["tokenizer"]
    if tcfg["hf_folder"]:
        folder = Path(resolve_hf_folder(tcfg["hf_folder"]))
        return TextTokenizer.load(folder if folder.is_absolute() else repo / folder, context_length)
    return TextTokenizer.train(texts, tcfg["vocab_size"], context_length,
                               tcfg["min_frequency"])


def text_tower(cfg: dict, model_cfg: dict, texts: list[str], repo: Path):
    """The tokenizer for a stage section; writes the tower's settings into model_cfg["text"]."""
    from models.text_encoder import resolve_hf_folder

    tcfg = cfg["tokenizer"]
    text = model_cfg["text"]
    if tcfg["hf_folder"]:
        spec = str(tcfg["hf_folder"])  # python:<module> stays portable in config.json
        if spec.startswith("python:"):
            text["hf_folder"] = spec
        else:
            folder = Path(resolve_hf_folder(spec))
            text["hf_folder"] = str(folder if folder.is_absolute() else repo / folder)
    if tcfg["freeze"] is not None:
        text["freeze"] = bool(tcfg["freeze"])
    if tcfg["pool"]:
        text["pool"] = tcfg["pool"]
    tokenizer = build_tokenizer(cfg, texts, int(text["context_length"]), repo)
    text["vocab_size"] = tokenizer.vocab_size
    return tokenizer
