"""A small PMC-style corpus for incremental-update tests: the sample's own articles (JATS, PDF,
JPEG figures) under chosen PMCIDs and paths, listed in an OA file list with Last Updated."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

OA_COLUMNS = ["File", "Article Citation", "Accession ID", "Last Updated", "PMID", "License"]


@dataclass(frozen=True)
class Package:
    pmcid: str
    index: int                 # the sample article it is built from
    updated: str = "2024-01-01 10:00:00"
    revised: bool = False      # a later version: the title and first caption changed
    version: int = 1

    @property
    def relpath(self) -> str:
        digest = hashlib.sha256(self.pmcid.encode()).hexdigest()
        suffix = "" if self.version == 1 else f".v{self.version}"
        return f"oa_package/{digest[:2]}/{digest[2:4]}/{self.pmcid}{suffix}.tar.gz"


def build(params: dict, package: Package):
    """(package bytes, the article as built: its figures are the truth)."""
    from tasks.sample.articles import build_article, folder_name, package_members
    from tasks.sample.packages import tar_gz

    article, images, sizes = build_article(params, package.index)
    article = replace(article, pmcid=package.pmcid)
    if package.revised:
        first = replace(article.figures[0], caption="Revised. " + article.figures[0].caption)
        article = replace(article, title=article.title + " (revised)", figures=[first, *article.figures[1:]])
    members = package_members(article, images, sizes, folder_name(article, package.index), with_thumbnails=False)
    return tar_gz(members), article


def write(folder: Path, params: dict, packages: list[Package], rows: list[dict] | None = None) -> dict:
    """Write the packages under `folder` and the OA list `folder/oa_file_list.csv` naming them
    and `rows` (earlier ones); returns {relpath: article} and appends to `rows`."""
    rows = [] if rows is None else rows
    articles = {}
    for package in packages:
        data, article = build(params, package)
        target = folder / package.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        articles[package.relpath] = article
        rows.append({"File": package.relpath, "Article Citation": "J Synth Radiol. 2024; 1:1",
                     "Accession ID": package.pmcid, "Last Updated": package.updated, "PMID": article.pmid,
                     "License": "CC BY"})
    with (folder / "oa_file_list.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["File"]))
    return articles
