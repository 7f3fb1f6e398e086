"""`sample` stage: generate the embedded default inputs from `sample.seed`.

The work is in tasks/sample/stage.py (plan, generate, merge over the generator parts);
the runner owns the rest.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.sample import stage

SAMPLE = ShardedStage(name="sample", unit="shards", out_unit="items", plan=stage.plan, work=stage.generate,
                      merge=stage.merge)


@flow(name="sample")
def sample_flow(params: dict) -> dict:
    return run_sharded(SAMPLE, params["sample"], params["sample"]["output_dir"])


if __name__ == "__main__":
    run_stage_cli(sample_flow)
