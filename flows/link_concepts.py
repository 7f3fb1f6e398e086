"""`link_concepts` stage: UMLS concepts for every figure caption and subcaption.

Reads `link_concepts.figures` (figures.parquet: key, pmcid, figure_id, caption,
subcaptions) and the `umls_index` output; fans shards of figures out over Dask, each
worker process opening one QuickUMLS matcher (tasks.linking.linker.get_linker). Writes
mentions.parquet, caption_concepts.parquet, concept_frequency.parquet, rejected.parquet.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.params import section
from tasks.common.summary import StageSummary
from tasks.common.tables import concat_parts, write_rejected, write_rows, write_table
from tasks.linking import captions

STAGE = "link_concepts"
FIGURE_COLUMNS = ("key", "pmcid", "figure_id", "caption", "subcaptions")


def figure_columns(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"link_concepts.figures: {path} not found (run the figures stage first)")
    names = pq.read_schema(path).names
    if "key" not in names or "caption" not in names:
        raise ValueError(f"{path} lacks the columns key and caption")
    return [c for c in FIGURE_COLUMNS if c in names]


def read_figure_rows(path: str | Path, start: int, stop: int) -> list[dict]:
    """Rows [start, stop) of figures.parquet, reading only the row groups that hold them,
    so a task's memory is its shard, not the corpus."""
    columns = figure_columns(path)
    parquet = pq.ParquetFile(path)
    rows, offset = [], 0
    for group in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        if offset < stop and start < offset + n:
            table = parquet.read_row_group(group, columns=columns)
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            rows += table.slice(lo, hi - lo).to_pylist()
        offset += n
    return rows


@task(name="link-concepts-shard")
def link_shard(p: dict, shard_no: int, start: int, stop: int, parts_dir: str) -> dict:
    from tasks.linking.linker import get_linker

    rows = read_figure_rows(p["figures"], start, stop)
    linker = get_linker(p["index_dir"], p)  # cached per worker process
    result = captions.link_figures(rows, linker, source=str(p["figures"]),
                                   max_chars=int(p.get("max_chars", 20000)),
                                   exclude_uncertain=bool(p.get("exclude_uncertain", True)))
    parts = Path(parts_dir)
    mentions_part = parts / f"mentions-{shard_no:06d}.parquet"
    concepts_part = parts / f"concepts-{shard_no:06d}.parquet"
    write_rows(result["mentions"], captions.MENTIONS_SCHEMA, mentions_part)
    write_rows(result["concepts"], captions.CAPTION_CONCEPTS_SCHEMA, concepts_part)
    return {"mentions_part": str(mentions_part), "concepts_part": str(concepts_part),
            "rejected": result["rejected"], "items_out": len(result["concepts"]),
            "mentions": len(result["mentions"]),
            "negated": sum(1 for m in result["mentions"] if m["negated"]),
            "uncertain": sum(1 for m in result["mentions"] if m["uncertain"]),
            "abbreviation_mentions": sum(1 for m in result["mentions"] if m["abbreviation_of"])}


@flow(name=STAGE)
def link_concepts_flow(params: dict) -> dict:
    p = section(params, STAGE)
    out_dir = Path(p["output_dir"])
    summary = StageSummary(STAGE, unit="figures")
    figure_columns(p["figures"])  # fail early on a missing or wrong table
    n_rows = pq.ParquetFile(p["figures"]).metadata.num_rows
    summary.items_in = n_rows
    parts_dir = out_dir / "_parts"
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True)
    # Shards are row ranges: each task reads its own rows.
    shards = plan_shards(range(n_rows), int(p.get("figures_per_task", 2000)))
    futures = [link_shard.submit(p, i, shard[0], shard[-1] + 1, str(parts_dir)) for i, shard in enumerate(shards)]
    results = gather(futures, summary)
    rejected = [r for result in results for r in result["rejected"]]
    n_mentions = concat_parts([r["mentions_part"] for r in results], captions.MENTIONS_SCHEMA,
                              out_dir / "mentions.parquet", sort_by=("key", "text_field", "start", "end", "cui"))
    n_figures = concat_parts([r["concepts_part"] for r in results], captions.CAPTION_CONCEPTS_SCHEMA,
                             out_dir / "caption_concepts.parquet", sort_by=("key",))
    shutil.rmtree(parts_dir)
    frequency = captions.concept_frequency_table(out_dir / "mentions.parquet", out_dir / "caption_concepts.parquet")
    write_table(frequency, out_dir / "concept_frequency.parquet")
    figure_cuis = pq.read_table(out_dir / "caption_concepts.parquet", columns=["cuis"])["cuis"].to_pylist()
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.add_rejections(r["reason"] for r in rejected)
    summary.items_out = n_figures
    summary.extra.update({
        "mentions": n_mentions, "concepts": frequency.num_rows,
        "negated_mentions": sum(r["negated"] for r in results),
        "uncertain_mentions": sum(r["uncertain"] for r in results),
        "abbreviation_mentions": sum(r["abbreviation_mentions"] for r in results),
        "figures_without_concepts": sum(1 for cuis in figure_cuis if not cuis),
    })
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(link_concepts_flow)
