"""predict's overlay PNG of a CT: slices through the labelled region, anatomy masks in colour,
each anatomy's top probability (or why it has none)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def overlay_png(volume: np.ndarray, labels: np.ndarray, affine: np.ndarray, groups, anatomies: list[str],
                names: dict[str, str], lines: dict[str, str], status: dict, path: Path, height_px: int = 200) -> None:
    """Three axial slices and one coronal slice through the labelled region, anatomy masks in
    colour (radiological view: the patient's right on the left), and per anatomy its top
    probability (or why it has none) in the anatomy's colour."""
    from PIL import Image, ImageDraw, ImageFont

    from tasks.ct.nifti_io import spacing
    from tasks.ct.overlays import _panel, anatomy_colours

    colours = anatomy_colours(anatomies)
    lut = np.zeros((256, 3), np.float32)
    for a, ids in groups.ids.items():
        for i in ids:
            if a in colours and i < 256:
                lut[i] = colours[a]
    shown = np.isin(labels, [i for a, ids in groups.ids.items() if a in colours for i in ids])
    sx, sy, sz = spacing(affine)
    if shown.any():
        where = np.argwhere(shown)
        lo, hi, centre = where.min(0), where.max(0), where.mean(0).astype(int)
    else:
        lo, hi, centre = np.zeros(3, int), np.array(volume.shape) - 1, np.array(volume.shape) // 2
    zs = sorted({int(round(lo[2] + f * (hi[2] - lo[2]))) for f in (0.25, 0.5, 0.75)})
    cy = int(centre[1])

    def panel(hu2d, lab2d, pixel_mm):
        # a slab (few slices) is drawn lower rather than wider than 1.5 x height_px
        w_mm, h_mm = hu2d.shape[0] * pixel_mm[0], hu2d.shape[1] * pixel_mm[1]
        return _panel(hu2d, lab2d, lut, 0.45, pixel_mm, max(16, min(height_px, int(1.5 * height_px * h_mm / w_mm))))

    panels = [panel(volume[::-1, :, z], labels[::-1, :, z], (sx, sy)) for z in zs]
    panels.append(panel(volume[::-1, cy, :], labels[::-1, cy, :], (sx, sz)))
    font = ImageFont.load_default()
    row_h = 13
    width = max(sum(p.width for p in panels) + 4 * (len(panels) - 1), 420)
    canvas = Image.new("RGB", (width, height_px + 18 + row_h * (len(anatomies) + 1)), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for n, p in enumerate(panels):
        canvas.paste(p, (x, 0))
        draw.text((x + 3, 2), "coronal" if n == len(panels) - 1 else f"axial {n + 1}", fill=(255, 255, 0), font=font)
        x += p.width + 4
    y = height_px + 6
    draw.text((4, y), "anatomy: top finding probability (zero-shot, per anatomy)", fill=(255, 255, 255), font=font)
    for a in anatomies:
        y += row_h
        colour = tuple(colours[a]) if status[a]["status"] == "usable" else (150, 150, 150)
        draw.text((4, y), f"{names.get(a, a)}: {lines[a]}", fill=colour, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=False)
