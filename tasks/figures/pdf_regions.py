"""The figure region a PDF caption belongs to: page graphics, obstacles, search zones.

1. the page's graphics (embedded images, vector paths, shadings) come from the page's
   bounding-box log, without page decorations (tiny or repeated images, page-sized fills);
2. the search zone is the caption's column between the caption and the nearest obstacle
   (body-text line or other caption) above it; failing that below it, then beside it;
3. the region is the union of the graphics in the zone plus text lines touching them
   (axis labels, panel letters).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pymupdf

from tasks.figures.pdf_captions import Caption, Line, x_overlap

_GRAPHIC_TYPES = ("fill-path", "stroke-path", "fill-image", "fill-imgmask", "fill-shade")


def decoration_xrefs(doc: pymupdf.Document) -> set[int]:
    """Images on most pages (logos, banners): page furniture, not figures."""
    if doc.page_count < 3:
        return set()
    counts: Counter = Counter()
    for pno in range(doc.page_count):
        counts.update({item[0] for item in doc.get_page_images(pno)})
    threshold = max(3, int(0.6 * doc.page_count))
    repeated = {xref for xref, n in counts.items() if n >= threshold}
    # Shared resource dictionaries list every image on every page: then the rule says nothing.
    return repeated if len(repeated) <= 5 else set()


def page_graphics(page: pymupdf.Page, decorations: set[int], min_image_side: float) -> np.ndarray:
    """Graphic boxes of the page as an (n, 4) array (x0, y0, x1, y1); pages may hold 10^5 paths."""
    page_rect = page.rect
    boxes = []
    for kind, box in page.get_bboxlog():
        if kind not in _GRAPHIC_TYPES:
            continue
        if "image" in kind and max(box[2] - box[0], box[3] - box[1]) < min_image_side:
            continue  # icons, bullets, logos
        boxes.append(box)
    if not boxes:
        return np.zeros((0, 4))
    rects = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rects[:, [0, 2]] = np.clip(rects[:, [0, 2]], page_rect.x0, page_rect.x1)
    rects[:, [1, 3]] = np.clip(rects[:, [1, 3]], page_rect.y0, page_rect.y1)
    width, height = rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1]
    keep = (width >= 0) & (height >= 0) & ((width > 0) | (height > 0))
    keep &= width * height <= 0.85 * page_rect.width * page_rect.height  # page background
    keep &= ~((width > 0.9 * page_rect.width) & (height < 3))  # header or footer rule
    rects = rects[keep]
    on_page = {item[0] for item in page.get_images()} & decorations
    for xref in sorted(on_page):
        for box in page.get_image_rects(xref):
            same = np.all(np.abs(rects - np.asarray(tuple(box))) <= 1.0, axis=1)
            rects = rects[~same]
    return rects


def _column_band(caption: Caption, lines: list[Line], page: pymupdf.Page) -> tuple[float, float]:
    """Horizontal extent to search: the caption's column, or the page when it spans both."""
    xs0 = [line.rect.x0 for line in lines if line.rect.width > 0]
    xs1 = [line.rect.x1 for line in lines if line.rect.width > 0]
    left = min(xs0) if xs0 else page.rect.x0
    right = max(xs1) if xs1 else page.rect.x1
    mid = (left + right) / 2
    rect = caption.rect
    if rect.x1 <= mid + 2:
        return left, mid
    if rect.x0 >= mid - 2:
        return mid, right
    return left, right


def _inside_any(rect: pymupdf.Rect, big: np.ndarray) -> bool:
    cx, cy = (rect.x0 + rect.x1) / 2, (rect.y0 + rect.y1) / 2
    return bool(np.any((big[:, 0] <= cx) & (cx <= big[:, 2]) & (big[:, 1] <= cy) & (cy <= big[:, 3])))


