"""Panel detection and pairing, measured on the sample generator's compound figures (it
records where it drew each panel) and on the real eLife and PLOS figures."""
from __future__ import annotations

import collections
import io

import pytest
from PIL import Image, ImageDraw

from tasks.common.params import load_params
from tasks.figures.panel_detect import box_iou, detect_panels, reading_order
from tasks.figures.panel_pairing import COUNT_MISMATCH, LABEL_MISMATCH, LOW_CONFIDENCE, NOT_COMPOUND, pair_panels
from tasks.figures.jats_figures import parse_figures
from tasks.figures.panels import split_caption


@pytest.fixture(scope="module")
def sample_figures(repo_root):
    """(figure spec, its image) for every figure of the sample's articles, drawn as the sample stage draws them."""
    from tasks.sample.articles import build_article

    params = load_params(repo_root / "params.yaml")
    from tasks.sample.jats import build_nxml

    out = []
    for index in range(int(params["sample"]["literature"]["n_articles"])):
        article, images, _ = build_article(params, index)
        captions = {f.fig_id: f.caption for f in parse_figures(build_nxml(article))}  # as the stage reads them
        out.extend((spec, captions[spec.fig_id], Image.open(io.BytesIO(images[spec.graphic])).convert("RGB"))
                   for spec in article.figures)
    return out


def _detect(caption, image):
    shared, subcaptions = split_caption(caption)
    return detect_panels(image, len(subcaptions) or None), shared, subcaptions


def test_sample_truth_holds_every_panel_box_and_the_hard_layouts(sample_figures):
    layouts = collections.Counter()
    for spec, caption, image in sample_figures:
        for panel in spec.panels:
            x0, y0, x1, y1 = panel["box"]
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
            layouts[panel["layout"]] += 1
    for layout in ("row", "unequal", "touching", "inset"):
        assert layouts[layout] >= 5, layouts  # the measure below covers each kind


def test_panel_boxes_on_the_sample_compound_figures(sample_figures):
    hits, misses = 0, []
    for spec, caption, image in sample_figures:
        if not spec.panels:
            continue
        detection, _, _ = _detect(caption, image)
        for index, panel in enumerate(spec.panels):  # detected panels come in reading order
            iou = box_iou(panel["box"], detection.panels[index].box) if index < len(detection.panels) else 0.0
            if iou >= 0.9:
                hits += 1
            else:
                misses.append((spec.graphic, panel["layout"], panel["panel"], round(iou, 3)))
    assert hits / (hits + len(misses)) >= 0.95, misses


def test_no_single_panel_figure_is_split(sample_figures):
    singles = [(spec, image) for spec, caption, image in sample_figures if not spec.panels]
    assert len(singles) >= 50
    for spec, image in singles:
        # without letters in the caption the detector runs unguided and must still find one panel
        assert len(detect_panels(image, None).panels) == 1, spec.graphic
        assert len(detect_panels(image, 1).panels) == 1


def test_pairing_accuracy_on_the_sample(sample_figures):
    correct = total = 0
    for spec, caption, image in sample_figures:
        if not spec.panels:
            continue
        detection, shared, subcaptions = _detect(caption, image)
        pairing = pair_panels(detection.panels, subcaptions, shared)
        by_label = {p.label: p for p in pairing.panels}
        for panel in spec.panels:
            total += 1
            paired = by_label.get(panel["panel"])
            correct += bool(paired and paired.subcaption == panel["text"] and paired.shared_caption == spec.title
                            and box_iou(paired.box, panel["box"]) >= 0.9)
    assert total >= 100 and correct / total >= 0.95, (correct, total)


