"""`evaluate` stage: held-out metrics with bootstrap intervals, ROC plots, galleries, model cards.

One Prefect task per model; the work is in tasks/evaluate/stage.py. Outputs in
`evaluate.output_dir`: metrics.json (DVC metrics: headline figures per model),
metrics_detail.json (per-label AUCs, retrieval intervals), roc/roc_<model>.csv (DVC plots),
plots/*.png, galleries/<model>/*.png, model_cards/<model>.md, and lineage.json (uncached:
code version and stage chain of each model, from dvc.lock).
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.evaluate import stage
from tasks.schema import resolve_training_preset

EVALUATE = ShardedStage(name="evaluate", unit="models", plan=stage.plan, work=stage.evaluate_model,
                        merge=stage.merge)


@flow(name="evaluate")
def evaluate_flow(params: dict) -> dict:
    cfg = {**params["evaluate"],
           # what evaluate takes from other sections, passed explicitly (declared in dvc.yaml)
           "train_conceptclip": resolve_training_preset(params["train_conceptclip"]),
           "train_fvlm": resolve_training_preset(params["train_fvlm"]),
           "report_label_rules": params["split_reports"]["labels"]}
    return run_sharded(EVALUATE, cfg, params["evaluate"]["output_dir"])


if __name__ == "__main__":
    run_stage_cli(evaluate_flow)
