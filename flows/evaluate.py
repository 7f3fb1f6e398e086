"""`evaluate` stage: the headline figures of the models in `evaluate.models`.

Each model is scored by its own stage first (`evaluate_conceptclip`, `evaluate_fvlm`: see
those flows), into `<evaluate.output_dir>/<model>/`. This one reads their
metrics_detail.json and writes, in `evaluate.output_dir`: metrics.json (DVC metrics:
headline figures per model), metrics_detail.json (every model's detail together) and
lineage.json (uncached: code version and stage chain of each model, from dvc.lock).
A model listed whose stage has not run is an error that names the stage.

    python -m flows.evaluate [--params FILE] [-S section.key=value ...]
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows.evaluate_runner import run_evaluate_cli
from tasks.evaluate import stage

EVALUATE = ShardedStage(name="evaluate", unit="models", plan=stage.plan, work=stage.read_model, merge=stage.merge)


@flow(name="evaluate")
def evaluate_flow(params: dict, output_dir: str) -> dict:
    # the model folders stay where their stages put them (the folder being built is aside)
    cfg = {**params["evaluate"], "models_dir": params["evaluate"]["output_dir"]}
    return run_sharded(EVALUATE, cfg, output_dir)


if __name__ == "__main__":
    run_evaluate_cli(evaluate_flow, None)
