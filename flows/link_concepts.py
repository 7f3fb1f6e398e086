"""`link_concepts` stage: UMLS concepts for every figure caption and subcaption.

Reads `link_concepts.figures` (figures.parquet: key, pmcid, figure_id, caption,
subcaptions) and the `umls_index` output; fans shards of figures out over Dask, each
worker process opening one QuickUMLS matcher (tasks.linking.linker.get_linker). Writes
mentions.parquet, caption_concepts.parquet, concept_frequency.parquet, rejected.parquet.
The work is in tasks/linking/stage.py (plan, link_shard, merge); the runner owns the rest.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.incremental.store import fold_run_record
from tasks.linking import stage

LINK_CONCEPTS = ShardedStage(name="link_concepts", unit="figures", plan=stage.plan, work=stage.link_shard,
                             merge=stage.merge)


@flow(name="link_concepts")
def link_concepts_flow(params: dict) -> dict:
    summary = run_sharded(LINK_CONCEPTS, params["link_concepts"], params["link_concepts"]["output_dir"])
    fold_run_record(params["link_concepts"]["output_dir"])  # what was computed, what reused: timing.json
    return summary


if __name__ == "__main__":
    run_stage_cli(link_concepts_flow)
