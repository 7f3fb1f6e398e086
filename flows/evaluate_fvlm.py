"""`evaluate_fvlm` stage: fVLM on held-out CT studies, without ConceptCLIP.

Zero-shot AUC per (anatomy, finding) and per CT-RATE label through its anatomy
(`evaluate.ct_rate_label_anatomies`, truth from `evaluate.label_source`), intervals by
bootstrap over patients. Outputs in `<evaluate.output_dir>/fvlm/`: metrics_detail.json,
roc/roc_fvlm.csv (DVC plots), plots/*.png, galleries/*.png, model_cards/fvlm.md.

    python -m flows.evaluate_fvlm [--params FILE] [-S section.key=value ...]
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows.evaluate_runner import run_evaluate_cli
from tasks.evaluate import fvlm_stage, stage
from tasks.schema import resolve_training_preset

MODEL = "fvlm"
EVALUATE_FVLM = ShardedStage(name="evaluate_fvlm", unit="models", plan=stage.plan_model,
                             work=fvlm_stage.work, merge=stage.merge_model)


@flow(name="evaluate_fvlm")
def evaluate_fvlm_flow(params: dict, output_dir: str) -> dict:
    # what it takes from another section, passed explicitly (declared in dvc.yaml)
    cfg = {**params["evaluate"], "model": MODEL, "train_fvlm": resolve_training_preset(params["train_fvlm"])}
    return run_sharded(EVALUATE_FVLM, cfg, output_dir)


if __name__ == "__main__":
    run_evaluate_cli(evaluate_fvlm_flow, MODEL)
