"""Sample part `literature`: PMC-style OA packages with figures whose captions match their pixels.

Writes `<output_dir>/pmc/oa_package/xx/yy/PMCnnnnnnn.tar.gz` (JATS, PDF, JPEG figures,
license.txt), `pmc/oa_file_list.csv` in PMC's columns, the deliberately broken
packages, and ground truth in `<output_dir>/truth/` for the tests. The articles
themselves are built by tasks/sample/articles.py.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from tasks.sample.articles import (LICENCES_BY_URL, build_article, folder_name, oa_row, package_members,
                                   package_relpath)
from tasks.sample.broken_packages import broken_packages
from tasks.sample.jats import ArticleSpec
from tasks.sample.packages import tar_gz

OUTPUT_SUBDIR = "pmc"
TRUTH_SUBDIR = "truth"


def plan(params: dict) -> list[list[int]]:
    n = int(params["sample"]["literature"]["n_articles"])
    ids = list(range(n))
    return [ids[i : i + 10] for i in range(0, n, 10)] + [["broken"]]


def _truth_rows(article: ArticleSpec, relpath: str) -> list[dict]:
    return [
        {
            "pmcid": article.pmcid, "fig_id": f.fig_id, "label": f.label, "title": f.title,
            "caption": f.caption, "kind": f.kind, "findings": f.findings, "panels": f.panels,
            "graphic": f.graphic, "package": relpath,
            # where each finding was drawn (figure pixels; mask: tasks/common/masks.py run lengths)
            "regions": f.regions,
        }
        for f in article.figures
    ]


def generate_shard(params: dict, shard: list) -> dict:
    out = Path(params["sample"]["output_dir"])
    pmc_dir, truth_dir = out / OUTPUT_SUBDIR, out / TRUTH_SUBDIR
    if shard == ["broken"]:
        return generate_broken(params) if params["sample"]["literature"]["broken_inputs"] else {"items": 0}
    figures_truth, oa_rows = [], []
    for index in shard:
        article, images, sizes = build_article(params, index)
        relpath = package_relpath(article.pmcid)
        members = package_members(article, images, sizes, folder_name(article, index), with_thumbnails=index % 4 == 0)
        target = pmc_dir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tar_gz(members))
        figures_truth.extend(_truth_rows(article, relpath))
        oa_rows.append(oa_row(relpath, article, LICENCES_BY_URL[article.licence_url]))
    truth_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(truth_dir / f"figures-{shard[0]:05d}.jsonl", figures_truth)
    _write_jsonl(truth_dir / f"oa-{shard[0]:05d}.jsonl", oa_rows)
    return {"items": len(shard), "figures": len(figures_truth)}



def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def generate_broken(params: dict) -> dict:
    """The deliberately broken packages, each with the rejection reason ingest must give."""
    out = Path(params["sample"]["output_dir"])
    rows = []
    for relpath, data, reason, citation in broken_packages(params):
        target = out / OUTPUT_SUBDIR / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        rows.append(citation | {"File": relpath, "expected": "rejected" if reason else "accepted",
                                "reason": reason})
    (out / TRUTH_SUBDIR).mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / TRUTH_SUBDIR / "oa-broken.jsonl", rows)
    return {"items": len(rows), "broken": sum(1 for r in rows if r["reason"])}


OA_COLUMNS = ["File", "Article Citation", "Accession ID", "Last Updated", "PMID", "License"]


def finalize(params: dict, results: list[dict]) -> dict:
    """Write oa_file_list.csv (PMC's columns) and the expected ingest outcome per package."""
    out = Path(params["sample"]["output_dir"])
    truth = out / TRUTH_SUBDIR
    rows = []
    for path in sorted(truth.glob("oa-*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
        path.unlink()
    rows.sort(key=lambda r: r["File"])
    with (out / OUTPUT_SUBDIR / "oa_file_list.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OA_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _write_jsonl(truth / "packages.jsonl", [
        {"File": r["File"], "pmcid": r["Accession ID"], "expected": r["expected"], "reason": r["reason"],
         "License": r["License"]} for r in rows
    ])
    figure_rows = []
    for path in sorted(truth.glob("figures-*.jsonl")):
        figure_rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
        path.unlink()
    _write_jsonl(truth / "figures.jsonl", figure_rows)
    return {"packages": len(rows)}
