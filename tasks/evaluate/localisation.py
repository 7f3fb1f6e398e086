"""Do ConceptCLIP's patch-concept maps fall on the finding? Scored against drawn truth.

The sample's generator records where it drew each finding (truth/figures.jsonl: a mask per
finding and panel, in the figure's pixels). A figure cut into panels (figures.panels split)
is scored per panel: each finding's mask cut to its panel's box (panels.parquet). For each test figure and drawn finding, the map
of the finding's concept is scored two ways:
- pointing game: the map's maximum cell holds finding pixels (ties: the share of the tied
  cells that do, so a flat map scores the chance level);
- map AUC: the map, upsampled over the figure, ranks finding pixels above the figure's
  other pixels (letterbox padding left out).
Beside the trained model, in the same table: a centre prior (nearer the centre scores
higher) and the same architecture untrained, so a figure means something only above them.
Regions are also reported for those covering at least `min_region_patches` patches: a
finding smaller than one patch cannot be pointed at by a patch map.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from tasks.common.masks import rle_decode
from tasks.evaluate.metrics import auc_or_none, bootstrap_ci, n_groups
from tasks.figures.panels import stored_box

AUC_SIDE = 128  # maps and masks are compared on a square of this side (the figure letterboxed)


@dataclass
class Region:
    key: str        # the figure's key
    pmcid: str
    cui: str
    finding: str
    panel: str | None
    square: np.ndarray  # bool [S, S]: the finding in the figure letterboxed to a square
    inside: np.ndarray  # bool [S, S]: the figure's own pixels there (not the letterbox padding)


def letterbox_mask(mask: np.ndarray) -> np.ndarray:
    """The mask placed as conceptclip_data.letterbox places the image (centred on a square)."""
    h, w = mask.shape
    s = max(h, w)
    out = np.zeros((s, s), dtype=bool)
    y, x = (s - h) // 2, (s - w) // 2
    out[y: y + h, x: x + w] = mask
    return out


def read_regions(truth: str | Path, figures: str | Path, keys: set[str],
                 panels: str | Path | None = None) -> tuple[list[Region], dict[str, int]]:
    """The drawn regions of the figures and panels in `keys`, in the stored images' pixels (a
    panel's: its own finding masks cut to its box); and the regions left out, by reason."""
    columns = ["key", "pmcid", "figure_id", "width", "height", "source_width", "source_height"]
    schema = pq.read_schema(figures)
    rows = pq.read_table(figures, columns=[c for c in columns if c in schema.names]).to_pylist()
    panel_rows = []
    if panels is not None and Path(panels).is_file():
        panel_rows = [r for r in pq.read_table(panels, columns=["key", "parent", "label", "box"])
                      .to_pylist() if r["key"] in keys]
    scored_parents = {r["parent"] for r in panel_rows}
    by_id = {(r["pmcid"], r["figure_id"]): r for r in rows if r["key"] in keys or r["key"] in scored_parents}
    panels_of: dict[str, dict[str, dict]] = {}
    for r in panel_rows:
        panels_of.setdefault(r["parent"], {})[r["label"]] = r
    regions = []
    skipped = {"figure_not_scored": 0, "aspect_differs": 0, "panel_not_scored": 0, "outside_its_panel": 0}
    with open(truth, encoding="utf-8") as handle:
        for line in handle:
            fig = json.loads(line)
            for region in fig.get("regions") or []:
                row = by_id.get((fig["pmcid"], fig["fig_id"]))
                if row is None:
                    skipped["figure_not_scored"] += 1
                    continue
                mask = rle_decode(region["mask"])
                h, w = mask.shape
                if abs(h * row["width"] - w * row["height"]) > max(h, w):  # stored at another aspect
                    skipped["aspect_differs"] += 1
                    continue
                if (w, h) != (row["width"], row["height"]):
                    mask = F.interpolate(torch.from_numpy(mask)[None, None].float(),
                                         size=(row["height"], row["width"]), mode="nearest")[0, 0].numpy() > 0.5
                if row["key"] in keys:
                    regions.append(Region(row["key"], fig["pmcid"], region["cui"], region["finding"], region["panel"],
                                          letterbox_mask(mask), letterbox_mask(np.ones_like(mask))))
                    continue
                panel = panels_of.get(row["key"], {}).get(region["panel"])
                if panel is None:  # the figure is scored as panels, and this one's is not among them
                    skipped["panel_not_scored"] += 1
                    continue
                x0, y0, x1, y1 = stored_box(panel["box"], row)
                cut = mask[y0:y1, x0:x1]
                if not cut.any():  # the detected box missed the finding drawn in its panel
                    skipped["outside_its_panel"] += 1
                    continue
                regions.append(Region(panel["key"], fig["pmcid"], region["cui"], region["finding"], region["panel"],
                                      letterbox_mask(cut), letterbox_mask(np.ones_like(cut))))
    return regions, skipped


