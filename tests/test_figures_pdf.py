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
