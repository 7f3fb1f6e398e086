"""Sample part `literature`: PMC-style OA packages with figures whose captions match their pixels.

Writes `<output_dir>/pmc/oa_package/xx/yy/PMCnnnnnnn.tar.gz` (JATS, PDF, JPEG figures,
license.txt), `pmc/oa_file_list.csv` in PMC's columns, the deliberately broken
packages, and ground truth in `<output_dir>/truth/` for the tests.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.sample import captions
from tasks.sample.article_pdf import build_pdf
from tasks.sample.catalogue import IMAGE_KINDS
from tasks.sample.figure_images import compose_panels, render_panel
from tasks.sample.jats import ArticleSpec, FigureSpec, build_nxml
from tasks.sample.packages import tar_gz

OUTPUT_SUBDIR = "pmc"
TRUTH_SUBDIR = "truth"
PMCID_BASE = 9_900_001
JOURNALS = ["J Synth Radiol", "Synthetic Chest Imaging", "Open Med Imaging Rep"]
LICENCES = {
    "cc-by": ("open-access", "https://creativecommons.org/licenses/by/4.0/", "CC BY",
              "This is an open access article distributed under the terms of the Creative Commons "
              "Attribution License, which permits unrestricted use, distribution, and reproduction."),
    "cc0": ("open-access", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0",
            "This is an open access article, free of all copyright (CC0 public domain dedication)."),
    "cc-by-nc": ("open-access", "https://creativecommons.org/licenses/by-nc/4.0/", "CC BY-NC",
                 "Distributed under the Creative Commons Attribution-NonCommercial License, which "
                 "permits non-commercial use, distribution and reproduction."),
}
PANEL_STYLES = ["({L}) {t}", "{L}, {t}", "({l}) {t}"]


def _rng(params: dict, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(params["sample"]["seed"]), *salt])


def plan(params: dict) -> list[list[int]]:
    n = int(params["sample"]["literature"]["n_articles"])
    ids = list(range(n))
    return [ids[i : i + 10] for i in range(0, n, 10)] + [["broken"]]


def pmcid_of(index: int) -> str:
    return f"PMC{PMCID_BASE + index}"


def package_relpath(pmcid: str) -> str:
    digest = hashlib.sha256(pmcid.encode()).hexdigest()
    return f"oa_package/{digest[:2]}/{digest[2:4]}/{pmcid}.tar.gz"


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


def _make_figure(rng, article_index: int, fig_no: int, prefix: str, size: int, compound: bool,
                 quality: int) -> tuple[FigureSpec, bytes, tuple[int, int]]:
    kind = list(IMAGE_KINDS)[int(rng.integers(0, len(IMAGE_KINDS)))]
    n_panels = int(rng.integers(2, 4)) if compound else 1
    letters = [chr(ord("A") + i) for i in range(n_panels)]
    panel_images, panel_specs, union = [], [], set()
    for letter in letters:
        present = captions.choose_findings(rng, kind)
        union.update(present)
        panel_images.append(render_panel(rng, kind, size, set(present)))
        text = captions.panel_sentence(rng, kind, present, int(rng.integers(0, 3)))
        panel_specs.append({"panel": letter, "text": text, "findings": present, "kind": kind})
    if compound:
        style = PANEL_STYLES[int(rng.integers(0, len(PANEL_STYLES)))]
        parts = [style.format(L=p["panel"], l=p["panel"].lower(), t=p["text"]) for p in panel_specs]
        caption = " ".join(parts)
        for p in panel_specs:
            p["style"] = style
        image = compose_panels(panel_images, letters)
    else:
        caption = panel_specs[0]["text"]
        panel_specs = []
        image = panel_images[0]
    graphic = f"{prefix}.g{fig_no:03d}"
    figure = FigureSpec(
        fig_id=f"fig{fig_no}",
        label=f"Figure {fig_no}",
        title=captions.figure_title(rng, kind),
        caption=caption,
        graphic=graphic,
        kind=kind,
        panels=panel_specs,
        findings=sorted(union),
    )
    return figure, _jpeg(image, quality), image.size


def build_article(params: dict, index: int) -> tuple[ArticleSpec, dict[str, bytes], dict]:
    lit = params["sample"]["literature"]
    rng = _rng(params, 1, index)
    pmcid = pmcid_of(index)
    year = int(rng.integers(2015, 2025))
    prefix = f"jsmi.{year}.{index:05d}"
    lo, hi = lit["figures_per_article"]
    n_figures = int(rng.integers(int(lo), int(hi) + 1))
    figures, images, sizes = [], {}, {}
    for fig_no in range(1, n_figures + 1):
        compound = bool(rng.random() < float(lit["compound_fraction"]))
        figure, data, size = _make_figure(rng, index, fig_no, prefix, int(lit["image_size"]), compound,
                                          int(lit["jpeg_quality"]))
        figures.append(figure)
        images[figure.graphic] = data
        sizes[figure.graphic] = size
    if index % 8 == 3 and len(figures) >= 2:  # some articles group two figures
        figures[0].group = figures[1].group = "fg1"
    licence_key = "cc-by-nc" if rng.random() < float(lit["noncommercial_fraction"]) else (
        "cc0" if index % 11 == 5 else "cc-by")
    licence_type, licence_url, _, licence_text = LICENCES[licence_key]
    kinds = sorted({f.kind for f in figures})
    article = ArticleSpec(
        pmcid=pmcid,
        pmid=str(39_000_000 + index),
        doi=f"10.5555/{prefix}",
        title=f"Imaging features of thoracic and abdominal disease: case series {index + 1}",
        journal=JOURNALS[index % len(JOURNALS)],
        year=year,
        licence_type=licence_type,
        licence_url=licence_url,
        licence_text=licence_text,
        abstract=("We describe imaging findings on computed tomography (CT) and chest radiographs "
                  f"in a retrospective series; studied image types: {', '.join(kinds)}."),
        paragraphs=[
            f"Patient {k + 1} underwent imaging as part of routine care; findings are shown in "
            f"{fig.label}." for k, fig in enumerate(figures)
        ],
        figures=figures,
        last_updated=f"{2019 + index % 6}-0{1 + index % 9}-1{index % 10} 10:00:00",
        two_column=bool(rng.random() < float(lit["two_column_fraction"])),
    )
    return article, images, sizes


def package_members(article: ArticleSpec, images: dict[str, bytes], sizes: dict, folder: str,
                    with_thumbnails: bool) -> list[tuple[str, bytes]]:
    stem = article.figures[0].graphic.rsplit(".g", 1)[0] if article.figures else article.pmcid
    members = [
        (f"{folder}/{stem}.nxml", build_nxml(article)),
        (f"{folder}/{stem}.pdf", build_pdf(article, images, sizes)),
        (f"{folder}/license.txt", (LICENCE_TXT.get(article.licence_url, "All rights reserved.") + "\n").encode()),
    ]
    for graphic, data in sorted(images.items()):
        members.append((f"{folder}/{graphic}.jpg", data))
        if with_thumbnails:
            thumb = Image.open(io.BytesIO(data)).convert("RGB")
            thumb.thumbnail((64, 64))
            buffer = io.BytesIO()
            thumb.convert("P").save(buffer, format="GIF")
            members.append((f"{folder}/{graphic}.gif", buffer.getvalue()))
    return members


LICENCE_TXT = {url: text for _, url, _, text in LICENCES.values()}


def _folder(article: ArticleSpec, index: int) -> str:
    return f"{article.journal.replace(' ', '_')}_{article.year}_{index + 1}"


def _truth_rows(article: ArticleSpec, relpath: str) -> list[dict]:
    return [
        {
            "pmcid": article.pmcid, "fig_id": f.fig_id, "label": f.label, "title": f.title,
            "caption": f.caption, "kind": f.kind, "findings": f.findings, "panels": f.panels,
            "graphic": f.graphic, "package": relpath,
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
        members = package_members(article, images, sizes, _folder(article, index), with_thumbnails=index % 4 == 0)
        target = pmc_dir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tar_gz(members))
        figures_truth.extend(_truth_rows(article, relpath))
        oa_rows.append(_oa_row(relpath, article, LICENCES_BY_URL[article.licence_url]))
    truth_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(truth_dir / f"figures-{shard[0]:05d}.jsonl", figures_truth)
    _write_jsonl(truth_dir / f"oa-{shard[0]:05d}.jsonl", oa_rows)
    return {"items": len(shard), "figures": len(figures_truth)}


LICENCES_BY_URL = {url: short for _, url, short, _ in LICENCES.values()}


def _oa_row(relpath: str, article: ArticleSpec, licence: str) -> dict:
    return {
        "File": relpath,
        "Article Citation": f"{article.journal}. {article.year}; 1:{article.pmid[-3:]}",
        "Accession ID": article.pmcid,
        "Last Updated": article.last_updated,
        "PMID": article.pmid,
        "License": licence,
        "expected": "accepted",
        "reason": "",
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def generate_broken(params: dict) -> dict:
    """The deliberately broken packages, each with the rejection reason ingest must give."""
    from tasks.sample.broken_packages import broken_packages

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
