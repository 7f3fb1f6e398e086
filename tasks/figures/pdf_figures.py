"""Figures from article PDFs with PyMuPDF: caption blocks, the figure region each belongs to, renders.

For every page that has a caption start ("Figure 3.", "Fig. 2:", "FIGURE 1 |", ...):
1. the caption is its text block plus the blocks that continue it (same column, small gap,
   same type size);
2. the page's graphics (embedded images, vector paths, shadings) come from the page's
   bounding-box log, without page decorations (tiny or repeated images, page-sized fills);
3. the search zone is the caption's column between the caption and the nearest obstacle
   (body-text line or other caption) above it; failing that below it, then beside it;
4. the region is the union of the graphics in the zone plus text lines touching them
   (axis labels, panel letters); it is rendered at the requested dpi.
Only captions with a region become figures, so body text that cites "Fig. 2" adds nothing.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pymupdf

_CAPTION = re.compile(
    r"^\s*(?P<label>(?:Supplementary\s+|Supplemental\s+)?(?:Figure|FIGURE|Fig\.?|FIG\.?|Figs?\.)\s*"
    r"(?P<num>S?\d+(?:\.\d+)?[A-Za-z]?))(?P<delim>\s*(?:[.:|]|[\u2014\u2013]|-\s)\s*|\s+(?=\S)|\s*$)"
)
_TRAILING_DOI = re.compile(r"\s*(?:doi:|https?://doi\.org/)\s*10\.\S+$", re.I)
_STRONG_DELIM = re.compile(r"[.:|\u2014\u2013-]")
_GRAPHIC_TYPES = ("fill-path", "stroke-path", "fill-image", "fill-imgmask", "fill-shade")
_TEXT_FLAGS = pymupdf.TEXT_PRESERVE_WHITESPACE | pymupdf.TEXT_MEDIABOX_CLIP


@dataclass
class Line:
    rect: pymupdf.Rect
    text: str
    size: float
    block: int
    first_in_block: bool
    bold_start: bool  # the first span is bold (a caption label set in bold)


@dataclass
class Caption:
    label: str
    number: str
    text: str  # caption without its label
    rect: pymupdf.Rect
    lines: list[int]
    size: float


@dataclass
class PdfFigure:
    page: int  # 1-based page number
    bbox: tuple[float, float, float, float]  # region in PDF points, page coordinates
    label: str
    number: str
    caption: str
    caption_bbox: tuple[float, float, float, float]
    placement: str  # where the region sits relative to the caption: above, below, beside
    image: object = None  # PIL image of the rendered region, when rendering was asked for
    dpi: int = 0


@dataclass
class PdfResult:
    figures: list[PdfFigure] = field(default_factory=list)
    pages: int = 0
    pages_with_captions: int = 0
    captions_without_region: list[tuple[int, str]] = field(default_factory=list)


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return re.sub(r"\s+", " ", text).strip()


# Cheap test on a page's plain text before building its line structures.
_ANY_CAPTION = re.compile(r"(?m)^\s*(?:Supplementa(?:ry|l)\s+)?(?:Figure|FIGURE|Figs?|FIG)\.?\s*S?\d")


def page_lines(page: pymupdf.Page, textpage=None) -> list[Line]:
    lines: list[Line] = []
    if textpage is None:
        textpage = page.get_textpage(flags=_TEXT_FLAGS)
    data = textpage.extractDICT()
    for block_no, block in enumerate(data.get("blocks", [])):
        if block.get("type", 0) != 0:
            continue
        for index, line in enumerate(block.get("lines", [])):
            spans = [s for s in line.get("spans", []) if s.get("text", "").strip()]
            if not spans:
                continue
            if line.get("dir", (1, 0))[0] < 0.5:
                text = "".join(s["text"] for s in spans)  # rotated text: never a caption
            else:
                text = "".join(s["text"] for s in line.get("spans", []))
            first = spans[0]
            bold = bool(first.get("flags", 0) & 16) or "bold" in first.get("font", "").lower()
            lines.append(Line(
                rect=pymupdf.Rect(line["bbox"]),
                text=_clean(text),
                size=max(s.get("size", 0.0) for s in spans),
                block=block_no,
                first_in_block=index == 0 or not lines or lines[-1].block != block_no,
                bold_start=bold,
            ))
    return lines


def _caption_match(line: Line):
    match = _CAPTION.match(line.text)
    if not match:
        return None
    strong = bool(_STRONG_DELIM.search(match.group("delim") or ""))
    if not strong and not line.bold_start:
        return None  # "Figure 3 shows ..." in running text
    if not line.first_in_block and not line.bold_start:
        return None
    return match


def _dehyphenate_join(parts: list[str]) -> str:
    text = ""
    for part in parts:
        if not text:
            text = part
        elif re.search(r"[a-z]-$", text) and re.match(r"[a-z]", part):
            text = text[:-1] + part  # a word broken at the line end
        else:
            text += " " + part
    return _clean(text)


def find_captions(lines: list[Line]) -> list[Caption]:
    starts = {i for i, line in enumerate(lines) if _caption_match(line)}
    order = sorted(range(len(lines)), key=lambda i: (round(lines[i].rect.y0, 1), lines[i].rect.x0))
    position = {i: k for k, i in enumerate(order)}
    used: set[int] = set()
    captions = []
    for start in sorted(starts, key=lambda i: position[i]):
        if start in used:
            continue
        first = lines[start]
        members = [start]
        # The rest of the start line's block.
        members += [i for i in range(start + 1, len(lines)) if lines[i].block == first.block and i not in starts]
        rect = pymupdf.Rect(first.rect)
        for i in members[1:]:
            rect |= lines[i].rect
        size = first.size
        # The caption's own line spacing, where its first block shows it, bounds the next gap.
        own = sorted(lines[b].rect.y0 - lines[a].rect.y1 for a, b in zip(members, members[1:])
                     if lines[b].rect.y0 > lines[a].rect.y1 - 2)
        last_gap = max(own[len(own) // 2], 0.0) if own else None
        # Blocks below that continue it: overlapping the caption's columns, close, same size.
        for i in order[position[start] + 1:]:
            line = lines[i]
            if i in members:
                continue
            if i in starts:
                if line.rect.y0 >= rect.y1 - 1 and _x_overlap(line.rect, rect) > 0.5 * min(line.rect.width, rect.width):
                    break
                continue
            if line.rect.y0 < rect.y1 - 1:
                continue  # beside the caption (the other column)
            if _x_overlap(line.rect, rect) < 0.5 * min(line.rect.width, rect.width):
                continue
            gap = line.rect.y0 - rect.y1
            limit = 1.2 * size if last_gap is None else 1.5 * last_gap + 2.0
            if gap > limit or abs(line.size - size) > 0.9 or line.rect.x0 < rect.x0 - 3 or line.rect.x1 > rect.x1 + 3:
                break  # body text: further away, another size, or wider than the caption
            if last_gap is None:
                last_gap = max(gap, 0.0)
            block = [k for k in range(len(lines)) if lines[k].block == line.block and k not in starts]
            members += [k for k in block if k not in members]
            for k in block:
                rect |= lines[k].rect
        used.update(members)
        match = _caption_match(first)
        text = _dehyphenate_join([lines[i].text for i in members])
        label = _clean(match.group("label"))
        body = _clean(text[len(match.group(0).rstrip()):] if text.startswith(match.group(0).rstrip()) else text)
        body = re.sub(r"^[.:|\u2014\u2013-]\s*", "", body)
        body = _TRAILING_DOI.sub("", body)  # publishers print the figure DOI under the caption
        captions.append(Caption(label=label, number=match.group("num").upper(), text=body, rect=rect,
                                lines=members, size=size))
    return captions


def _x_overlap(a: pymupdf.Rect, b: pymupdf.Rect) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))


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


def _region_for(caption: Caption, where: str, page: pymupdf.Page, lines: list[Line], captions: list[Caption],
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
        return o != cap and _x_overlap(o, pymupdf.Rect(x0, 0, x1, 1)) > 0.3 * max(o.width, 1.0)

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


def extract(doc: pymupdf.Document, dpi: int = 150, render: bool = True, max_pages: int = 200,
            min_side: float = 36.0, min_image_side: float = 24.0, max_gap: float = 144.0,
            max_render_pixels: int = 16_000_000, pages: list[int] | None = None) -> PdfResult:
    """Figures of a PDF: caption, page, bounding box and (optionally) the rendered region.

    pages: 0-based page numbers to search (default: the first max_pages).
    """
    result = PdfResult(pages=min(doc.page_count, max_pages))
    decorations: set[int] | None = None
    for pno in (range(result.pages) if pages is None else [p for p in pages if 0 <= p < doc.page_count]):
        page = doc[pno]
        textpage = page.get_textpage(flags=_TEXT_FLAGS)
        if not _ANY_CAPTION.search(textpage.extractText()):
            continue
        lines = page_lines(page, textpage)
        captions = find_captions(lines)
        if not captions:
            continue
        result.pages_with_captions += 1
        if decorations is None:
            decorations = decoration_xrefs(doc)
        graphics = page_graphics(page, decorations, min_image_side)
        free = np.ones(len(graphics), dtype=bool)
        cache: dict = {}
        found: dict[int, tuple[pymupdf.Rect, str]] = {}
        for where in ("above", "below", "beside"):
            for index, caption in sorted(enumerate(captions), key=lambda c: c[1].rect.y0):
                if index in found:
                    continue
                hit = _region_for(caption, where, page, lines, captions, graphics, free, cache, min_side, max_gap)
                if hit:
                    region, chosen = hit
                    free[chosen] = False
                    # A region level with its caption sits beside it, whichever zone reached it.
                    level = min(region.y1, caption.rect.y1) - max(region.y0, caption.rect.y0)
                    found[index] = (region, "beside" if level > 0.5 * caption.rect.height else where)
        for index, caption in enumerate(captions):
            if index not in found:
                result.captions_without_region.append((pno + 1, caption.label))
                continue
            region, where = found[index]
            figure = PdfFigure(
                page=pno + 1,
                bbox=tuple(round(v, 2) for v in region),
                label=caption.label,
                number=caption.number,
                caption=caption.text,
                caption_bbox=tuple(round(v, 2) for v in caption.rect),
                placement=where,
            )
            if render:
                figure.image, figure.dpi = render_region(page, region, dpi, max_render_pixels)
            result.figures.append(figure)
    result.figures.sort(key=lambda f: (f.page, f.bbox[1], f.bbox[0]))
    return result


def render_figure(doc: pymupdf.Document, figure: PdfFigure, dpi: int, max_pixels: int = 16_000_000,
                  cache: dict | None = None):
    """Render a found figure's region (PIL RGB image, dpi actually used).

    cache: a dict kept for one document; figures on the same page then share the
    page's display list instead of interpreting the page again.
    """
    page = doc[figure.page - 1]
    source = page
    if cache is not None:
        if figure.page not in cache:
            cache.clear()  # one page's display list at a time
            cache[figure.page] = page.get_displaylist()
        source = cache[figure.page]
    return render_region(source, pymupdf.Rect(figure.bbox), dpi, max_pixels)


def render_region(page, region: pymupdf.Rect, dpi: int, max_pixels: int):
    """The region of a page or display list as a PIL RGB image; the dpi is lowered if
    the render would exceed max_pixels."""
    from PIL import Image

    scale = dpi / 72.0
    pixels = region.width * scale * region.height * scale
    if pixels > max_pixels:
        scale *= (max_pixels / pixels) ** 0.5
    pix = page.get_pixmap(matrix=pymupdf.Matrix(scale, scale), clip=region, alpha=False, colorspace=pymupdf.csRGB)
    image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    return image, round(scale * 72)


_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _TOKEN.findall(text)


def token_overlap(reference: str, candidate: str) -> float:
    """Share of the reference's tokens (with multiplicity) found in the candidate."""
    ref = Counter(tokens(reference))
    if not ref:
        return 0.0
    got = Counter(tokens(candidate))
    return sum((ref & got).values()) / sum(ref.values())


def link_to_jats(pdf_figures: list[PdfFigure], jats: list[tuple[str, str | None, str]],
                 min_overlap: float = 0.5) -> dict[int, tuple[str, float]]:
    """Match PDF figures to JATS figures (fig_id, label number, caption) by label and caption text.

    Returns pdf index -> (fig_id, caption overlap). Same label number with a plausible caption
    wins; otherwise the best caption overlap of at least 0.8. One JATS figure per PDF figure.
    """
    scored = []
    for i, pdf in enumerate(pdf_figures):
        for fig_id, number, caption in jats:
            overlap = min(token_overlap(caption, pdf.caption), token_overlap(pdf.caption, caption))
            same_label = number is not None and number == pdf.number
            if (same_label and overlap >= min_overlap) or overlap >= 0.8:
                scored.append((not same_label, -overlap, i, fig_id))
    links: dict[int, tuple[str, float]] = {}
    used: set[str] = set()
    for _, negative, i, fig_id in sorted(scored):
        if i in links or fig_id in used:
            continue
        links[i] = (fig_id, -negative)
        used.add(fig_id)
    return links


def open_pdf(data: bytes) -> pymupdf.Document:
    return pymupdf.open(stream=data, filetype="pdf")
