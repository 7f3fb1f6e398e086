"""The figures stage as plain functions for the stage runner (flows/_runner.py).

plan: one task per slice of an ingest shard (`articles_per_task` articles).
figures_shard (on a worker): each article's figures into one output shard `figures-NNNNNN.tar`.
merge: concatenate the part tables, flag near-duplicate images across articles, draw a
contact sheet.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.common.sharding import Merged, Plan, ShardResult, add_counts, chunks
from tasks.common.tables import concat_parts, write_rows, write_table
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


def plan(cfg: dict, out: Path) -> Plan:
    """(index, ingest shard path, article rows) per task, in shard and PMCID order."""
    table = pq.read_table(cfg["articles"])
    columns = [c for c in ARTICLE_COLUMNS if c in table.column_names]
    rows = sorted(table.select(columns).to_pylist(), key=lambda r: (r["shard"], r["pmcid"]))
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    work = []
    for shard in sorted(by_shard):
        for chunk in chunks(by_shard[shard], cfg["articles_per_task"]):
            work.append((len(work), str(Path(cfg["shards_dir"]) / shard), chunk))
    return Plan(items=[r["pmcid"] for r in rows], shards=work)


def figures_shard(shard: tuple[int, str, list[dict]], cfg: dict, out: str) -> ShardResult:
    """A slice of one ingest shard into one output shard; value: the part table's path."""
    index, article_shard, metas = shard
    settings = Settings.from_params(cfg)
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
        add_counts(counts, result.counts)
        for key, _, meta in result.samples:
            rows.append({**meta, "shard": name, "stage": STAGE})
    for pmcid in sorted(set(by_pmcid) - seen):
        rejected.append({"item": pmcid, "source": article_shard, "reason": "missing_from_shard",
                         "detail": "articles.parquet lists the article but its shard holds no members",
                         "stage": STAGE})
    write_shard(Path(out) / "shards" / name, samples)
    part = Path(out) / "_parts" / f"figures-{index:06d}.parquet"
    write_rows(rows, FIGURES_SCHEMA, part, sort_by=("key",))
    return ShardResult(value=str(part), rejected=rejected, counts=counts)


def flag_near_duplicates(path: Path, max_distance: int) -> int:
    table = pq.read_table(path)
    if table.num_rows == 0 or max_distance < 0:
        return 0
    items = list(zip(table["key"].to_pylist(), table["pmcid"].to_pylist(), table["phash"].to_pylist()))
    dups = near_duplicates(items, max_distance)
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


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    figures_path = out / "figures.parquet"
    items_out = concat_parts([r.value for r in results], FIGURES_SCHEMA, figures_path, sort_by=("key",))
    counts = {"near_duplicates": flag_near_duplicates(figures_path, cfg["near_duplicate_distance"]),
              "contact_sheet_figures": contact_sheet(out, cfg["contact_sheet"]["n"], cfg["contact_sheet"]["thumb"]),
              "shards": len(results)}
    table = pq.read_table(figures_path, columns=["pmcid", "source"])
    counts.update({f"figures_from_{v['values']}": v["counts"] for v in pc.value_counts(table["source"]).to_pylist()})
    counts["articles"] = len(plan.items)
    return Merged(items_out=items_out, accounted=set(table["pmcid"].to_pylist()), counts=counts)


def article_of(rejected_row: dict) -> str:
    """Figures reject "PMC1/F2"-style items; the article is what entered the stage."""
    return rejected_row["item"].split("/", 1)[0]
