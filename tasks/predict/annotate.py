"""Concept annotation as ConceptCLIP offers it: an image and candidate concepts (CUIs or names)
in, per-concept scores from the global and the patch similarities, and the patch maps, out.

score = (1 - patch_weight) * global cosine + patch_weight * mean of the top-k patch cosines,
the blend evaluate tunes on validation (evaluate.conceptclip_tuning); the PC-Align probability
(sigmoid of the best patch's scaled similarity, the training objective's own reading) beside it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

CUI = re.compile(r"^C\d{7}$")


@dataclass(frozen=True)
class Candidate:
    cui: str | None  # None: a name the user gave, not a concept of any vocabulary
    name: str        # the words put into the prompt


@dataclass(frozen=True)
class Wording:
    templates: tuple[str, ...] = ("{name}",)
    patch_weight: float = 1.0
    top_k: int = 3
    wording: str = "surface"  # surface (the captions' words, as trained) | preferred (vocabulary names)


def trained_concepts(config: dict) -> list[dict]:
    """The concepts a model folder was trained on: cui, preferred_name, surface."""
    concepts = config.get("concepts")
    if concepts is None:
        raise ValueError("the model folder's config.json lists no trained concepts (written by train_conceptclip "
                         "since predict exists): retrain, or give candidates with --concepts")
    return concepts


def resolve_candidates(given: list[str] | None, config: dict, wording: str,
                       names: dict[str, str] | None = None) -> list[Candidate]:
    """Candidates from what the user gave (a CUI is looked up in the model's concepts, then in
    `names`, e.g. umls_index's concepts table; anything else is a name), or the model's own."""
    if wording not in ("surface", "preferred"):
        raise ValueError(f"wording must be 'surface' or 'preferred', not {wording!r}")
    known = {c["cui"]: c[wording if wording == "surface" else "preferred_name"]
             for c in (config.get("concepts") or [])}
    if not given:
        return [Candidate(c["cui"], known[c["cui"]]) for c in trained_concepts(config)]
    out, seen = [], set()
    for raw in given:
        text = " ".join(str(raw).split())
        if not text:
            raise ValueError("an empty candidate concept was given")
        if CUI.match(text):
            name = known.get(text) or (names or {}).get(text)
            if not name:
                raise ValueError(f"candidate {text}: a CUI neither the model was trained on nor in the concepts "
                                 "table given (--concepts-table); give its name instead")
            candidate = Candidate(text, name)
        else:
            candidate = Candidate(None, text)
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def _prompt_tokens(tokenizer, candidates: list[Candidate], templates: tuple[str, ...]):
    texts = [t.format(name=c.name.lower()) for c in candidates for t in templates]
    enc = tokenizer.encode(texts)
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def annotate(model, tokenizer, images: torch.Tensor, candidates: list[Candidate], how: Wording) -> dict:
    """For images [B, 3, S, S] (the model's preprocessing) and C candidates: [B, C] arrays
    `score`, `global`, `local`, `pc_align_probability`, and `maps` [B, C, g, g] (patch cosines),
    each candidate's averaged over the templates."""
    if not candidates:
        raise ValueError("no candidate concepts to score")
    if not 0.0 <= how.patch_weight <= 1.0:
        raise ValueError(f"patch_weight must lie in [0, 1], not {how.patch_weight}")
    ids, mask = _prompt_tokens(tokenizer, candidates, how.templates)
    b, c, t = images.shape[0], len(candidates), len(how.templates)
    glob, local = model.zero_shot_parts(images, ids, mask, how.top_k)
    logits = model.concept_patch_scores(images, ids, mask)
    maps = model.patch_concept_map(images, ids, mask)
    g = maps.shape[-1]
    mean = lambda x: x.reshape(b, c, t).mean(-1).numpy()  # noqa: E731
    glob, local = mean(glob), mean(local)
    return {"score": (1 - how.patch_weight) * glob + how.patch_weight * local, "global": glob, "local": local,
            "pc_align_probability": torch.sigmoid(logits.reshape(b, c, t)).mean(-1).numpy(),
            "maps": maps.reshape(b, c, t, g, g).mean(2).numpy().astype(np.float32)}
