"""Synthetic medical images whose visible content matches the findings they are drawn with.

Pure functions of a numpy Generator: same seed, same pixels. Each renderer also records
where it drew each finding (`regions`: finding -> bool mask), moved with the image by the
same jitter, so the sample's truth can score whether a model's map points at the finding.
Recording draws nothing from the Generator: the pixels are the same with or without it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def _disk(canvas: np.ndarray, cy: float, cx: float, r: float, value: float, soft: float = 1.5) -> None:
    h, w = canvas.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    weight = np.clip((r - dist) / soft + 0.5, 0.0, 1.0)
    canvas[:] = canvas * (1 - weight) + value * weight
    return weight > 0.5


def _ellipse(canvas: np.ndarray, cy, cx, ry, rx, value, soft=1.5, mask=None) -> np.ndarray:
    h, w = canvas.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    weight = np.clip((1 - dist) * min(ry, rx) / soft + 0.5, 0.0, 1.0)
    if mask is not None:
        weight = weight * mask
    canvas[:] = canvas * (1 - weight) + value * weight
    return weight > 0.5


def _noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    return rng.normal(0.0, sigma, size=shape)


def _mark(regions: dict | None, finding: str, mask: np.ndarray) -> None:
    if regions is not None:
        regions[finding] = regions[finding] | mask if finding in regions else mask.copy()


def ct_chest(rng: np.random.Generator, size: int, findings: set[str], regions: dict | None = None) -> np.ndarray:
    """Axial chest CT slice in display grey levels (0 air .. 255 bone)."""
    s = size
    img = np.zeros((s, s), dtype=np.float64)
    _ellipse(img, s * 0.5, s * 0.5, s * 0.36, s * 0.46, 110)  # body soft tissue
    lung_value = 25.0
    lungs = []
    for side in (-1, 1):
        cx = s * (0.5 + side * 0.2)
        lungs.append(_ellipse(img, s * 0.47, cx, s * 0.27, s * 0.15, lung_value))
    heart_r = s * (0.19 if "cardiomegaly" in findings else 0.1)
    heart = _ellipse(img, s * 0.55, s * 0.47, heart_r * 0.9, heart_r, 135)
    if "cardiomegaly" in findings:
        _mark(regions, "cardiomegaly", heart)
    _disk(img, s * 0.33, s * 0.55, s * 0.04, 140)  # aorta
    if "arterial_calcification" in findings:
        for angle in rng.uniform(0, 2 * np.pi, size=3):
            _mark(regions, "arterial_calcification", _disk(
                img, s * 0.33 + np.sin(angle) * s * 0.035, s * 0.55 + np.cos(angle) * s * 0.035, s * 0.012, 250, 0.8))
    _disk(img, s * 0.8, s * 0.5, s * 0.06, 230)  # vertebral body
    lung_side = int(rng.integers(0, 2))
    lung_cx = s * (0.5 + (1 if lung_side else -1) * 0.2)
    if "pleural_effusion" in findings:
        # dependent fluid: posterior crescent inside the lung's outline
        yy = np.arange(s)[:, None]
        crescent = lungs[lung_side] & (yy > s * 0.52)
        img[crescent] = 95
        _mark(regions, "pleural_effusion", crescent)
    if "nodule" in findings:
        cy = s * rng.uniform(0.35, 0.5)
        cx = lung_cx + s * rng.uniform(-0.05, 0.05)
        _mark(regions, "nodule", _disk(img, cy, cx, s * rng.uniform(0.04, 0.055), 160))
    if "ground_glass_opacity" in findings:
        cy = s * rng.uniform(0.35, 0.5)
        patch = np.zeros_like(img)
        _ellipse(patch, cy, lung_cx, s * 0.08, s * 0.07, 1.0, soft=6)
        img = img + patch * lungs[lung_side] * 55
        _mark(regions, "ground_glass_opacity", (patch > 0.5) & lungs[lung_side])
    if "consolidation" in findings:
        cy = s * rng.uniform(0.4, 0.55)
        _mark(regions, "consolidation", _ellipse(img, cy, lung_cx, s * 0.07, s * 0.08, 115, mask=lungs[lung_side]))
    if "emphysema" in findings:
        for _ in range(14):
            side = int(rng.integers(0, 2))
            cx = s * (0.5 + (1 if side else -1) * 0.2) + rng.uniform(-0.1, 0.1) * s
            cy = s * rng.uniform(0.28, 0.62)
            _mark(regions, "emphysema", _disk(img, cy, cx, s * rng.uniform(0.012, 0.022), 2, 0.8))
    img += _noise(rng, img.shape, 4.0)
    return np.clip(img, 0, 255)


def ct_abdomen(rng: np.random.Generator, size: int, findings: set[str], regions: dict | None = None) -> np.ndarray:
    s = size
    img = np.zeros((s, s), dtype=np.float64)
    _ellipse(img, s * 0.5, s * 0.5, s * 0.37, s * 0.46, 100)
    _ellipse(img, s * 0.45, s * 0.33, s * 0.2, s * 0.17, 130)
    spleen_r = s * (0.11 if "splenomegaly" in findings else 0.06)
    spleen = _ellipse(img, s * 0.42, s * 0.74, spleen_r * 1.3, spleen_r, 125)
    if "splenomegaly" in findings:
        _mark(regions, "splenomegaly", spleen)
    kidneys = []
    for cx in (s * 0.35, s * 0.65):
        kidneys.append(_ellipse(img, s * 0.66, cx, s * 0.07, s * 0.045, 150))
    _disk(img, s * 0.42, s * 0.55, s * 0.07, 60)  # stomach with fluid
    _disk(img, s * 0.8, s * 0.5, s * 0.06, 230)
    if "liver_mass" in findings:
        _mark(regions, "liver_mass", _disk(img, s * rng.uniform(0.38, 0.5), s * rng.uniform(0.27, 0.37),
                                            s * rng.uniform(0.06, 0.08), 65))
    if "renal_cyst" in findings:
        side = int(rng.integers(0, 2))
        cx = s * (0.35 if side == 0 else 0.65)
        _mark(regions, "renal_cyst", _disk(img, s * 0.64, cx + s * 0.01, s * 0.045, 60))
    img += _noise(rng, img.shape, 4.0)
    return np.clip(img, 0, 255)


def radiograph(rng: np.random.Generator, size: int, findings: set[str], regions: dict | None = None) -> np.ndarray:
    """Frontal chest radiograph: air dark, soft tissue grey, bone bright."""
    s = size
    img = np.full((s, s), 20.0)
    _ellipse(img, s * 0.55, s * 0.5, s * 0.45, s * 0.42, 150)
    lungs = []
    for side in (-1, 1):
        lungs.append(_ellipse(img, s * 0.5, s * (0.5 + side * 0.19), s * 0.3, s * 0.14, 55))
    heart_rx = s * (0.22 if "cardiomegaly" in findings else 0.11)
    heart = _ellipse(img, s * 0.66, s * 0.52, s * 0.14, heart_rx, 165)
    if "cardiomegaly" in findings:
        _mark(regions, "cardiomegaly", heart)
    img[:, int(s * 0.48): int(s * 0.52)] = np.maximum(img[:, int(s * 0.48): int(s * 0.52)], 170)  # spine
    for k in range(6):  # ribs
        y = s * (0.28 + 0.08 * k)
        for side in (-1, 1):
            yy, xx = np.mgrid[0:s, 0:s]
            band = np.abs(yy - (y + 0.15 * np.abs(xx - s * 0.5))) < s * 0.008
            img[band & lungs[0 if side < 0 else 1]] += 35
    side = int(rng.integers(0, 2))
    if "pleural_effusion" in findings:
        yy = np.arange(s)[:, None]
        img[lungs[side] & (yy > s * 0.6)] = 160
        _mark(regions, "pleural_effusion", lungs[side] & (yy > s * 0.6))
    if "nodule" in findings:
        cx = s * (0.5 + (1 if side else -1) * 0.19) + rng.uniform(-0.04, 0.04) * s
        _mark(regions, "nodule", _disk(img, s * rng.uniform(0.35, 0.55), cx, s * 0.045, 185))
    if "pneumothorax" in findings:
        apex = lungs[side].copy()
        yy = np.arange(s)[:, None]
        apex &= yy < s * 0.45
        img[apex] = 5
        _mark(regions, "pneumothorax", apex)
    img += _noise(rng, img.shape, 3.0)
    return np.clip(img, 0, 255)


RENDERERS = {"ct_chest": ct_chest, "ct_abdomen": ct_abdomen, "radiograph": radiograph}


def _jitter(rng: np.random.Generator, image: Image.Image, regions: dict | None = None) -> Image.Image:
    """Patient and acquisition variation: position, size, rotation, window and contrast.
    The regions move with the pixels (same rotation, shift and scale, nearest neighbour)."""
    size = image.width
    angle = float(rng.uniform(-7, 7))
    scale = float(rng.uniform(0.88, 1.1))
    dx, dy = (float(v) for v in rng.uniform(-0.06, 0.06, size=2) * size)

    def move(im: Image.Image, resample, fill: int, pad: int | None) -> Image.Image:
        im = im.rotate(angle, resample=resample, translate=(dx, dy), fillcolor=fill)
        if scale != 1.0:
            side = int(round(size * scale))
            resized = im.resize((side, side), resample)
            # an image is padded with its rotated corner's grey; a mask with 0
            canvas = Image.new("L", (size, size), int(im.getpixel((0, 0))) if pad is None else pad)
            offset = (size - side) // 2
            canvas.paste(resized, (offset, offset)) if side <= size else canvas.paste(
                resized.crop((-offset, -offset, -offset + size, -offset + size)), (0, 0))
            im = canvas
        return im

    image = move(image, Image.BILINEAR, int(image.getpixel((0, 0))), None)
    for finding, mask in (regions or {}).items():
        regions[finding] = np.asarray(move(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"),
                                           Image.NEAREST, 0, 0)) > 127
    gamma = float(rng.uniform(0.8, 1.25))
    lut = [int(round(255 * (v / 255) ** gamma)) for v in range(256)]
    return image.point(lut)


def render_panel(rng: np.random.Generator, kind: str, size: int, findings: set[str],
                 regions: dict | None = None) -> Image.Image:
    """One panel; `regions`, when given, receives finding -> bool mask in the panel's pixels."""
    pixels = RENDERERS[kind](rng, size, findings, regions).astype(np.uint8)
    image = _jitter(rng, Image.fromarray(pixels, mode="L"), regions)
    return image.filter(ImageFilter.GaussianBlur(0.6)).convert("RGB")


