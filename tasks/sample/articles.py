"""One synthetic PMC article: JATS, PDF and JPEG figures whose captions match their pixels,
packed as PMC packs an OA package; its OA file list row.

Shared by the sample's valid packages (tasks/sample/literature.py) and its broken ones
(tasks/sample/broken_packages.py). Every choice is drawn from sample.seed and the
article's index.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from tasks.sample import captions
from tasks.sample.article_pdf import build_pdf
from tasks.common.masks import box_of, rle_encode
from tasks.sample.catalogue import FINDINGS, IMAGE_KINDS
from tasks.sample.figure_images import (HARD_LAYOUTS, INSET_FRAME, compose_panels, hard_layout, render_panel,
                                        row_layout)
from tasks.sample.jats import ArticleSpec, FigureSpec, build_nxml

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
                 quality: int, layout_rng: np.random.Generator | None = None) -> tuple[FigureSpec, bytes, tuple[int, int]]:
    kind = list(IMAGE_KINDS)[int(rng.integers(0, len(IMAGE_KINDS)))]
    n_panels = int(rng.integers(2, 4)) if compound else 1
    letters = [chr(ord("A") + i) for i in range(n_panels)]
    panel_images, panel_specs, union, panel_regions = [], [], set(), []
    for letter in letters:
        present = captions.choose_findings(rng, kind)
        union.update(present)
        regions: dict = {}
        panel_images.append(render_panel(rng, kind, size, set(present), regions))
        panel_regions.append(regions)
        text = captions.panel_sentence(rng, kind, present, int(rng.integers(0, 3)))
        panel_specs.append({"panel": letter, "text": text, "findings": present, "kind": kind})
    if compound:
        style = PANEL_STYLES[int(rng.integers(0, len(PANEL_STYLES)))]
        parts = [style.format(L=p["panel"], l=p["panel"].lower(), t=p["text"]) for p in panel_specs]
        caption = " ".join(parts)
        layout_name = HARD_LAYOUTS[int(layout_rng.integers(0, len(HARD_LAYOUTS)))] if layout_rng else "row"
        layout = (row_layout([p.size for p in panel_images]) if layout_name == "row"
                  else hard_layout(layout_name, size, n_panels))
        for p, box in zip(panel_specs, layout[1]):
            # where the panel was drawn (figure pixels, x1 and y1 exclusive): panel detection's truth
            p.update(style=style, box=list(box), layout=layout_name)
        image = compose_panels(panel_images, letters, layout)
        boxes = layout[1]
    else:
        caption = panel_specs[0]["text"]
        panel_specs = []
        image = panel_images[0]
        boxes = [(0, 0, image.width, image.height)]
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
        regions=_figure_regions(boxes, panel_regions, letters if compound else None, image.size),
    )
    return figure, _jpeg(image, quality), image.size


def _figure_regions(boxes: list[tuple[int, int, int, int]], regions: list[dict], letters: list[str] | None,
                    figure_size: tuple[int, int]) -> list[dict]:
    """Each drawn finding's mask in the figure's pixels (its panel placed and sized where
    compose_panels puts it), as a box and run lengths, with the finding's CUI."""
    width, height = figure_size
    out = []
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        for finding, mask in sorted(regions[index].items()):
            if mask.shape != (y1 - y0, x1 - x0):  # the panel was resized into its box
                mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize(
                    (x1 - x0, y1 - y0), Image.NEAREST)) > 127
            full = np.zeros((height, width), dtype=bool)
            full[y0:y1, x0:x1] = mask
            for bx0, by0, bx1, by1 in boxes[index + 1:]:  # an inset drawn later hides what lies under it
                f = INSET_FRAME
                full[max(0, by0 - f):by1 + f, max(0, bx0 - f):bx1 + f] = False
            box = box_of(full)
            if box is None:  # jittered out of the panel, or under an inset
                continue
            out.append({"finding": finding, "cui": FINDINGS[finding].cui, "panel": letters[index] if letters else None,
                        "box": box, "pixels": int(full.sum()), "mask": rle_encode(full)})
    return out


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
                                          int(lit["jpeg_quality"]), _rng(params, 3, index, fig_no))
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


def folder_name(article: ArticleSpec, index: int) -> str:
    return f"{article.journal.replace(' ', '_')}_{article.year}_{index + 1}"


LICENCES_BY_URL = {url: short for _, url, short, _ in LICENCES.values()}


def oa_row(relpath: str, article: ArticleSpec, licence: str) -> dict:
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
