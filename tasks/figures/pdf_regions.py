"""The figure region a PDF caption belongs to: page graphics, obstacles, search zones.

1. the page's graphics (embedded images, vector paths, shadings) come from the page's
   bounding-box log, without page decorations (tiny or repeated images, page-sized fills);
2. tables are found as text grids (rows of several cells whose columns line up, with their
   ruling lines) and by their "Table 3" captions: their graphics are no figure's, and they are
   obstacles like body text;
3. the search zone is the caption's column between the caption and the nearest obstacle
   (body-text line, table or other caption) above it; failing that below it, then beside it;
4. the region is the union of the graphics in the zone plus text lines touching them
   (axis labels, panel letters).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pymupdf

from tasks.figures.pdf_captions import Caption, Line, block_rect, x_overlap

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
    return graphic_boxes(page, decorations, min_image_side)[0]


def graphic_boxes(page: pymupdf.Page, decorations: set[int], min_image_side: float) -> tuple[np.ndarray, np.ndarray]:
    """page_graphics, and which of the boxes are images (the rest: vector paths and shadings)."""
    page_rect = page.rect
    boxes = []
    images = []
    for kind, box in page.get_bboxlog():
        if kind not in _GRAPHIC_TYPES:
            continue
        if "image" in kind and max(box[2] - box[0], box[3] - box[1]) < min_image_side:
            continue  # icons, bullets, logos
        boxes.append(box)
        images.append("image" in kind)
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0, dtype=bool)
    rects = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    is_image = np.asarray(images, dtype=bool)
    rects[:, [0, 2]] = np.clip(rects[:, [0, 2]], page_rect.x0, page_rect.x1)
    rects[:, [1, 3]] = np.clip(rects[:, [1, 3]], page_rect.y0, page_rect.y1)
    width, height = rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1]
    keep = (width >= 0) & (height >= 0) & ((width > 0) | (height > 0))
    keep &= width * height <= 0.85 * page_rect.width * page_rect.height  # page background
    keep &= ~((width > 0.9 * page_rect.width) & (height < 3))  # header or footer rule
    rects, is_image = rects[keep], is_image[keep]
    on_page = {item[0] for item in page.get_images()} & decorations
    for xref in sorted(on_page):
        for box in page.get_image_rects(xref):
            same = np.all(np.abs(rects - np.asarray(tuple(box))) <= 1.0, axis=1)
            rects, is_image = rects[~same], is_image[~same]
    return rects, is_image


_TABLE_CAPTION = re.compile(r"^\s*(?:Supplementa(?:ry|l)\s+)?(?:Table|TABLE)\s+S?\d+")


def _rows(cells: list[int], lines: list[Line]) -> list[list[int]]:
    """Cells grouped into rows: lines whose vertical extents overlap by half."""
    rows: list[list[int]] = []
    for i in sorted(cells, key=lambda i: (lines[i].rect.y0, lines[i].rect.x0)):
        rect = lines[i].rect
        if rows:
            ref = lines[rows[-1][0]].rect
            if min(rect.y1, ref.y1) - max(rect.y0, ref.y0) >= 0.5 * min(rect.height, ref.height):
                rows[-1].append(i)
                continue
        rows.append([i])
    return [sorted(row, key=lambda i: lines[i].rect.x0) for row in rows]


def _separate_cells(row: list[int], lines: list[Line]) -> int:
    """How many cells a row has: lines apart by more than a word space."""
    count, right = 0, None
    for i in row:
        rect = lines[i].rect
        if right is None or rect.x0 - right > 0.8 * lines[i].size:
            count += 1
        right = rect.x1 if right is None else max(right, rect.x1)
    return count


def _aligned(a: list[int], b: list[int], lines: list[Line], tolerance: float = 3.0) -> int:
    """Cells of row b whose left edge, right edge or centre lines up with a cell of row a."""
    def edges(i):
        r = lines[i].rect
        return (r.x0, r.x1, (r.x0 + r.x1) / 2)
    ref = [edges(i) for i in a]
    return sum(1 for i in b if any(any(abs(u - v) <= tolerance for u, v in zip(edges(i), e)) for e in ref))


def _table_like(box, text: pymupdf.Rect, cell_height: float) -> bool:
    """A path a table draws: a rule (thin), a frame around all its text, or a row's shading."""
    width, height = box[2] - box[0], box[3] - box[1]
    if min(width, height) < 1.5:
        return True
    frame = pymupdf.Rect(*box)
    if (frame & text).get_area() >= 0.9 * text.get_area():
        return True
    return width >= 0.5 * text.width and height <= 2.5 * cell_height


