"""`figures` stage: article shards -> image-caption WebDataset shards, figures.parquet,
rejected.parquet, contact_sheet.png.

The work is in tasks/figures/stage.py (plan, figures_shard, merge); the runner owns the rest.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.figures import stage
from tasks.incremental.store import fold_run_record

FIGURES = ShardedStage(name="figures", unit="articles", out_unit="figures", plan=stage.plan,
                       work=stage.figures_shard, merge=stage.merge, item_of=stage.article_of)


@flow(name="figures")
def figures_flow(params: dict) -> dict:
    summary = run_sharded(FIGURES, params["figures"], params["figures"]["output_dir"])
    fold_run_record(params["figures"]["output_dir"])  # what was computed, what reused: timing.json
    return summary


if __name__ == "__main__":
    run_stage_cli(figures_flow)
