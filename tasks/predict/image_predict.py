"""`medconcept predict` on images with a ConceptCLIP model folder: per image, every candidate's
scores (JSON) and a PNG of the image with the maps of its top-scoring candidates.

Outputs are named by the image bytes' sha256 (its first 16 hex digits), not by the file name,
which may carry a patient's name; `keep_names` names them by the file's stem instead."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from tasks.common.rejection import Rejected
from tasks.predict.annotate import Candidate, Wording, annotate
from tasks.predict.images import list_images, model_image
from tasks.predict.model_folder import ModelFolder

BATCH = 16


def _output_name(path: Path, data: bytes, keep_names: bool, used: set[str]) -> str:
    name = path.stem if keep_names else hashlib.sha256(data).hexdigest()[:16]
    base, n = name, 1
    while name in used:  # two files with one stem, or the same bytes twice
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def predict_images(folder: ModelFolder, inputs: list[str | Path], out: str | Path, candidates: list[Candidate],
                   how: Wording, top_maps: int = 3, keep_names: bool = False) -> dict:
    """Writes <out>/<name>.json and <out>/<name>.png per image and <out>/predictions.json (every
    image, scored or refused with its reason); returns the latter."""
    from tasks.evaluate.plots import patch_overlay_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [f for path in inputs for f in list_images(path)]
    used: set[str] = set()
    ready, refused = [], []
    for path in files:
        data = path.read_bytes()
        name = _output_name(path, data, keep_names, used)
        try:
            base, tensor = model_image(data, folder.config["preprocess"])
        except Rejected as exc:
            refused.append({"image": name, "reason": exc.reason, "detail": exc.detail})
            continue
        ready.append((name, hashlib.sha256(data).hexdigest(), base, tensor))
    images = []
    for start in range(0, len(ready), BATCH):
        batch = ready[start : start + BATCH]
        import torch

        result = annotate(folder.model, folder.tokenizer, torch.stack([b[3] for b in batch]), candidates, how)
        for row, (name, digest, base, _) in enumerate(batch):
            scores = [{"cui": c.cui, "name": c.name, "score": float(result["score"][row, j]),
                       "global": float(result["global"][row, j]), "local": float(result["local"][row, j]),
                       "pc_align_probability": float(result["pc_align_probability"][row, j])}
                      for j, c in enumerate(candidates)]
            order = sorted(range(len(candidates)), key=lambda j: -scores[j]["score"])
            record = {"image": name, "sha256": digest, "concepts": [scores[j] for j in order],
                      "map_grid": int(result["maps"].shape[-1])}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            top = order[:top_maps]
            patch_overlay_png({"key": name, "caption": "", "image": base,
                               "concepts": [f"{candidates[j].name} {scores[j]['score']:.2f}" for j in top],
                               "maps": result["maps"][row, top]}, out / f"{name}.png")
            images.append({"image": name, "top": [scores[j]["name"] for j in top]})
    summary = {"model": folder.kind, "preset": folder.config.get("preset"),
               "scoring": asdict(how), "candidates": len(candidates),
               "images_in": len(files), "images_scored": len(images), "images_refused": refused, "images": images}
    (out / "predictions.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