def table_regions(lines: list[Line], captions: list[Caption], graphics: np.ndarray, is_image: np.ndarray,
                  min_rows: int = 3) -> list[pymupdf.Rect]:
    """Tables on the page: text grids (min_rows rows or more of at least two short cells, columns
    lining up from row to row, rows a line or two apart) among no vector graphics but rules,
    frames and row shading (which they are then grown by), and table captions ("Table 2", at
    a block start). Text inside images is never a grid cell; the tick labels of charts side by
    side form a grid, but around an image or among curves, bars or markers."""
    caption_lines = {i for c in captions for i in c.lines}
    images = graphics[is_image] if len(graphics) else graphics
    text_width = (max(line.rect.x1 for line in lines) - min(line.rect.x0 for line in lines)) if lines else 0.0
    # body text in two columns lines up too: a cell is short or narrow, a body line is neither
    cells = [i for i, line in enumerate(lines) if i not in caption_lines and line.text
             and (len(line.text) < 25 or line.rect.width < 0.3 * text_width)
             and not (len(images) and _inside_any(line.rect, images))]
    rows = [row for row in _rows(cells, lines) if _separate_cells(row, lines) >= 2]
    grids: list[list[list[int]]] = []
    for row in rows:
        if grids:
            last = grids[-1][-1]
            gap = min(lines[i].rect.y0 for i in row) - max(lines[i].rect.y1 for i in last)
            size = max(lines[i].size for i in row)
            if gap <= 2.5 * size and _aligned(last, row, lines) >= 2:
                grids[-1].append(row)
                continue
        grids.append([row])
    tables = []
    paths = graphics[~is_image] if len(graphics) else graphics
    for grid in grids:
        if len(grid) < min_rows:
            continue
        rect = pymupdf.Rect(lines[grid[0][0]].rect)
        for row in grid:
            for i in row:
                rect |= lines[i].rect
        if len(images) and np.any((images[:, 0] < rect.x1) & (images[:, 2] > rect.x0) & (
                images[:, 1] < rect.y1) & (images[:, 3] > rect.y0)):
            continue  # text around an image: a chart's axis labels, not a table
        cell_height = max(lines[i].rect.height for row in grid for i in row)
        touching = paths[(paths[:, 0] <= rect.x1 + 3) & (paths[:, 2] >= rect.x0 - 3) & (
            paths[:, 1] <= rect.y1 + 3) & (paths[:, 3] >= rect.y0 - 3)] if len(paths) else paths
        if not all(_table_like(box, rect, cell_height) for box in touching):
            continue  # curves, bars, markers or boxes among the text: a chart's tick labels, not a table
        for box in touching:
            rect |= pymupdf.Rect(*box)
        tables.append(rect)
    for i, line in enumerate(lines):
        if line.first_in_block and i not in caption_lines and _TABLE_CAPTION.match(line.text):
            tables.append(block_rect(lines, i))
    return tables


def table_graphics(graphics: np.ndarray, tables: list[pymupdf.Rect]) -> np.ndarray:
    """Which graphics lie inside a table (its rules, frame and shading): no figure's."""
    inside = np.zeros(len(graphics), dtype=bool)
    for t in tables:
        inside |= (graphics[:, 0] >= t.x0 - 1) & (graphics[:, 2] <= t.x1 + 1) & (
            graphics[:, 1] >= t.y0 - 1) & (graphics[:, 3] <= t.y1 + 1)
    return inside


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
               band: tuple[float, float], tables: list[pymupdf.Rect] = ()) -> list[pymupdf.Rect]:
    """Body-text lines, tables and captions: a figure does not reach across them."""
    band_w = band[1] - band[0]
    area = (graphics[:, 2] - graphics[:, 0]) * (graphics[:, 3] - graphics[:, 1])
    big = graphics[area > 200]
    caption_lines = {i for c in captions for i in c.lines}
    obstacles = [c.rect for c in captions] + list(tables)
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
               min_side: float, max_gap: float, tables: list[pymupdf.Rect] = ()
               ) -> tuple[pymupdf.Rect, np.ndarray] | None:
    band = _column_band(caption, lines, page)
    if band not in obstacle_cache:
        obstacle_cache[band] = _obstacles(lines, captions, graphics, band, tables)
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
