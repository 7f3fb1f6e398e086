"""`ingest` stage: PMC OA packages -> article shards, articles.parquet, rejected.parquet.

The work is in tasks/ingest/stage.py (plan, inspect_chunks, merge); the runner owns the rest.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.incremental.store import fold_run_record
from tasks.common.locations import UNREADABLE_SOURCE
from tasks.ingest import stage

# unreadable_source: a package that cannot be opened (OSError); all of them: a wrong or unshared source
INGEST = ShardedStage(name="ingest", unit="packages", plan=stage.plan, work=stage.inspect_chunks, merge=stage.merge,
                      cached=stage.chunks_cached, open_failures=(UNREADABLE_SOURCE,), source_params=("source", "base_url"))


@flow(name="ingest")
def ingest_flow(params: dict) -> dict:
    summary = run_sharded(INGEST, params["ingest"], params["ingest"]["output_dir"])
    fold_run_record(params["ingest"]["output_dir"])  # what was computed, what reused: timing.json
    return summary


if __name__ == "__main__":
    run_stage_cli(ingest_flow)
