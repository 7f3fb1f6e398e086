"""The article PDF, made with PyMuPDF: text, figures and their captions, one or two columns."""
from __future__ import annotations

import math

import pymupdf

from tasks.sample.jats import ArticleSpec

PAGE_W, PAGE_H = 595, 842  # A4 in points
MARGIN = 50
GUTTER = 20
BODY_SIZE = 9.5
CAPTION_SIZE = 8.5


_scratch: dict = {}


def _scratch_page() -> pymupdf.Page:
    """A throw-away page for measuring text; renewed so measurements never pile up."""
    if _scratch.get("uses", 0) % 100 == 0:
        _scratch["doc"] = pymupdf.open()
        _scratch["page"] = _scratch["doc"].new_page(width=PAGE_W, height=10 * PAGE_H)
    _scratch["uses"] = _scratch.get("uses", 0) + 1
    return _scratch["page"]


def _text_height(text: str, width: float, size: float, font: str = "helv") -> float:
    """Height that insert_textbox really needs: word wrapping makes estimates fall short."""
    length = pymupdf.get_text_length(text, fontname=font, fontsize=size)
    height = (math.ceil(length / width) + 1) * size * 1.25
    while True:
        spare = _scratch_page().insert_textbox(pymupdf.Rect(0, 0, width, height), text, fontsize=size, fontname=font)
        if spare >= 0:
            return height - spare + 2
        height += -spare + size


class _Layout:
    """Flows blocks down columns and onto new pages."""

    def __init__(self, doc: pymupdf.Document, columns: int):
        self.doc = doc
        self.columns = columns
        self.col_w = (PAGE_W - 2 * MARGIN - GUTTER * (columns - 1)) / columns
        self.page = None
        self.col = 0
        self.y = 0.0
        self.new_page()

    def new_page(self):
        self.page = self.doc.new_page(width=PAGE_W, height=PAGE_H)
        self.col = 0
        self.y = MARGIN

    def x0(self) -> float:
        return MARGIN + self.col * (self.col_w + GUTTER)

    def reserve(self, height: float) -> pymupdf.Rect:
        if self.y + height > PAGE_H - MARGIN:
            self.col += 1
            self.y = MARGIN + (self.header if self.page.number == 0 and hasattr(self, "header") else 0)
            if self.col >= self.columns:
                self.new_page()
        rect = pymupdf.Rect(self.x0(), self.y, self.x0() + self.col_w, self.y + height)
        self.y += height + 8
        return rect

    def text(self, text: str, size: float, font: str = "helv"):
        rect = self.reserve(_text_height(text, self.col_w, size, font))
        self.page.insert_textbox(rect, text, fontsize=size, fontname=font)


def build_pdf(article: ArticleSpec, images: dict[str, bytes], image_sizes: dict[str, tuple[int, int]]) -> bytes:
    doc = pymupdf.open()
    doc.set_metadata({"title": article.title, "subject": article.journal, "creator": "medconcept sample"})
    layout = _Layout(doc, 2 if article.two_column else 1)
    # Title block spans the page width.
    page = layout.page
    title_h = _text_height(article.title, PAGE_W - 2 * MARGIN, 15, "hebo")
    page.insert_textbox(pymupdf.Rect(MARGIN, MARGIN, PAGE_W - MARGIN, MARGIN + title_h), article.title,
                        fontsize=15, fontname="hebo")
    meta = f"{article.journal} {article.year}. doi:{article.doi}"
    page.insert_textbox(pymupdf.Rect(MARGIN, MARGIN + title_h, PAGE_W - MARGIN, MARGIN + title_h + 14), meta,
                        fontsize=8, fontname="helv")
    layout.header = title_h + 22
    layout.y = MARGIN + layout.header
    layout.text("Abstract. " + article.abstract, BODY_SIZE)
    paragraphs = list(article.paragraphs)
    for index, fig in enumerate(article.figures):
        if index < len(paragraphs):
            layout.text(paragraphs[index], BODY_SIZE)
        width, height = image_sizes[fig.graphic]
        draw_w = layout.col_w
        draw_h = draw_w * height / width
        if draw_h > 300:
            draw_h = 300
            draw_w = draw_h * width / height
        caption = f"{fig.label}. {fig.title} {fig.caption}"
        cap_h = _text_height(caption, layout.col_w, CAPTION_SIZE)
        rect = layout.reserve(draw_h + 6 + cap_h)
        image_rect = pymupdf.Rect(rect.x0, rect.y0, rect.x0 + draw_w, rect.y0 + draw_h)
        layout.page.insert_image(image_rect, stream=images[fig.graphic])
        cap_rect = pymupdf.Rect(rect.x0, rect.y0 + draw_h + 6, rect.x1, rect.y1)
        layout.page.insert_textbox(cap_rect, caption, fontsize=CAPTION_SIZE, fontname="helv")
    for paragraph in paragraphs[len(article.figures):]:
        layout.text(paragraph, BODY_SIZE)
    data = doc.tobytes(garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return data
