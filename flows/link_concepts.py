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
from tasks.common.tables import concat_parts, write_rejected, write_rows
from tasks.linking import captions

STAGE = "link_concepts"
FIGURE_COLUMNS = ("key", "pmcid", "figure_id", "caption", "subcaptions")


def read_figures(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"link_concepts.figures: {path} not found (run the figures stage first)")
    schema = pq.read_schema(path)
    if "key" not in schema.names or "caption" not in schema.names:
        raise ValueError(f"{path} lacks the columns key and caption")
    columns = [c for c in FIGURE_COLUMNS if c in schema.names]
    return pq.read_table(path, columns=columns).to_pylist()


@task(name="link-concepts-shard")
def link_shard(p: dict, shard_no: int, rows: list[dict], parts_dir: str) -> dict:
    from tasks.linking.linker import get_linker

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
    rows = read_figures(p["figures"])
    summary.items_in = len(rows)
    parts_dir = out_dir / "_parts"
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True)
    shards = plan_shards(rows, int(p.get("figures_per_task", 2000)))
    futures = [link_shard.submit(p, i, shard, str(parts_dir)) for i, shard in enumerate(shards)]
    results = gather(futures, summary)
    rejected = [r for result in results for r in result["rejected"]]
    n_mentions = concat_parts([r["mentions_part"] for r in results], captions.MENTIONS_SCHEMA,
                              out_dir / "mentions.parquet", sort_by=("key", "text_field", "start", "end", "cui"))
    n_figures = concat_parts([r["concepts_part"] for r in results], captions.CAPTION_CONCEPTS_SCHEMA,
                             out_dir / "caption_concepts.parquet", sort_by=("key",))
    shutil.rmtree(parts_dir)
    mention_rows = pq.read_table(out_dir / "mentions.parquet",
                                 columns=["key", "cui", "preferred_name", "semantic_group", "negated",
                                          "uncertain"]).to_pylist()
    concept_rows = pq.read_table(out_dir / "caption_concepts.parquet", columns=["cuis"]).to_pylist()
    frequency = captions.concept_frequency(mention_rows, concept_rows)
    write_rows(frequency, captions.FREQUENCY_SCHEMA, out_dir / "concept_frequency.parquet", sort_by=("cui",))
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.add_rejections(r["reason"] for r in rejected)
    summary.items_out = n_figures
    summary.extra.update({
        "mentions": n_mentions, "concepts": len(frequency),
        "negated_mentions": sum(r["negated"] for r in results),
        "uncertain_mentions": sum(r["uncertain"] for r in results),
        "abbreviation_mentions": sum(r["abbreviation_mentions"] for r in results),
        "figures_without_concepts": sum(1 for r in concept_rows if not r["cuis"]),
    })
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(link_concepts_flow)
