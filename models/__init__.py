"""Torch modules and losses only: no file I/O, no params parsing."""


def build_model(cfg: dict):
    """A model from its config dict (models/configs/*.json, after the vocabulary size is set)."""
    kind = cfg.get("model")
    if kind == "conceptclip":
        from models.conceptclip import ConceptCLIP

        return ConceptCLIP(cfg)
    if kind == "fvlm":
        from models.fvlm import FVLM

        return FVLM(cfg)
    raise ValueError(f"unknown model kind {kind!r}")
