"""The link_concepts stage as plain functions for the stage runner (flows/_runner.py).

Items are figures (the keys of figures.parquet). plan: row ranges of `figures_per_task`
figures, so each task reads only its own rows. link_shard (on a worker, one QuickUMLS
matcher per worker process): a shard's captions and subcaptions into part tables.
merge: mentions.parquet, caption_concepts.parquet (one row per linked figure),
concept_frequency.parquet.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tasks.common.locations import recorded
from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import concat_parts, write_rows, write_table
from tasks.linking import captions
from tasks.linking.linker import get_linker

STAGE = captions.STAGE
FIGURE_COLUMNS = ("key", "pmcid", "figure_id", "caption", "subcaptions")


def figure_columns(path: str | Path) -> list[str]:
    """The columns of figures.parquet that linking reads; an error when the table is missing or
    lacks key and caption."""
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


def plan(cfg: dict, out: Path) -> Plan:
    figure_columns(cfg["figures"])  # fail early on a missing or wrong table
    keys = pq.read_table(cfg["figures"], columns=["key"])["key"].to_pylist()
    ranges = [(index, rows[0], rows[-1] + 1) for index, rows in enumerate(chunks(range(len(keys)),
                                                                                 cfg["figures_per_task"]))]
    return Plan(items=keys, shards=ranges)


def link_shard(shard: tuple[int, int, int], cfg: dict, out: str) -> ShardResult:
    """Figures [start, stop) linked; value: (mentions part, caption concepts part)."""
    index, start, stop = shard
    rows = read_figure_rows(cfg["figures"], start, stop)
    linker = get_linker(cfg["index_dir"], cfg)  # cached per worker process
    result = captions.link_figures(rows, linker, source=recorded(cfg["figures"], cfg["run_root"]), max_chars=cfg["max_chars"],
                                   exclude_uncertain=cfg["exclude_uncertain"])
    parts = Path(out) / "_parts"
    mentions_part, concepts_part = parts / f"mentions-{index:06d}.parquet", parts / f"concepts-{index:06d}.parquet"
    write_rows(result["mentions"], captions.MENTIONS_SCHEMA, mentions_part)
    write_rows(result["concepts"], captions.CAPTION_CONCEPTS_SCHEMA, concepts_part)
    mentions = result["mentions"]
    counts = {"negated_mentions": sum(1 for m in mentions if m["negated"]),
              "uncertain_mentions": sum(1 for m in mentions if m["uncertain"]),
              "abbreviation_mentions": sum(1 for m in mentions if m["abbreviation_of"])}
    return ShardResult(value=(str(mentions_part), str(concepts_part)), rejected=result["rejected"], counts=counts)


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    mentions_path, concepts_path = out / "mentions.parquet", out / "caption_concepts.parquet"
    n_mentions = concat_parts([r.value[0] for r in results], captions.MENTIONS_SCHEMA, mentions_path,
                              sort_by=("key", "text_field", "start", "end", "cui"))
    n_figures = concat_parts([r.value[1] for r in results], captions.CAPTION_CONCEPTS_SCHEMA, concepts_path,
                             sort_by=("key",))
    frequency = captions.concept_frequency_table(mentions_path, concepts_path)
    write_table(frequency, out / "concept_frequency.parquet")
    table = pq.read_table(concepts_path, columns=["key", "cuis"])
    counts = {"mentions": n_mentions, "concepts": frequency.num_rows,
              "figures_without_concepts": sum(1 for cuis in table["cuis"].to_pylist() if not cuis)}
    return Merged(items_out=n_figures, accounted=set(table["key"].to_pylist()), counts=counts)
