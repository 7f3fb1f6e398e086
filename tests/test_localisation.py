"""Drawn-finding truth of the sample, and the pointing game and map AUC scored against it."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.common.masks import box_of, rle_decode, rle_encode
from tasks.evaluate import localisation as loc


def test_run_lengths_round_trip_and_refuse_too_many_pixels():
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 12)))) < rng.random()
        assert np.array_equal(rle_decode(rle_encode(mask)), mask)
    assert box_of(np.zeros((3, 3), bool)) is None
    with pytest.raises(ValueError, match="cover 10 pixels, the mask has 9"):
        rle_decode({"size": [3, 3], "counts": [4, 6]})


def test_every_drawn_region_lies_on_pixels_that_differ_from_their_surroundings(repo_root):
    """The truth is where the finding is: much of a ring just around each region differs in
    grey level from the region (a nodule brighter than the lung, a pneumothorax darker)."""
    from scipy.ndimage import binary_dilation

    from tasks.common.params import load_params
    from tasks.sample.articles import build_article

    params = load_params(repo_root / "params.yaml", [])
    seen = set()
    for index in range(6):
        article, images, _ = build_article(params, index)
        for fig in article.figures:
            pixels = np.asarray(Image.open(io.BytesIO(images[fig.graphic])).convert("L"), dtype=float)
            assert {r["finding"] for r in fig.regions} == set(fig.findings)
            for region in fig.regions:
                mask = rle_decode(region["mask"])
                assert mask.shape == pixels.shape and box_of(mask) == region["box"]
                ring = binary_dilation(mask, iterations=4) & ~binary_dilation(mask, iterations=1)
                if region["finding"] in ("emphysema", "arterial_calcification"):
                    continue  # specks: a 4-pixel ring reaches the next speck or the aortic wall
                panel = next((p for p in fig.panels if p["panel"] == region["panel"]), None)
                if panel and (panel["box"][2] - panel["box"][0]) < params["sample"]["literature"]["image_size"] / 2:
                    continue  # an inset shrunk below half size: its 4-pixel ring spans neighbouring anatomy
                edge = float((np.abs(pixels[ring] - np.median(pixels[mask])) > 15).mean())
                assert edge > 0.3, (fig.fig_id, region["finding"], edge)
                seen.add(region["finding"])
    assert len(seen) >= 6, seen


def test_the_letterboxed_mask_sits_where_the_letterboxed_image_does():
    from tasks.training.conceptclip_data import letterbox

    mask = np.zeros((4, 10), bool)
    mask[1, 7] = True
    image = torch.zeros(1, 4, 10)
    image[0, 1, 7] = 1.0
    boxed = letterbox(image)
    # letterbox pads with the border's mean: only the marked pixel is the maximum
    assert np.array_equal(loc.letterbox_mask(mask), (boxed[0] == boxed.max()).numpy())


def test_pointing_game_and_map_auc_on_known_maps():
    square = np.zeros((64, 64), bool)
    square[2:14, 34:46] = True  # inside cell (0, 2) of a 4x4 grid
    cover = loc.cell_cover(square, 4)
    peak = np.zeros((4, 4))
    peak[0, 2] = 1.0
    assert loc.pointing_hit(peak, cover) == 1.0
    assert loc.pointing_hit(-peak, cover) == 0.0
    assert loc.pointing_hit(np.zeros((4, 4)), cover) == pytest.approx(1 / 16)  # flat: the chance level
    assert loc.map_auc(cover, square) > 0.95 and loc.map_auc(-cover, square) < 0.05
    # the letterbox padding takes no part: a map high on the padding only is not rewarded there
    inside = np.zeros((64, 64), bool)
    inside[:, 32:] = True
    padded = np.zeros((4, 4))
    padded[:, :2] = 5.0
    padded[0, 2] = 1.0
    assert loc.map_auc(padded, square, inside) > 0.8 and loc.map_auc(padded, square) < 0.5
    prior = loc.centre_prior(4)
    assert prior[1, 1] == prior[2, 2] == prior.max() and prior[0, 0] == prior.min()


def test_score_reports_each_method_for_all_and_for_large_regions():
    big = np.zeros((64, 64), bool)
    big[0:32, 0:32] = True       # 4 patches of a 4x4 grid over 64 px
    small = np.zeros((128, 128), bool)
    small[80:96, 80:96] = True   # a quarter of a patch of this larger figure (4 patches on a 64 px one)
    regions = [loc.Region("k1", "PMC1", "C1", "a", None, big, np.ones((64, 64), bool)),
               loc.Region("k2", "PMC2", "C2", "b", "A", small, np.ones((128, 128), bool))]
    good = [loc.cell_cover(big, 4), loc.cell_cover(small, 4)]
    maps = {"model": good, "flat": [np.zeros((4, 4))] * 2}
    out = loc.score(regions, maps, 4, 2.0, n_boot=20, seed=0)
    assert out["all"]["regions"] == 2 and out["at_least_2_patches"]["regions"] == 1
    assert out["at_least_2_patches"]["model"]["pointing_game"]["value"] == 1.0
    assert out["at_least_2_patches"]["flat"]["pointing_game"]["value"] == pytest.approx(4 / 16)
    assert out["all"]["model"]["pointing_game"]["value"] == 1.0
    assert out["per_concept"]["C2"]["regions"] == 1 and out["per_concept"]["C2"]["finding"] == "b"


def test_a_figure_cut_into_panels_is_scored_by_each_panels_own_cut_mask(tmp_path):
    """Truth masks in figure pixels, the figure stored at half its source size and cut into two
    panels: each panel's region is its finding's mask cut to the panel's box."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.evaluate.localisation import read_regions

    h, w = 40, 80  # stored; the source was 80 x 160
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[10:20, 5:15] = True      # in panel A (x 0..40)
    right[22:30, 50:70] = True    # in panel B (x 40..80)
    stray = np.zeros((h, w), bool)
    stray[0:3, 0:3] = True        # labelled B, but drawn where panel B's box is not
    truth = tmp_path / "figures.jsonl"
    regions = [{"cui": "C1", "finding": "nodule", "panel": "A", "mask": rle_encode(left)},
               {"cui": "C2", "finding": "mass", "panel": "B", "mask": rle_encode(right)},
               {"cui": "C3", "finding": "cyst", "panel": "B", "mask": rle_encode(stray)},
               {"cui": "C4", "finding": "cyst", "panel": "C", "mask": rle_encode(left)}]
    truth.write_text(json.dumps({"pmcid": "PMC1", "fig_id": "fig1", "regions": regions}) + "\n")
    figures = tmp_path / "figures.parquet"
    pq.write_table(pa.table({"key": ["PMC1_fig1"], "pmcid": ["PMC1"], "figure_id": ["fig1"], "width": [w],
                             "height": [h], "source_width": [2 * w], "source_height": [2 * h]}), figures)
    panels = tmp_path / "panels.parquet"
    pq.write_table(pa.table({"key": ["PMC1_fig1_A", "PMC1_fig1_B"], "parent": ["PMC1_fig1"] * 2, "label": ["A", "B"],
                             "box": [[0, 0, 80, 80], [80, 0, 160, 80]], "width": [40, 40], "height": [40, 40]}), panels)
    found, skipped = read_regions(truth, figures, {"PMC1_fig1_A", "PMC1_fig1_B"}, panels)
    by_key = {(r.key, r.cui): r for r in found}
    assert sorted(by_key) == [("PMC1_fig1_A", "C1"), ("PMC1_fig1_B", "C2")]
    assert np.array_equal(by_key[("PMC1_fig1_A", "C1")].square, left[:, :40])
    assert np.array_equal(by_key[("PMC1_fig1_B", "C2")].square, right[:, 40:])
    assert skipped["outside_its_panel"] == 1 and skipped["panel_not_scored"] == 1
    # the whole figure, when it is what was scored: its masks as drawn
    whole, _ = read_regions(truth, figures, {"PMC1_fig1"}, panels)
    assert len(whole) == 4 and whole[0].square.shape == (w, w)
