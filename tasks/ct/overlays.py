"""Visual QA: three orthogonal slices of a volume with its anatomy masks in colour."""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image


def anatomy_colours(anatomies: list[str]) -> dict[str, tuple[int, int, int]]:
    """A fixed, distinct colour per anatomy (hues spread by a golden-ratio walk)."""
    out = {}
    for n, name in enumerate(sorted(anatomies)):
        r, g, b = colorsys.hsv_to_rgb((n * 0.618033988749895) % 1.0, 0.75, 1.0)
        out[name] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def _window(hu: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    lo = level - width / 2
    return (np.clip((hu.astype(np.float32) - lo) / width, 0, 1) * 255).astype(np.uint8)


def _panel(hu2d, lab2d, lut, alpha, pixel_mm, height_px: int) -> Image.Image:
    """A 2-D slice given as (horizontal, vertical) arrays, turned to a display image."""
    grey = _window(hu2d)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    colour = lut[lab2d]
    has = lab2d > 0
    rgb[has] = (1 - alpha) * rgb[has] + alpha * colour[has]
    # display: rows top-down = vertical axis descending; columns = horizontal axis
    img = Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 0, 2)[::-1]), "RGB")
    w_mm, h_mm = hu2d.shape[0] * pixel_mm[0], hu2d.shape[1] * pixel_mm[1]
    width_px = max(1, int(round(height_px * w_mm / h_mm)))
    return img.resize((width_px, height_px), Image.NEAREST)


def render_overlay(volume: np.ndarray, labels: np.ndarray, spacing, groups_ids: dict, path: str | Path,
                   height_px: int = 256, alpha: float = 0.45) -> Path:
    """Axial, coronal and sagittal slices through the labelled region's centre, side by side.

    Volumes are RAS+; x is reversed for display so the patient's right is on the
    viewer's left (radiological convention).
    """
    colours = anatomy_colours(list(groups_ids))
    lut = np.zeros((256, 3), np.float32)
    for anatomy, ids in groups_ids.items():
        for i in ids:
            if i < 256:
                lut[i] = colours[anatomy]
    centre = np.argwhere(labels > 0).mean(axis=0).astype(int) if labels.any() else np.array(labels.shape) // 2
    cx, cy, cz = (int(c) for c in centre)
    sx, sy, sz = spacing
    panels = [
        _panel(volume[::-1, :, cz], labels[::-1, :, cz], lut, alpha, (sx, sy), height_px),  # axial
        _panel(volume[::-1, cy, :], labels[::-1, cy, :], lut, alpha, (sx, sz), height_px),  # coronal
        _panel(volume[cx, :, :], labels[cx, :, :], lut, alpha, (sy, sz), height_px),  # sagittal: anterior right
    ]
    width = sum(p.width for p in panels) + 4 * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height_px), (0, 0, 0))
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width + 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=False)
    return path
