"""A user's image as ConceptCLIP saw its training figures: the figures stage's normalisation
(orientation, RGB, long side, JPEG at its quality, settings read from the model folder), then
training's letterbox and resize, unaugmented."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def list_images(path: str | Path) -> list[Path]:
    """An image file, or every image file under a folder (sorted, recursively)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"predict: no file or folder at {path}")
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ValueError(f"predict: no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return found


def model_image(data: bytes, preprocess: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(base square uint8 [3, S, S] for drawing, model input [3, size, size]); an image that
    the figures stage would reject raises tasks.common.rejection.Rejected with its reason."""
    from PIL import Image

    from tasks.figures.images import normalise
    from tasks.training.conceptclip_data import base_square, unaugmented_input

    source = preprocess["source_image"]
    encoded = normalise(data, int(source["max_pixels"]), int(source["max_side"]), int(source["jpeg_quality"]))
    with Image.open(io.BytesIO(encoded.jpeg)) as im:  # the bytes training read back from its shards
        rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    size = int(preprocess["image_size"])
    base = base_square(rgb, size)
    return base, unaugmented_input(base, size)