PANEL_GAP = 4  # white pixels between the panels of a compound figure
HARD_LAYOUT_MARGIN = 8  # white frame around the figures laid out by hard_layout
INSET_FRAME = 3  # white frame around an inset panel
# Layouts that defeat a plain gutter grid (tasks/figures/panel_detect.py must still find them),
# drawn from their own generator so the rest of the sample keeps its draws.
HARD_LAYOUTS = ("row", "row", "unequal", "touching", "inset")


def panel_offsets(panels: list[Image.Image]) -> list[int]:
    """Each panel's left edge in the composed figure (panels sit side by side, top-aligned)."""
    offsets, x = [], 0
    for panel in panels:
        offsets.append(x)
        x += panel.width + PANEL_GAP
    return offsets


def row_layout(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """Side by side, top-aligned, PANEL_GAP apart, no margin: (canvas size, box per panel)."""
    boxes, x = [], 0
    for w, h in sizes:
        boxes.append((x, 0, x + w, h))
        x += w + PANEL_GAP
    return (x - PANEL_GAP, max(h for _, h in sizes)), boxes


def hard_layout(name: str, side: int, n: int) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """(canvas size, box per panel, x1 and y1 exclusive) for n square panels of `side` pixels:
    unequal: the first panel large, the others beside it (stacked when two);
    touching: a row without gutters; inset: the last panel shrunk into the first one's
    bottom-right corner inside a white frame, the others in a row."""
    m, g = HARD_LAYOUT_MARGIN, PANEL_GAP
    if name == "unequal":
        big = 2 * side + g if n >= 3 else side * 3 // 2
        boxes = [(m, m, m + big, m + big)] + [
            (m + big + g, m + k * (side + g), m + big + g + side, m + k * (side + g) + side) for k in range(n - 1)]
    elif name == "touching":
        boxes = [(m + k * side, m, m + (k + 1) * side, m + side) for k in range(n)]
    elif name == "inset":
        boxes = [(m + k * (side + g), m, m + k * (side + g) + side, m + side) for k in range(n - 1)]
        small = int(side * 0.42)
        x1, y1 = boxes[0][2] - INSET_FRAME - 6, boxes[0][3] - INSET_FRAME - 6
        boxes.append((x1 - small, y1 - small, x1, y1))
    else:
        raise ValueError(f"unknown layout {name!r}")
    width = max(b[2] for b in boxes) + m
    height = max(b[3] for b in boxes) + m
    return (width, height), boxes


def compose_panels(panels: list[Image.Image], letters: list[str] | None,
                   layout: tuple[tuple[int, int], list[tuple[int, int, int, int]]] | None = None) -> Image.Image:
    """Place panels in their boxes (default: side by side, row_layout), resized to the box;
    write the panel letter in each top-left corner; an inset (a box inside an earlier one)
    gets a white frame."""
    size, boxes = layout or row_layout([p.size for p in panels])
    canvas = Image.new("RGB", size, (255, 255, 255))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas)
    for index, (panel, box) in enumerate(zip(panels, boxes)):
        x0, y0, x1, y1 = box
        if any(b[0] <= x0 and b[1] <= y0 and b[2] >= x1 and b[3] >= y1 for b in boxes[:index]):
            f = INSET_FRAME
            draw.rectangle([x0 - f, y0 - f, x1 + f - 1, y1 + f - 1], fill=(255, 255, 255))
        if panel.size != (x1 - x0, y1 - y0):
            panel = panel.resize((x1 - x0, y1 - y0), Image.BILINEAR)
        canvas.paste(panel, (x0, y0))
        if letters:
            draw.rectangle([x0 + 3, y0 + 3, x0 + 17, y0 + 17], fill=(0, 0, 0))
            draw.text((x0 + 6, y0 + 4), letters[index], fill=(255, 255, 255), font=font)
    return canvas
