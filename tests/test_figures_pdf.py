"""PDF figures: captions, regions and renders on made-up layouts, the real PMC PDF and DocBank pages."""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image

from tasks.figures.jats_figures import label_number, parse_figures
from tasks.figures.pdf_figures import extract
from tasks.figures.pdf_links import link_to_jats, token_overlap

BODY = ("The quick results of this study are summarised here in plain running text that fills "
        "the column from margin to margin. ")


def _png(w: int, h: int, seed: int) -> bytes:
    cells = (np.random.default_rng(seed).random((h // 10, w // 10, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(cells, "RGB").resize((w, h)).save(buffer, format="PNG")
    return buffer.getvalue()


def _two_column_pdf() -> bytes:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    left, right = (50, 287), (307, 545)
    page.insert_textbox(pymupdf.Rect(left[0], 50, left[1], 150), BODY * 3, fontsize=9)
    page.insert_image(pymupdf.Rect(left[0], 160, left[1], 330), stream=_png(400, 280, 1))
    page.insert_textbox(pymupdf.Rect(left[0], 336, left[1], 380),
                        "Figure 1. Left column image. (A) Upper part. (B) Lower part.", fontsize=8)
    page.insert_textbox(pymupdf.Rect(left[0], 390, left[1], 480), "Fig. 2 shows more. " + BODY * 2, fontsize=9)
    # A vector figure with tick labels in the right column, caption below it.
    shape = page.new_shape()
    shape.draw_rect(pymupdf.Rect(330, 60, 530, 200))
    for k in range(10):
        shape.draw_line(pymupdf.Point(330 + 20 * k, 200 - 12 * k), pymupdf.Point(350 + 20 * k, 188 - 12 * k))
    shape.finish(color=(0, 0, 0), width=1)
    shape.commit()
    for k, tick in enumerate(["0", "5", "10"]):
        page.insert_text(pymupdf.Point(318, 204 - 70 * k), tick, fontsize=6)
    page.insert_textbox(pymupdf.Rect(right[0], 215, right[1], 260), "Fig. 2: Right column plot of a line.",
                        fontsize=8)
    page.insert_textbox(pymupdf.Rect(right[0], 270, right[1], 400), BODY * 3, fontsize=9)
    # A caption set above its figure, spanning both columns.
    page.insert_textbox(pymupdf.Rect(50, 560, 545, 580), "FIGURE 3 | A wide figure under its caption.", fontsize=8)
    page.insert_image(pymupdf.Rect(50, 585, 545, 760), stream=_png(600, 210, 2))
    page.insert_textbox(pymupdf.Rect(50, 770, 545, 800), "Figure 4 is cited here but has no image.", fontsize=9)
    # Page 2: a caption set beside its figure, body text above and below.
    page = doc.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(50, 50, 545, 120), BODY * 4, fontsize=9)
    page.insert_image(pymupdf.Rect(50, 140, 250, 290), stream=_png(300, 225, 3))
    page.insert_textbox(pymupdf.Rect(270, 140, 545, 200), "Figure 5. A side caption for the image.", fontsize=8)
    page.insert_textbox(pymupdf.Rect(50, 310, 545, 400), BODY * 4, fontsize=9)
    data = doc.tobytes()
    doc.close()
    return data


def test_caption_labels_recognised_and_citations_not():
    from tasks.figures.pdf_captions import Line, find_captions

    def line(text, bold=False):
        return Line(pymupdf.Rect(50, 100, 300, 110), text, 9.0, block=len(text), first_in_block=True, bold_start=bold)

    captions = ["Figure 3. Text.", "Fig. 2: Text.", "FIGURE 1 | Text.", "FIG. 4. Text.", "Fig 5. Text.",
                "Figure 6\u2014Text.", "Supplementary Figure S2. Text.", "Figure 7 Text."]
    for text in captions:
        bold = text == "Figure 7 Text."  # no delimiter: only a bold label marks a caption
        found = find_captions([line(text, bold)])
        assert len(found) == 1 and found[0].text == "Text.", text
    for text in ["Figure 3 shows the data.", "Fig. 2 and Fig. 3 agree.", "Figures are shown", "Fig. shows"]:
        assert find_captions([line(text)]) == [], text
    assert find_captions([line("Fig. 2 and more", bold=False)]) == []


def _near(bbox, expected, tol=4.0) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(bbox, expected))


def test_made_up_two_column_page():
    doc = pymupdf.open(stream=_two_column_pdf(), filetype="pdf")
    result = extract(doc, dpi=100, render=True)
    found = {f.label: f for f in result.figures}
    # Cited "Fig. 2 shows", "Figure 4 is" are not captions.
    assert sorted(found) == ["FIGURE 3", "Fig. 2", "Figure 1", "Figure 5"]
    assert _near(found["Figure 1"].bbox, (50, 160, 287, 330))
    assert found["Figure 1"].caption == "Left column image. (A) Upper part. (B) Lower part."
    assert found["Figure 1"].placement == "above"
    fig2 = found["Fig. 2"]
    # Tick labels included; MuPDF bounds a stroked path conservatively (by the miter limit).
    assert fig2.bbox[0] <= 318.5 and _near(fig2.bbox[1:], (60, 530, 205), tol=11)
    assert fig2.caption == "Right column plot of a line."
    assert found["FIGURE 3"].placement == "below" and _near(found["FIGURE 3"].bbox, (50, 585, 545, 760))
    image = found["Figure 1"].image
    # The image keeps its aspect ratio inside the 237 x 170 pt box: 237 x 166 pt, rendered at 100 dpi.
    assert abs(image.width - round(237 * 100 / 72)) <= 2 and abs(image.height - round(166 * 100 / 72)) <= 2
    assert [f.page for f in result.figures] == [1, 1, 1, 2]
    side = found["Figure 5"]
    assert side.placement == "beside" and _near(side.bbox, (50, 140, 250, 290))


def _package(shared_data: Path) -> dict[str, bytes]:
    with tarfile.open(shared_data / "pmc" / "packages" / "pmc2924383.tar.gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_real_pmc_pdf_matches_jats_ground_truth(shared_data: Path):
    members = _package(shared_data)
    jats = parse_figures(next(v for k, v in members.items() if k.endswith(".nxml")))
    doc = pymupdf.open(stream=next(v for k, v in members.items() if k.endswith(".pdf")), filetype="pdf")
    result = extract(doc, render=False)
    assert len(result.figures) == len(jats) == 4  # no extra figures ("Figure S1" legend, logos)
    links = link_to_jats(result.figures, [(f.fig_id, label_number(f.label), f.caption) for f in jats])
    assert len(links) == 4
    by_id = {f.fig_id: f for f in jats}
    for index, (fig_id, _) in links.items():
        pdf = result.figures[index]
        assert pdf.number == label_number(by_id[fig_id].label)
        assert token_overlap(by_id[fig_id].caption, pdf.caption) >= 0.9, (fig_id, pdf.caption)
        assert token_overlap(pdf.caption, by_id[fig_id].caption) >= 0.85  # little beyond the caption
    pages = [f.page for f in result.figures]
    assert pages == [2, 3, 3, 4]


def _docbank_pages(shared_data: Path):
    folder = shared_data / "pdf" / "docbank"
    for txt in sorted(folder.glob("*.txt")):
        match = re.match(r"(.+)_(\d+)\.txt$", txt.name)
        yield folder / f"{match.group(1)}_black.pdf", int(match.group(2)), txt


def _tokens(txt: Path, width: float, height: float) -> dict[str, list[tuple]]:
    by_label: dict[str, list[tuple]] = {}
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 10:
            continue
        x0, y0, x1, y1 = (float(v) for v in parts[1:5])
        box = (x0 * width / 1000, y0 * height / 1000, x1 * width / 1000, y1 * height / 1000)
        by_label.setdefault(parts[-1], []).append(box)
    return by_label


def _area(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a, b) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def _union_box(boxes):
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _caption_groups(boxes, gap=14.0):
    """Caption tokens grouped into captions by vertical proximity."""
    groups: list[list[tuple]] = []
    for box in sorted(boxes, key=lambda b: b[1]):
        if groups and box[1] - max(b[3] for b in groups[-1]) <= gap:
            groups[-1].append(box)
        else:
            groups.append([box])
    return groups


def _vertical_distance(a, b) -> float:
    return max(0.0, max(a[1], b[1]) - min(a[3], b[3]))


def test_docbank_regions_and_captions(shared_data: Path):
    checked = 0
    for pdf, page_index, txt in _docbank_pages(shared_data):
        doc = pymupdf.open(pdf)
        page = doc[page_index]
        tokens = _tokens(txt, page.rect.width, page.rect.height)
        annotated = tokens.get("figure", [])
        found = extract(doc, render=False, pages=[page_index]).figures
        assert annotated and found, pdf.name
        # Every annotated figure box (white margins included) lies mostly in a found region.
        for box in annotated:
            assert any(_inter(box, f.bbox) >= 0.5 * _area(box) for f in found), (pdf.name, box)
        for figure in found:
            mine = [b for b in annotated if _inter(b, figure.bbox) >= 0.5 * _area(b)]
            assert mine, (pdf.name, "a region with no annotated figure", figure.bbox)
            truth = _union_box(mine)
            iou = _inter(truth, figure.bbox) / (_area(truth) + _area(figure.bbox) - _inter(truth, figure.bbox))
            assert iou >= 0.5, (pdf.name, figure.label, iou)
        # Caption tokens of figure captions (not table captions) lie inside a found caption.
        tables = tokens.get("table", [])
        for group in _caption_groups(tokens.get("caption", [])):
            box = _union_box(group)
            to_figure = min(_vertical_distance(box, b) for b in annotated)
            to_table = min([_vertical_distance(box, b) for b in tables] or [float("inf")])
            if to_table < to_figure:
                continue
            for token in group:
                # DocBank's token boxes use other font metrics: the token's centre must be inside.
                cx, cy = (token[0] + token[2]) / 2, (token[1] + token[3]) / 2
                assert any(c[0] - 1 <= cx <= c[2] + 1 and c[1] - 1 <= cy <= c[3] + 1
                           for c in (f.caption_bbox for f in found)), (pdf.name, token)
        checked += 1
    assert checked == 7


def test_broken_pdf_gives_no_figures_not_a_crash():
    from tasks.figures.article import Settings, process_article

    for damage in (b"%PDF-1.4\n garbage", b""):
        result = process_article("PMC1", {"a.pdf": damage}, {}, Settings())
        assert result.samples == []
        assert [r["reason"] for r in result.rejected] == ["unreadable_pdf"]


# -- BMC-style captions: "Figure 1" glued to the caption's first word ------------------------------

BMC_CAPTIONS = ["Chest CT of a 61-year-old man with a spiculated nodule in the left upper lobe and "
                "pleural retraction.",
                "Axial contrast-enhanced CT after six months: the nodule has grown and the hilar nodes "
                "are enlarged."]


def _text_lines(page, x, y, lines, fontname="helv", size=9.0, leading=11.0) -> float:
    for text in lines:
        page.insert_text((x, y), text, fontname=fontname, fontsize=size)
        y += leading
    return y


def _bmc_caption(page, x, y, number, caption, label_font) -> None:
    """BMC's caption: the label run ("Figure 1") then the caption's first word, no space or
    delimiter between them; the label bold only by its font's name where label_font is hebo."""
    label = f"Figure {number}"
    width = pymupdf.get_text_length(label, fontname=label_font, fontsize=8)
    words = caption.split()
    first, rest = " ".join(words[:9]), " ".join(words[9:])
    page.insert_text((x, y), label, fontname=label_font, fontsize=8)
    page.insert_text((x + width, y), first, fontname="helv", fontsize=8)
    page.insert_text((x, y + 9.6), rest, fontname="helv", fontsize=8)


def _bmc_pdf(label_font: str) -> bytes:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    y = _text_lines(page, 56, 60, [
        "Background. Lung nodules found on CT are followed up to tell benign from malignant ones by",
        "their growth. We describe a patient whose nodule grew over six months of surveillance; the",
        "first scan is shown in Figure 1, the follow-up scan in Figure 2.",
    ])
    page.insert_image(pymupdf.Rect(56, y + 6, 356, y + 206), stream=_png(300, 200, 11))
    _bmc_caption(page, 56, y + 220, 1, BMC_CAPTIONS[0], label_font)
    _text_lines(page, 56, y + 256, [
        "Case presentation. A 61-year-old man, a former smoker, was referred after an incidental",
        "finding on a chest radiograph. The nodule in the left upper lobe measured 14 mm and",
        "Figure 1 shows its spiculated margin and the retraction of the pleura next to it. A biopsy",
        "was declined by the patient and surveillance by CT was agreed on instead.",
    ])
    page = doc.new_page(width=595, height=842)
    page.insert_image(pymupdf.Rect(56, 60, 356, 260), stream=_png(300, 200, 12))
    _bmc_caption(page, 56, 274, 2, BMC_CAPTIONS[1], label_font)
    _text_lines(page, 56, 310, [
        "Figure 2 shows the growth of the nodule, which was resected; histology found an",
        "adenocarcinoma. Discussion. Growth on surveillance CT is the sign that matters most.",
    ])
    data = doc.tobytes()
    doc.close()
    return data


def test_bmc_style_captions_found_by_font_run_or_by_position_and_sequence():
    for label_font in ("hebo", "helv"):  # Helvetica-Bold label run; one font throughout (position only)
        doc = pymupdf.open(stream=_bmc_pdf(label_font), filetype="pdf")
        result = extract(doc, render=False)
        assert [(f.page, f.label, f.number) for f in result.figures] == [(1, "Figure 1", "1"), (2, "Figure 2", "2")]
        assert [f.caption for f in result.figures] == BMC_CAPTIONS, label_font
        assert _near(result.figures[0].bbox, (56, 99, 356, 299), tol=2)
        assert _near(result.figures[1].bbox, (56, 60, 356, 260), tol=2)
        assert result.captions_without_region == []  # "Figure 1 shows" and "Figure 2 shows" are running text


def test_bmc_caption_line_evidence():
    from tasks.figures.pdf_captions import Line, caption_start, find_captions

    def line(text, label_run="", first=True, bold=False, y=300):
        return Line(pymupdf.Rect(56, y, 400, y + 9), text, 8.0, block=y, first_in_block=first, bold_start=bold,
                    label_run=label_run)

    # the label's own font run (flags not bold, the font name says nothing either): a caption
    start = caption_start(line("Figure 1Chest CT of a man.", label_run="Figure 1"))
    assert (start.label, start.number, start.evidence) == ("Figure 1", "1", "font")
    (caption,) = find_captions([line("Figure 1Chest CT of a man.", label_run="Figure 1")])
    assert caption.text == "Chest CT of a man."
    # one font, no delimiter: a caption only beside a graphic, and only the next number
    image = np.array([[56.0, 90.0, 356.0, 295.0]])
    plain = line("Figure 2Axial CT of the chest.")
    assert find_captions([plain]) == []
    assert [c.text for c in find_captions([plain], image, {"1"})] == ["Axial CT of the chest."]
    assert find_captions([plain], image, {"1", "2"}) == []  # number 2 has its caption already
    assert find_captions([line("Figure 5 Axial CT.")], image, {"1"}) == []  # 5 before 2, 3 and 4
    far = np.array([[56.0, 90.0, 356.0, 200.0]])  # 100 pt above the line: not its caption's place
    assert find_captions([plain], far, {"1"}) == []
    # running text: a lower-case word after the number, or a line inside a paragraph
    assert find_captions([line("Figure 2 shows the growth.")], image, {"1"}) == []
    assert find_captions([line("Figure 2 Axial CT.", first=False)], image, {"1"}) == []


# -- a figure region stops at the table above it -------------------------------------------------

TABLE = [["Finding", "Baseline", "Six months"], ["Nodule (mm)", "14", "21"], ["Hilar node (mm)", "8", "13"],
         ["Pleural effusion", "none", "small"]]


def _table_above_image_pdf() -> bytes:
    """Page 1: a ruled table; page 2: the same grid without rules; each directly above an image."""
    doc = pymupdf.open()
    for ruled in (True, False):
        page = doc.new_page(width=595, height=842)
        _text_lines(page, 56, 60, ["Results. The measurements at baseline and after six months are given below,",
                                   "with the scan that shows them under the table."])
        top = 90
        for r, row in enumerate(TABLE):
            for c, cell in enumerate(row):
                page.insert_text((62 + 130 * c, top + 14 + 16 * r), cell, fontname="helv", fontsize=8)
        bottom = top + 16 * len(TABLE) + 4
        if ruled:
            shape = page.new_shape()
            shape.draw_rect(pymupdf.Rect(56, top, 450, bottom))
            for r in range(1, len(TABLE)):
                shape.draw_line(pymupdf.Point(56, top + 2 + 16 * r), pymupdf.Point(450, top + 2 + 16 * r))
            shape.finish(color=(0, 0, 0), width=0.5)
            shape.commit()
        page.insert_image(pymupdf.Rect(56, bottom + 4, 356, bottom + 204), stream=_png(300, 200, 20 + ruled))
        page.insert_text((56, bottom + 218), "Figure %d. Follow-up CT of the measured nodule." % (2 - ruled),
                         fontname="helv", fontsize=8)
    data = doc.tobytes()
    doc.close()
    return data


def test_figure_region_stops_at_a_table_directly_above():
    doc = pymupdf.open(stream=_table_above_image_pdf(), filetype="pdf")
    result = extract(doc, render=False)
    bottom = 90 + 16 * len(TABLE) + 4
    assert [f.label for f in result.figures] == ["Figure 1", "Figure 2"]
    for figure in result.figures:  # the image only: not the table's rules, frame or cells
        assert _near(figure.bbox, (56, bottom + 4, 356, bottom + 204), tol=2), (figure.label, figure.bbox)
        assert figure.caption == "Follow-up CT of the measured nodule."


# -- a PDF that MuPDF "repairs" into no pages, or into pages without their objects -----------------

def _repaired_into_lost_pages() -> bytes:
    doc = pymupdf.open()
    for k in range(5):
        doc.new_page().insert_text((72, 72), f"page {k + 1}")
    data = doc.tobytes(garbage=0, deflate=False)
    doc.close()
    return data[: len(data) // 2]  # cut mid-file: no xref, the last pages' objects gone, /Count still 5


def test_pdf_repaired_into_no_or_lost_pages_is_unreadable_not_no_figures():
    from tasks.figures.article import Settings, process_article

    cases = {
        "no_pages": b"%PDF-1.7\n1 0 obj\n<</Type/Catalog/Pages 2 0 R>>\nendobj\n2 0 obj\n<</Type/Pages/Count 0"
                    b"/Kids[]>>\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n",
        "catalog_only": b"%PDF-1.4\n1 0 obj\n<</Type/Catalog>>\nendobj\n%%EOF\n",
        "lost_pages": _repaired_into_lost_pages(),
    }
    details = {}
    for name, damage in cases.items():
        result = process_article("PMC1", {"a.pdf": damage}, {}, Settings())
        assert result.samples == []
        assert [r["reason"] for r in result.rejected] == ["unreadable_pdf"], name
        details[name] = result.rejected[0]["detail"]
    assert details["no_pages"].startswith("the PDF opens with 0 pages (PyMuPDF repaired")
    assert details["catalog_only"].startswith("the PDF opens with 0 pages")
    assert details["lost_pages"].startswith("PyMuPDF repaired the PDF and 2 of its 5 pages lost their page object")
    # a sound PDF passes the same checks
    intact = process_article("PMC1", {"a.pdf": _two_column_pdf()}, {}, Settings())
    assert intact.samples and not intact.rejected