def _obstacles(lines: list[Line], captions: list[Caption], graphics: np.ndarray,
               band: tuple[float, float]) -> list[pymupdf.Rect]:
    """Body-text lines and captions: a figure does not reach across them."""
    band_w = band[1] - band[0]
    area = (graphics[:, 2] - graphics[:, 0]) * (graphics[:, 3] - graphics[:, 1])
    big = graphics[area > 200]
    caption_lines = {i for c in captions for i in c.lines}
    obstacles = [c.rect for c in captions]
    for i, line in enumerate(lines):
        if i in caption_lines:
            continue
        if line.rect.width < 0.35 * band_w or len(line.text) < 25:
            continue
        if _inside_any(line.rect, big):
            continue
        obstacles.append(line.rect)
    return obstacles


def _zone_graphics(zone: pymupdf.Rect, graphics: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Indices of unclaimed graphics whose centre lies in the zone."""
    cx = (graphics[:, 0] + graphics[:, 2]) / 2
    cy = (graphics[:, 1] + graphics[:, 3]) / 2
    inside = (zone.x0 - 1 <= cx) & (cx <= zone.x1 + 1) & (zone.y0 - 1 <= cy) & (cy <= zone.y1 + 1)
    return np.flatnonzero(inside & free)


def _grow_with_text(region: pymupdf.Rect, zone: pymupdf.Rect, lines: list[Line], exclude: set[int]) -> pymupdf.Rect:
    """Add the text that labels the graphics: axis ticks and titles, panel letters."""
    for _ in range(3):
        grown = pymupdf.Rect(region)
        for i, line in enumerate(lines):
            if i in exclude:
                continue
            margin = 0.6 * line.size + 2
            near = pymupdf.Rect(region.x0 - margin, region.y0 - margin, region.x1 + margin, region.y1 + margin)
            if line.rect.intersects(near) and zone.contains(pymupdf.Point(
                    (line.rect.x0 + line.rect.x1) / 2, (line.rect.y0 + line.rect.y1) / 2)):
                grown |= line.rect
        if grown == region:
            break
        region = grown
    return region


def region_for(caption: Caption, where: str, page: pymupdf.Page, lines: list[Line], captions: list[Caption],
               graphics: np.ndarray, free: np.ndarray, obstacle_cache: dict,
               min_side: float, max_gap: float) -> tuple[pymupdf.Rect, np.ndarray] | None:
    band = _column_band(caption, lines, page)
    if band not in obstacle_cache:
        obstacle_cache[band] = _obstacles(lines, captions, graphics, band)
    obstacles = obstacle_cache[band]
    cap = caption.rect
    x0, x1 = min(band[0], cap.x0), max(band[1], cap.x1)
    page_rect = page.rect

    def blocking(o: pymupdf.Rect) -> bool:
        return o != cap and x_overlap(o, pymupdf.Rect(x0, 0, x1, 1)) > 0.3 * max(o.width, 1.0)

    if where == "above":
        top = max([o.y1 for o in obstacles if blocking(o) and o.y1 <= cap.y0 + 1] + [page_rect.y0])
        zone = pymupdf.Rect(x0, top, x1, cap.y0)
    elif where == "below":
        bottom = min([o.y0 for o in obstacles if blocking(o) and o.y0 >= cap.y1 - 1] + [page_rect.y1])
        zone = pymupdf.Rect(x0, cap.y1, x1, bottom)
    else:  # beside: the rest of the page width at the caption's height and a little more
        height = max(cap.height, 3 * caption.size)
        left = pymupdf.Rect(page_rect.x0, cap.y0 - height, cap.x0, cap.y1 + height)
        right = pymupdf.Rect(cap.x1, cap.y0 - height, page_rect.x1, cap.y1 + height)
        zone = left if left.width > right.width else right
    if zone.height <= 0 or zone.width <= 0:
        return None
    chosen = _zone_graphics(zone, graphics, free)
    if not len(chosen):
        return None
    picked = graphics[chosen]
    region = pymupdf.Rect(picked[:, 0].min(), picked[:, 1].min(), picked[:, 2].max(), picked[:, 3].max())
    caption_lines = {i for c in captions for i in c.lines}
    region = _grow_with_text(region, zone, lines, caption_lines) & page_rect
    if region.width < min_side or region.height < min_side:
        return None
    distance = cap.y0 - region.y1 if where == "above" else region.y0 - cap.y1 if where == "below" else 0
    if distance > max_gap:
        return None
    return region, chosen