def _white_figure(boxes, size=(600, 400)):
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for k, (x0, y0, x1, y1) in enumerate(boxes):  # plots: axes, a curve, ticks on white
        draw.line([(x0, y1 - 1), (x1 - 1, y1 - 1)], fill="black", width=2)
        draw.line([(x0, y0), (x0, y1 - 1)], fill="black", width=2)
        draw.line([(x0 + 5, y1 - 10), ((x0 + x1) // 2, y0 + 10 + 7 * k), (x1 - 5, (y0 + y1) // 2)], fill="blue", width=3)
    return image


def test_white_plots_cut_at_the_gutters_and_the_prior_picks_the_count():
    boxes = [(20, 20, 280, 180), (320, 20, 580, 180), (20, 220, 580, 380)]
    detection = detect_panels(_white_figure(boxes), 3)
    assert detection.matches_expected and [p.method for p in detection.panels] == ["xy_cut"] * 3
    for truth, found in zip(boxes, detection.panels):
        assert box_iou(truth, found.box) >= 0.9, (truth, found.box)
    assert len(detect_panels(_white_figure(boxes), 1).panels) == 1
    # a large image is analysed reduced, boxes come back in its own pixels
    big = _white_figure(boxes).resize((1800, 1200), Image.NEAREST)
    scaled = detect_panels(big, 3)
    assert [box_iou([v * 3 for v in t], p.box) >= 0.9 for t, p in zip(boxes, scaled.panels)] == [True] * 3


def test_reading_order_rows_then_insets():
    big, right_top, right_bottom, inset = (0, 0, 200, 200), (210, 0, 300, 90), (210, 100, 300, 200), (120, 120, 190, 190)
    assert reading_order([inset, right_bottom, big, right_top]) == [big, right_top, right_bottom, inset]


class _Found:
    def __init__(self, box, confidence=0.9, method="xy_cut"):
        self.box, self.confidence, self.method = box, confidence, method


def test_pairing_keeps_the_figure_whole_when_evidence_disagrees():
    subs = [{"panel": "A", "text": "first"}, {"panel": "B", "text": "second"}]
    two = [_Found((0, 0, 10, 10)), _Found((20, 0, 30, 10))]
    paired = pair_panels(two, subs, "Shared.")
    assert paired.reason is None and [(p.label, p.subcaption, p.shared_caption) for p in paired.panels] == [
        ("A", "first", "Shared."), ("B", "second", "Shared.")]
    assert pair_panels(two, subs, "", labels=["B", None]).panels[0].subcaption == "second"  # a read label wins
    assert pair_panels(two[:1], subs, "").reason == COUNT_MISMATCH
    assert pair_panels([two[0], _Found((20, 0, 30, 10), 0.1)], subs, "").reason == LOW_CONFIDENCE
    assert pair_panels(two, subs, "", labels=["A", "C"]).reason == LABEL_MISMATCH
    assert pair_panels(two, [], "").reason == NOT_COMPOUND


def test_real_multi_panel_figures_match_their_letter_counts(shared_data, tmp_path):
    from tests.helpers.real_panels import real_lettered_figures
    from tasks.figures.contact_sheet import draw_panel_gallery

    figures = real_lettered_figures(shared_data)
    assert len(figures) >= 30
    matched, gallery = 0, []
    for name, jpeg, letters in figures:
        detection = detect_panels(Image.open(io.BytesIO(jpeg)), len(letters))
        matched += detection.matches_expected
        gallery.append((f"{name} {len(detection.panels)}/{len(letters)}", jpeg,
                        [(label, p.box) for label, p in zip(letters, detection.panels)]))
    assert matched / len(figures) >= 0.8, (matched, len(figures))
    assert draw_panel_gallery(gallery, tmp_path / "panel_gallery.png").stat().st_size > 0


def test_content_mask_is_the_per_channel_distance_rule():
    import numpy as np

    from tasks.figures.panel_detect import TOLERANCE, content_mask

    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for background in (np.array([255, 255, 255]), np.array([12, 200, 90])):
        expected = (np.abs(rgb.astype(np.int16) - background) > TOLERANCE).any(axis=2)
        assert (content_mask(rgb, background) == expected).all()
        assert expected.any() and not expected.all()
