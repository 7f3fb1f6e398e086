"""`ingest` stage: PMC OA packages -> article shards, articles.parquet, rejected.parquet.

The work is in tasks/ingest/stage.py (plan, inspect_chunk, merge); the runner owns the rest.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.ingest import stage

INGEST = ShardedStage(name="ingest", unit="packages", plan=stage.plan, work=stage.inspect_chunk, merge=stage.merge)


@flow(name="ingest")
def ingest_flow(params: dict) -> dict:
    return run_sharded(INGEST, params["ingest"], params["ingest"]["output_dir"])


if __name__ == "__main__":
    run_stage_cli(ingest_flow)
