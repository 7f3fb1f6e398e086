"""`figures` stage: article shards -> image-caption WebDataset shards, figures.parquet, rejected.parquet.

One Prefect task per slice of an ingest shard (`figures.articles_per_task` articles) writes
one output shard `figures-NNNNNN.tar`; the flow then merges the part tables, flags
near-duplicate images across articles and draws a contact sheet.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.summary import StageSummary
from tasks.common.tables import concat_parts, write_rejected, write_rows, write_table
from tasks.figures.article import STAGE, Settings, process_article
from tasks.figures.contact_sheet import draw_contact_sheet, pick_evenly
from tasks.figures.images import near_duplicates
from tasks.figures.shards import read_articles, read_samples, shard_name, write_shard

SUBCAPTION = pa.struct([("panel", pa.string()), ("text", pa.string())])
FIGURES_SCHEMA = pa.schema([
    ("key", pa.string()), ("pmcid", pa.string()), ("figure_id", pa.string()), ("label", pa.string()),
    ("caption", pa.string()), ("caption_title", pa.string()), ("caption_shared", pa.string()),
    ("subcaptions", pa.list_(SUBCAPTION)), ("group", pa.string()), ("source", pa.string()),
    ("page", pa.int32()), ("bbox", pa.list_(pa.float64())), ("pdf_caption_overlap", pa.float64()),
    ("licence", pa.string()), ("licence_url", pa.string()), ("commercial_use_ok", pa.bool_()),
    ("article_shard", pa.string()), ("package_sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string()), ("phash", pa.string()),
    ("source_file", pa.string()), ("source_sha256", pa.string()), ("source_width", pa.int32()),
    ("source_height", pa.int32()), ("source_frames", pa.int32()),
    ("shard", pa.string()), ("near_duplicate_of", pa.string()), ("stage", pa.string()),
])
ARTICLE_COLUMNS = ["pmcid", "shard", "licence", "licence_url", "commercial_use_ok", "package_sha256", "nxml"]


@task(name="figures-shard")
def figures_shard(index: int, article_shard: str, metas: list[dict], figures: dict, out_dir: str):
    """Process a slice of one ingest shard into one output shard; returns (part, rejected, counts)."""
    settings = Settings.from_params(figures)
    name = shard_name(index)
    by_pmcid = {m["pmcid"]: m for m in metas}
    samples, rows, rejected, counts, seen = [], [], [], {}, set()
    for pmcid, members in read_articles(article_shard, by_pmcid):
        seen.add(pmcid)
        try:
            result = process_article(pmcid, members, by_pmcid[pmcid], settings)
        except Exception as error:  # noqa: BLE001 - one bad article never stops the stage
            rejected.append({"item": pmcid, "source": article_shard, "reason": "processing_error",
                             "detail": f"{type(error).__name__}: {error}", "stage": STAGE})
            continue
        samples.extend(result.samples)
        rejected.extend(result.rejected)
        for key, value in result.counts.items():
            counts[key] = counts.get(key, 0) + value
        for key, _, meta in result.samples:
            rows.append({**meta, "shard": name, "stage": STAGE})
    for pmcid in sorted(set(by_pmcid) - seen):
        rejected.append({"item": pmcid, "source": article_shard, "reason": "missing_from_shard",
                         "detail": "articles.parquet lists the article but its shard holds no members",
                         "stage": STAGE})
    write_shard(Path(out_dir) / "shards" / name, samples)
    part = Path(out_dir) / "_parts" / f"figures-{index:06d}.parquet"
    write_rows(rows, FIGURES_SCHEMA, part, sort_by=("key",))
    counts["articles"] = len(by_pmcid)
    return str(part), rejected, counts


def plan(figures: dict) -> list[tuple[str, list[dict]]]:
    """(ingest shard path, article rows) per task, in shard and PMCID order."""
    table = pq.read_table(figures["articles"])
    columns = [c for c in ARTICLE_COLUMNS if c in table.column_names]
    rows = sorted(table.select(columns).to_pylist(), key=lambda r: (r["shard"], r["pmcid"]))
    shards_dir = Path(figures["shards_dir"])
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    work = []
    for shard in sorted(by_shard):
        for chunk in plan_shards(by_shard[shard], int(figures["articles_per_task"])):
            work.append((str(shards_dir / shard), chunk))
    return work


def flag_near_duplicates(path: Path, max_distance: int) -> int:
    table = pq.read_table(path)
    if table.num_rows == 0 or max_distance < 0:
        return 0
    items = list(zip(table["key"].to_pylist(), table["pmcid"].to_pylist(), table["phash"].to_pylist()))
    dups = near_duplicates(items, int(max_distance))
    column = pa.array([dups.get(k) for k, _, _ in items], pa.string())
    index = table.schema.get_field_index("near_duplicate_of")
    write_table(table.set_column(index, "near_duplicate_of", column), path)
    return len(dups)


def contact_sheet(out_dir: Path, n: int, thumb: int) -> int:
    table = pq.read_table(out_dir / "figures.parquet", columns=["key", "label", "caption", "shard", "source"])
    picked = pick_evenly(table.to_pylist(), n)
    wanted: dict[str, set[str]] = {}
    for row in picked:
        wanted.setdefault(row["shard"], set()).add(row["key"])
    jpegs = {}
    for shard, keys in sorted(wanted.items()):
        for key, jpeg, _ in read_samples(out_dir / "shards" / shard, keys):
            jpegs[key] = jpeg
    draw_contact_sheet([(r, jpegs[r["key"]]) for r in picked if r["key"] in jpegs], out_dir / "contact_sheet.png",
                       thumb)
    return len(picked)


@flow(name="figures")
def figures_flow(params: dict) -> dict:
    figures = params["figures"]
    out_dir = Path(figures["output_dir"])
    for stale in ("shards", "_parts"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    summary = StageSummary(STAGE, unit="figures")
    work = plan(figures)
    n_articles = sum(len(chunk) for _, chunk in work)
    print(f"[{STAGE}] {n_articles} articles from {figures['articles']} in {len(work)} tasks", flush=True)
    results = gather(
        [figures_shard.submit(i, shard, chunk, figures, str(out_dir)) for i, (shard, chunk) in enumerate(work)],
        summary,
    )
    parts = [part for part, _, _ in results]
    rejected = [r for _, rows, _ in results for r in rows]
    counts: dict[str, int] = {}
    for _, _, shard_counts in results:
        for key, value in shard_counts.items():
            counts[key] = counts.get(key, 0) + value
    figures_path = out_dir / "figures.parquet"
    summary.items_out = concat_parts(parts, FIGURES_SCHEMA, figures_path, sort_by=("key",))
    shutil.rmtree(out_dir / "_parts", ignore_errors=True)
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.add_rejections(r["reason"] for r in rejected)
    summary.items_in = summary.items_out + summary.rejected
    counts["near_duplicates"] = flag_near_duplicates(figures_path, int(figures["near_duplicate_distance"]))
    sheet = figures.get("contact_sheet") or {}
    counts["contact_sheet_figures"] = contact_sheet(out_dir, int(sheet.get("n", 36)), int(sheet.get("thumb", 192)))
    _check_accounting(figures_path, rejected, work)
    by_source = pc.value_counts(pq.read_table(figures_path, columns=["source"])["source"]).to_pylist()
    counts.update({f"figures_from_{v['values']}": v["counts"] for v in by_source})
    counts["shards"] = len(parts)
    summary.extra.update(sorted(counts.items()))
    summary.write(out_dir)
    print(summary.report(), flush=True)
    return summary.as_dict()


def _check_accounting(figures_path: Path, rejected: list[dict], work) -> None:
    """Every article ends with a figure row or a rejected row: nothing is lost silently."""
    with_rows = set(pq.read_table(figures_path, columns=["pmcid"])["pmcid"].to_pylist())
    with_rejections = {r["item"].split("/", 1)[0] for r in rejected}
    lost = sorted({m["pmcid"] for _, chunk in work for m in chunk} - with_rows - with_rejections)
    if lost:
        raise RuntimeError(f"figures lost articles without a reason: {lost[:5]} ({len(lost)} in all)")


if __name__ == "__main__":
    run_stage_cli(figures_flow)
