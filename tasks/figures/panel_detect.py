"""Panels of a compound figure found by classical layout analysis: no model weights.

Steps, on an RGB image (the stage's normalised JPEG; boxes are scaled back to source pixels):
1. Background colour: white where the border is mostly near-white or a near-white gutter
   line crosses the figure inside; else the border's most common colour.
2. Content mask: pixels farther than `tolerance` from the background in any channel.
3. Recursive XY-cut: a region is trimmed to its content, then split at its widest gutter (a
   run of rows or columns with almost no content) whose both sides are panel-sized. With an
   expected count (the subcaption letters of tasks/figures/panels.py) the widest gutters are
   cut until the count is reached; without one, only gutters wide enough to be unambiguous.
4. Fallbacks when the gutters give too few panels: connected components of content inside
   a region (an inset in a white frame, panels that no guillotine cut separates), then an
   equal split of a region whose aspect ratio holds several panels side by side (touching
   panels), the cut moved onto a nearby straight edge when there is one.
Panels come out in reading order (rows top to bottom, left to right; insets after the panels
they sit in); the letters drawn in them are read apart (tasks/figures/panel_labels.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops
from scipy import ndimage

WORK_SIDE = 1024  # larger images are reduced to this long side before analysis
TOLERANCE = 30  # per channel, 0-255: farther from the background is content
MAX_LINE_FILL = 0.005  # a gutter line has at most this share of content pixels
NEAR_WHITE = 235
MAX_FREE_PANELS = 24


@dataclass(frozen=True)
class DetectedPanel:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the pixels of the image given; x1, y1 exclusive
    confidence: float  # 0-1
    method: str  # whole | xy_cut | components | equal_split | unresolved


@dataclass(frozen=True)
class Detection:
    panels: list[DetectedPanel]
    background: tuple[int, int, int]
    expected: int | None

    @property
    def matches_expected(self) -> bool:
        return self.expected is not None and len(self.panels) == self.expected


Box = tuple[int, int, int, int]


def _rgb(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        array = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        return array[:, :, :3].astype(np.uint8, copy=False)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """The gutter colour: near-white when the border or an inner full line is near-white."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    white = np.all(border >= NEAR_WHITE, axis=1)
    if white.mean() >= 0.25:
        return np.array([255, 255, 255])
    light = np.all(rgb >= NEAR_WHITE, axis=2)
    inner_rows, inner_cols = light[1:-1].mean(axis=1), light[:, 1:-1].mean(axis=0)
    if (inner_rows >= 1 - MAX_LINE_FILL).any() or (inner_cols >= 1 - MAX_LINE_FILL).any():
        return np.array([255, 255, 255])
    quantised = (border // 16).astype(np.int32)
    codes = quantised[:, 0] * 256 + quantised[:, 1] * 16 + quantised[:, 2]
    mode = np.bincount(codes).argmax()
    return np.median(border[codes == mode], axis=0).round().astype(np.int16)


def content_mask(rgb: np.ndarray, background: np.ndarray, tolerance: int = TOLERANCE) -> np.ndarray:
    """Pixels farther than `tolerance` from the background in any channel. Done by Pillow in C
    (a per-channel table, then the channels' maximum): int16 differences of the whole image in
    numpy took most of the detection time."""
    levels = np.arange(256)
    table = np.concatenate([np.where(np.abs(levels - int(c)) > tolerance, 255, 0) for c in background[:3]])
    mapped = Image.fromarray(np.ascontiguousarray(rgb)).point(table.astype(np.uint8).tolist())
    red, green, blue = mapped.split()
    return np.asarray(ImageChops.lighter(ImageChops.lighter(red, green), blue)) > 0


class _Layout:
    """The content mask with an integral image, so any region's projections are cheap."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.height, self.width = mask.shape
        self.min_side = max(12, int(0.06 * min(self.height, self.width)))
        self.min_area = 0.01 * self.height * self.width
        # running sums down the columns and along the rows: a region's projections in O(w + h)
        self.down = np.zeros((self.height + 1, self.width), np.int32)
        np.cumsum(mask, axis=0, out=self.down[1:])
        self.along = np.zeros((self.height, self.width + 1), np.int32)
        np.cumsum(mask, axis=1, out=self.along[:, 1:])
        self._gutters: dict[Box, list] = {}  # the XY-cut asks again for every leaf on every round

    def profiles(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Share of content per column and per row of the region."""
        x0, y0, x1, y1 = box
        cols = (self.down[y1, x0:x1] - self.down[y0, x0:x1]) / (y1 - y0)
        rows = (self.along[y0:y1, x1] - self.along[y0:y1, x0]) / (x1 - x0)
        return cols, rows

    def trim(self, box: Box) -> Box | None:
        cols, rows = self.profiles(box)
        # any content counts here: a thin axis line is a panel's edge, not margin
        xs, ys = np.flatnonzero(cols > 0), np.flatnonzero(rows > 0)
        if not len(xs) or not len(ys):
            return None
        x0, y0 = box[0], box[1]
        return x0 + int(xs[0]), y0 + int(ys[0]), x0 + int(xs[-1]) + 1, y0 + int(ys[-1]) + 1

    def panel_sized(self, box: Box | None) -> bool:
        if box is None:
            return False
        w, h = box[2] - box[0], box[3] - box[1]
        return w >= self.min_side and h >= self.min_side and w * h >= self.min_area

    def gutters(self, box: Box) -> list[tuple[int, int, Box, Box]]:
        """(width, -position, part 1, part 2) of every inner gutter whose sides are panel-sized."""
        if box not in self._gutters:
            self._gutters[box] = self._find_gutters(box)
        return self._gutters[box]

    def _find_gutters(self, box: Box) -> list[tuple[int, int, Box, Box]]:
        out = []
        cols, rows = self.profiles(box)
        for axis, profile in ((0, cols), (1, rows)):
            empty = profile <= MAX_LINE_FILL
            edges = np.flatnonzero(np.diff(np.concatenate([[0], empty.astype(np.int8), [0]])))
            for start, end in zip(edges[::2], edges[1::2]):
                if start == 0 or end == len(profile):
                    continue  # a margin, not a gutter
                # cut mid-gutter: trimming then keeps the sparse lines (a thin axis) beside it
                cut_lo = cut_hi = box[axis] + int(start + end) // 2
                if axis == 0:
                    first, second = (box[0], box[1], cut_lo, box[3]), (cut_hi, box[1], box[2], box[3])
                else:
                    first, second = (box[0], box[1], box[2], cut_lo), (box[0], cut_hi, box[2], box[3])
                first, second = self.trim(first), self.trim(second)
                if self.panel_sized(first) and self.panel_sized(second):
                    out.append((int(end - start), -cut_lo, first, second))
        return out


def _xy_cut(layout: _Layout, root: Box, expected: int | None) -> tuple[list[Box], float]:
    """Leaves of the recursive XY-cut, widest gutter first; and a confidence: how much the
    narrowest gutter cut stands out from the widest one left uncut."""
    leaves = [root]
    cut_widths: list[int] = []
    free_min = max(3, int(round(0.004 * max(layout.height, layout.width))))
    while True:
        if expected is not None and len(leaves) >= expected:
            break
        if expected is None and len(leaves) >= MAX_FREE_PANELS:
            break
        options = [(g, i) for i, leaf in enumerate(leaves) for g in layout.gutters(leaf)]
        if expected is None:
            options = [(g, i) for g, i in options if g[0] >= free_min]
        if not options:
            break
        (width, _, first, second), index = max(options, key=lambda o: (o[0][0], o[0][1], -o[1]))
        leaves[index:index + 1] = [first, second]
        cut_widths.append(width)
    remaining = [g[0] for leaf in leaves for g in layout.gutters(leaf)]
    if not cut_widths:
        return leaves, 1.0 if not remaining else 0.5
    narrowest, widest_left = min(cut_widths), max(remaining, default=0)
    return leaves, round(narrowest / (narrowest + widest_left), 3)


def _components(layout: _Layout, box: Box) -> list[Box]:
    """Panel-sized connected components of content inside a region (bounding boxes); the
    mask is eroded by a pixel first so JPEG ringing does not bridge a thin white frame."""
    x0, y0, x1, y1 = box
    region = ndimage.binary_erosion(layout.mask[y0:y1, x0:x1], iterations=1)
    labels, n = ndimage.label(region)
    found = []
    for index, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        candidate = (x0 + max(xs.start - 1, 0), y0 + max(ys.start - 1, 0),
                     x0 + min(xs.stop + 1, x1 - x0), y0 + min(ys.stop + 1, y1 - y0))
        if layout.panel_sized(candidate):
            found.append(candidate)
    return found


def _edge_near(rgb_gray: np.ndarray, box: Box, axis: int, position: int, window: int) -> int:
    """A straight edge across the region near `position` (a touching panels' border), else position."""
    x0, y0, x1, y1 = box
    region = rgb_gray[y0:y1, x0:x1]
    diff = np.abs(np.diff(region, axis=1 - axis)).mean(axis=axis)  # per boundary between lines
    origin = box[axis]
    lo, hi = max(position - window - origin, 1), min(position + window - origin, len(diff) - 1)
    if hi <= lo:
        return position
    local = diff[lo - 1:hi]
    best = int(np.argmax(local))
    if local[best] >= 3 * max(float(np.median(local)), 1.0):
        return origin + lo + best
    return position


def _equal_split(box: Box, parts: int, axis: int, gray: np.ndarray) -> list[Box]:
    x0, y0, x1, y1 = box
    lo, hi = (x0, x1) if axis == 0 else (y0, y1)
    step = (hi - lo) / parts
    cuts = [lo] + [_edge_near(gray, box, axis, int(round(lo + k * step)), max(2, int(step * 0.06)))
                   for k in range(1, parts)] + [hi]
    if axis == 0:
        return [(cuts[k], y0, cuts[k + 1], y1) for k in range(parts)]
    return [(x0, cuts[k], x1, cuts[k + 1]) for k in range(parts)]


def _multiplicity(box: Box, reference: float) -> tuple[int, int]:
    """(panels side by side the region's shape suggests, axis) for panels of aspect `reference`."""
    w, h = box[2] - box[0], box[3] - box[1]
    across, down = w / (h * reference), (h * reference) / w
    return (int(round(across)), 0) if across >= down else (int(round(down)), 1)


def _fill_deficit(layout: _Layout, gray: np.ndarray, leaves: list[Box], expected: int) -> tuple[list[Box], str, float]:
    # connected components: an inset or a non-guillotine arrangement
    split = [_components(layout, leaf) or [leaf] for leaf in leaves]
    extra = sum(len(s) - 1 for s in split)
    if 0 < extra <= expected - len(leaves):
        leaves = [box for s in split for box in s]
        method, confidence = "components", 0.7
        if len(leaves) == expected:
            return leaves, method, confidence
    else:
        method, confidence = "xy_cut", 1.0
    # touching panels: a region shaped like several panels in a row or column
    deficit = expected - len(leaves)
    while deficit > 0:
        options = []
        for index, leaf in enumerate(leaves):
            others = [(b[2] - b[0]) / (b[3] - b[1]) for j, b in enumerate(leaves) if j != index]
            reference = float(np.median(others)) if others else 1.0
            count, axis = _multiplicity(leaf, reference)
            if count >= 2:
                options.append((count, -index, axis))
        if not options:
            return leaves, "unresolved", 0.0
        count, negative_index, axis = max(options)
        index, parts = -negative_index, min(count, deficit + 1)
        leaves[index:index + 1] = _equal_split(leaves[index], parts, axis, gray)
        deficit -= parts - 1
        method, confidence = "equal_split", 0.5
    return leaves, method, confidence


def reading_order(boxes: list[Box]) -> list[Box]:
    """Rows top to bottom (a box joins a row when it starts above the row's highest bottom
    edge), left to right in a row; boxes inside another box (insets) after the rest."""
    def inside(a: Box, b: Box) -> bool:
        return a != b and b[0] <= a[0] and b[1] <= a[1] and b[2] >= a[2] and b[3] >= a[3]

    insets = [b for b in boxes if any(inside(b, o) for o in boxes)]
    outer = [b for b in boxes if b not in insets]

    def ordered(group: list[Box]) -> list[Box]:
        rows: list[list[Box]] = []
        for box in sorted(group, key=lambda b: (b[1], b[0])):
            if rows and box[1] < min(b[3] for b in rows[-1]):
                rows[-1].append(box)
            else:
                rows.append([box])
        return [b for row in rows for b in sorted(row, key=lambda b: (b[0], b[1]))]

    return ordered(outer) + ordered(insets)


def detect_panels(image, expected: int | None = None) -> Detection:
    """Panels of `image` (PIL image or HxWx3 array), boxes in its pixels. `expected`: the
    number of panels the caption names (None: unknown, 1: a single panel, never cut)."""
    rgb = _rgb(image)
    height, width = rgb.shape[:2]
    whole = (0, 0, width, height)
    scale = 1.0
    if max(height, width) > WORK_SIDE:
        scale = max(height, width) / WORK_SIDE
        size = (max(1, int(round(width / scale))), max(1, int(round(height / scale))))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    background = estimate_background(rgb)
    result_background = tuple(int(v) for v in background)
    if expected is not None and expected <= 1:
        return Detection([DetectedPanel(whole, 1.0, "whole")], result_background, expected)
    layout = _Layout(content_mask(rgb, background))
    root = layout.trim((0, 0, rgb.shape[1], rgb.shape[0]))
    if root is None:
        return Detection([DetectedPanel(whole, 0.0, "whole")], result_background, expected)
    leaves, confidence = _xy_cut(layout, root, expected)
    method = "xy_cut"
    if expected is not None and len(leaves) < expected:
        gray = rgb.astype(np.float32).mean(axis=2)
        leaves, method, fallback_confidence = _fill_deficit(layout, gray, leaves, expected)
        confidence = min(confidence, fallback_confidence)
    if len(leaves) == 1:
        return Detection([DetectedPanel(whole, confidence, "whole")], result_background, expected)

    def to_source(box: Box) -> Box:
        x0, y0, x1, y1 = box
        return (max(0, int(round(x0 * scale))), max(0, int(round(y0 * scale))),
                min(width, int(round(x1 * scale))), min(height, int(round(y1 * scale))))

    panels = [DetectedPanel(to_source(b), confidence, method) for b in reading_order(leaves)]
    return Detection(panels, result_background, expected)


def box_iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
