"""Figures from article PDFs with PyMuPDF: caption, page, region and render.

For every page that has a caption start, the captions come from `pdf_captions`, the
region each belongs to from `pdf_regions`; the region is rendered at the requested dpi.
Only captions with a region become figures, so body text that cites "Fig. 2" adds nothing.
`open_pdf` refuses a PDF that MuPDF opens with no pages or repairs into fewer pages than it
declares (Rejected "unreadable_pdf"), which would otherwise pass as an article without figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pymupdf

from tasks.common.rejection import Rejected
from tasks.figures.pdf_captions import ANY_CAPTION, TEXT_FLAGS, caption_start, find_captions, page_lines
from tasks.figures.pdf_regions import decoration_xrefs, graphic_boxes, region_for, table_graphics, table_regions


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
    numbers: set[str] = set()  # caption numbers so far, for captions known by position and sequence
    for pno in (range(result.pages) if pages is None else [p for p in pages if 0 <= p < doc.page_count]):
        page = doc[pno]
        textpage = page.get_textpage(flags=TEXT_FLAGS)
        if not ANY_CAPTION.search(textpage.extractText()):
            continue
        lines = page_lines(page, textpage)
        if not any(caption_start(line) for line in lines):
            continue  # no line starts like a caption: the page's graphics are not needed
        if decorations is None:
            decorations = decoration_xrefs(doc)
        graphics, is_image = graphic_boxes(page, decorations, min_image_side)
        captions = find_captions(lines, graphics, numbers)
        numbers.update(c.number for c in captions)
        if not captions:
            continue
        result.pages_with_captions += 1
        tables = table_regions(lines, captions, graphics, is_image)
        free = ~table_graphics(graphics, tables)  # a table's rules and frame are no figure's
        cache: dict = {}
        found: dict[int, tuple[pymupdf.Rect, str]] = {}
        for where in ("above", "below", "beside"):
            # captions known by punctuation or font choose first, then those known by position only
            for index, caption in sorted(enumerate(captions),
                                         key=lambda c: (c[1].evidence == "position", c[1].rect.y0)):
                if index in found:
                    continue
                hit = region_for(caption, where, page, lines, captions, graphics, free, cache, min_side, max_gap,
                                 tables)
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
    """The PDF, or Rejected("unreadable_pdf") when MuPDF opens it with no pages or repairs it
    into pages without their page objects (a truncated or damaged file: not an article
    without figures). MuPDF's own open errors pass through."""
    doc = pymupdf.open(stream=data, filetype="pdf")
    problem = damage(doc)
    if problem:
        doc.close()
        raise Rejected("unreadable_pdf", problem)
    return doc


def damage(doc: pymupdf.Document) -> str | None:
    """Why an opened PDF cannot be searched, or None."""
    repaired = bool(getattr(doc, "is_repaired", False))
    if doc.page_count == 0:
        return "the PDF opens with 0 pages" + (" (PyMuPDF repaired a broken cross-reference table)" if repaired else "")
    if not repaired:
        return None
    lost = [pno + 1 for pno in range(doc.page_count) if not _has_page_object(doc, pno)]
    if lost:
        shown = ", ".join(str(p) for p in lost[:5]) + (", ..." if len(lost) > 5 else "")
        return (f"PyMuPDF repaired the PDF and {len(lost)} of its {doc.page_count} pages lost their page object "
                f"(pages {shown}): the file is truncated or damaged")
    return None


def _has_page_object(doc: pymupdf.Document, pno: int) -> bool:
    try:
        xref = doc.page_xref(pno)
        return 0 < xref < doc.xref_length() and doc.xref_get_key(xref, "Type") == ("name", "/Page")
    except Exception:  # noqa: BLE001 - MuPDF raises ValueError or RuntimeError for a missing object
        return False