def cell_cover(square: np.ndarray, side: int) -> np.ndarray:
    """Fraction of each cell of a side x side grid covered by the square mask."""
    t = torch.from_numpy(square)[None, None].float()
    return F.adaptive_avg_pool2d(t, side)[0, 0].numpy()


def pointing_hit(heat: np.ndarray, cover: np.ndarray) -> float:
    """heat, cover: [g, g]; the share of the maximum cells (ties) that hold finding pixels."""
    top = heat >= heat.max() - 1e-9 * max(1.0, abs(float(heat.max())))
    return float((cover[top] > 0).mean())


def map_auc(heat: np.ndarray, square: np.ndarray, inside: np.ndarray | None = None) -> float | None:
    """The map upsampled over the square ranks finding pixels above the figure's other
    pixels (the letterbox padding takes no part)."""
    up = F.interpolate(torch.from_numpy(np.asarray(heat, dtype=np.float32))[None, None], size=(AUC_SIDE, AUC_SIDE),
                       mode="bilinear", align_corners=False)[0, 0].numpy()
    truth = cell_cover(square, AUC_SIDE) >= 0.5
    keep = np.ones_like(truth) if inside is None else cell_cover(inside, AUC_SIDE) >= 0.5
    return auc_or_none(truth[keep], up[keep])


def centre_prior(grid: int) -> np.ndarray:
    c = (np.arange(grid) + 0.5) / grid - 0.5
    return -np.sqrt(c[:, None] ** 2 + c[None, :] ** 2)


def score(regions: list[Region], maps: dict[str, list[np.ndarray]], grid: int, min_patches: float,
          n_boot: int, seed: int) -> dict:
    """maps: method -> one [g, g] map per region. Pointing game and map AUC per method, for
    all regions and for those of at least min_patches patches, with intervals over articles."""
    # each figure's own patch area: figures differ in size
    patches = np.array([r.square.sum() * grid ** 2 / r.square.size for r in regions])
    covers = [cell_cover(r.square, grid) for r in regions]
    articles = [r.pmcid for r in regions]
    hits = {m: np.array([pointing_hit(h, c) for h, c in zip(heats, covers)]) for m, heats in maps.items()}
    aucs = {m: np.array([np.nan if (a := map_auc(h, r.square, r.inside)) is None else a
                         for h, r in zip(heats, regions)])
            for m, heats in maps.items()}

    def summary(rows: np.ndarray) -> dict:
        groups = [articles[i] for i in rows]
        out = {"regions": int(len(rows)), "figures": len({regions[i].key for i in rows}), "articles": n_groups(groups)}
        for m in maps:
            for name, values in (("pointing_game", hits[m]), ("map_auc", aucs[m])):
                v = values[rows]
                point = float(np.nanmean(v)) if np.isfinite(v).any() else None
                ci = bootstrap_ci(lambda idx, v=v: float(np.nanmean(v[idx])) if np.isfinite(v[idx]).any() else None,
                                  groups, n_boot, seed) if len(rows) else None
                out.setdefault(m, {})[name] = {"value": point, "ci95": list(ci) if ci else None, "n": int(len(rows)),
                                               "groups": n_groups(groups)}
        return out

    everything = np.arange(len(regions))
    large = everything[patches >= min_patches]
    per_concept = {}
    for cui in sorted({r.cui for r in regions}):
        rows = np.array([i for i, r in enumerate(regions) if r.cui == cui])
        per_concept[cui] = {"finding": regions[rows[0]].finding, "regions": int(len(rows)),
                            **{m: {"pointing_game": float(np.mean(hits[m][rows])),
                                   "map_auc": float(np.nanmean(aucs[m][rows])) if np.isfinite(aucs[m][rows]).any()
                                   else None} for m in maps}}
    return {"grid": grid, "min_region_patches": min_patches, "all": summary(everything),
            f"at_least_{min_patches:g}_patches": summary(large), "per_concept": per_concept}
