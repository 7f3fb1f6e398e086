"""figures.panels through the stage: panel rows in panels.parquet, panel samples in the
WebDataset shards, byte-identical reruns from the cache."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from tasks.figures.contact_sheet import BOX_COLOUR
from tasks.figures.panel_detect import box_iou
from tasks.figures.stage import COMPOUND_ON_SHEET
from tests.test_figures_flow import _run, _sample_articles, _webdataset, _write_ingest


def _digests(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "timing.json"}


def _box_pixels(sheet) -> int:
    return int(np.all(np.asarray(Image.open(sheet).convert("RGB")) == BOX_COLOUR, axis=2).sum())


def test_panels_both_and_split(repo_root, tmp_path):
    articles, truth = _sample_articles(repo_root, range(6))
    _write_ingest(tmp_path / "ingest", articles)
    summary = _run(repo_root, tmp_path / "ingest", tmp_path / "both", **{"figures.panels": "both"})
    out = tmp_path / "both"
    figures = pq.read_table(out / "figures.parquet").to_pylist()
    panels = pq.read_table(out / "panels.parquet").to_pylist()
    compound = {r["key"]: r for r in figures if len(r["subcaptions"]) >= 2}
    assert compound and {p["parent"] for p in panels} <= set(compound)
    counts = summary["counts"] if "counts" in summary else summary
    split = counts.get("panels_split_figures", 0)
    whole = sum(v for k, v in counts.items() if k.startswith("panels_whole_"))
    assert split == len({p["parent"] for p in panels}) and split + whole == len(compound)
    for panel in panels:
        parent = compound[panel["parent"]]
        spec = next(f for f in truth[parent["pmcid"]].figures if f.fig_id == parent["figure_id"])
        drawn = next(p for p in spec.panels if p["panel"] == panel["label"])
        assert panel["key"] == f"{parent['key']}_{panel['label']}" and panel["subcaption"] == drawn["text"]
        assert box_iou(panel["box"], drawn["box"]) >= 0.9  # source pixels = the generator's pixels here
        assert panel["caption_shared"] == parent["caption_shared"] and panel["shard"] == parent["shard"]
    samples = {s["__key__"]: s for s in _webdataset(out)}
    assert set(samples) == {r["key"] for r in figures} | {p["key"] for p in panels}
    for panel in panels:
        meta = samples[panel["key"]]["json"]
        assert meta["parent"] == panel["parent"] and meta["box"] == panel["box"] and meta["licence"]
        assert samples[panel["key"]]["jpg"].size == (panel["width"], panel["height"])

    _run(repo_root, tmp_path / "ingest", tmp_path / "split", **{"figures.panels": "split"})
    split_keys = {s["__key__"] for s in _webdataset(tmp_path / "split")}
    assert split_keys == ({r["key"] for r in figures} - {p["parent"] for p in panels}) | {p["key"] for p in panels}
    first = _digests(tmp_path / "split")
    _run(repo_root, tmp_path / "ingest", tmp_path / "split", **{"figures.panels": "split"})  # from the cache
    assert _digests(tmp_path / "split") == first

    whole_summary = _run(repo_root, tmp_path / "ingest", tmp_path / "whole")
    assert pq.read_table(tmp_path / "whole" / "panels.parquet").num_rows == 0
    # the contact sheet draws a few cut figures with their panel boxes, under split and both only
    assert counts["contact_sheet_compound_figures"] == min(COMPOUND_ON_SHEET, split) > 0
    assert whole_summary["contact_sheet_compound_figures"] == 0
    assert _box_pixels(out / "contact_sheet.png") > _box_pixels(tmp_path / "whole" / "contact_sheet.png") + 500
    assert {s["__key__"] for s in _webdataset(tmp_path / "whole")} == {r["key"] for r in figures}
