"""Figures from article PDFs with PyMuPDF: caption, page, region and render.

For every page that has a caption start, the captions come from `pdf_captions`, the
region each belongs to from `pdf_regions`; the region is rendered at the requested dpi.
Only captions with a region become figures, so body text that cites "Fig. 2" adds nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pymupdf

from tasks.figures.pdf_captions import ANY_CAPTION, TEXT_FLAGS, find_captions, page_lines
from tasks.figures.pdf_regions import decoration_xrefs, page_graphics, region_for


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
        textpage = page.get_textpage(flags=TEXT_FLAGS)
        if not ANY_CAPTION.search(textpage.extractText()):
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
                hit = region_for(caption, where, page, lines, captions, graphics, free, cache, min_side, max_gap)
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


def open_pdf(data: bytes) -> pymupdf.Document:
    return pymupdf.open(stream=data, filetype="pdf")
