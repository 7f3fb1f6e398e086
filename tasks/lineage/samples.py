"""Per-sample provenance behind an artifact: which articles, figures and studies made it."""
from __future__ import annotations

import io

import dvc.api
import pandas as pd

from tasks.lineage.provenance import Lineage

FIGURE_COLUMNS = ["key", "pmcid", "figure_id", "label", "source", "sha256", "licence"]
ARTICLE_COLUMNS = ["pmcid", "pmid", "doi", "licence", "commercial_use_ok", "package_sha256", "version",
                   "version_date", "source"]
STUDY_COLUMNS = ["patient_id", "study_id", "series_id", "source_sha256", "source_hash", "shape", "spacing"]


def _read_parquet(lineage: Lineage, path: str) -> pd.DataFrame | None:
    try:
        if lineage.rev is None:
            return pd.read_parquet(lineage.root / path)
        with dvc.api.open(path, repo=str(lineage.root), rev=lineage.rev, mode="rb") as handle:
            return pd.read_parquet(io.BytesIO(handle.read()))
    except (FileNotFoundError, OSError, ValueError):
        return None


def _out(lineage: Lineage, stage: str, name: str) -> str | None:
    for out in lineage.lock.get(stage, {}).get("outs", []):
        if out["path"].endswith(name):
            return out["path"]
    return None


def _keep(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[[c for c in columns if c in frame.columns]]


def _training_samples(lineage: Lineage, stage: str) -> pd.DataFrame | None:
    """The training stage's split table (which samples it used, train or held out)."""
    path = _out(lineage, stage, "split.parquet")
    table = _read_parquet(lineage, path) if path else None
    if table is None:
        return None
    if "key" in table.columns:
        return table[["key", "split"]].rename(columns={"key": "sample_id"})
    if "series_id" in table.columns:
        return table[["series_id", "split"]].rename(columns={"series_id": "sample_id"})
    return None


def sample_table(lineage: Lineage, artifact: str) -> pd.DataFrame:
    chain = lineage.chain(artifact)
    producer = chain[-1]
    frames = []
    if "figures" in chain and (path := _out(lineage, "figures", "figures.parquet")):
        figures = _keep(_read_parquet(lineage, path), FIGURE_COLUMNS).rename(
            columns={"sha256": "image_sha256", "source": "figure_source"})
        if "ingest" in chain and (apath := _out(lineage, "ingest", "articles.parquet")):
            articles = _read_parquet(lineage, apath)
            if "status" in articles.columns:  # ingest keeps superseded and retracted versions as history rows
                articles = articles[articles["status"] == "current"]
            articles = _keep(articles, ARTICLE_COLUMNS).rename(
                columns={"source": "package", "licence": "article_licence"})
            figures = figures.merge(articles, on="pmcid", how="left")
        figures.insert(0, "sample_kind", "figure")
        figures = figures.rename(columns={"key": "sample_id"})
        frames.append(figures)
    if "ct_convert" in chain and (path := _out(lineage, "ct_convert", "studies.parquet")):
        studies = _keep(_read_parquet(lineage, path), STUDY_COLUMNS)
        studies.insert(0, "sample_kind", "ct_series")
        studies.insert(1, "sample_id", studies["series_id"] if "series_id" in studies else studies.index.astype(str))
        frames.append(studies)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["sample_kind", "sample_id"])
    used = _training_samples(lineage, producer)
    if used is not None and "sample_id" in used.columns:
        table = table.merge(used, on="sample_id", how="inner")
    return table.sort_values(["sample_kind", "sample_id"]).reset_index(drop=True)
