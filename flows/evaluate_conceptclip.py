"""`evaluate_conceptclip` stage: ConceptCLIP on held-out figures, without fVLM.

Zero-shot concept AUC, image-text retrieval R@K and PC-Align annotation AUC, intervals by
bootstrap over articles. Outputs in `<evaluate.output_dir>/conceptclip/`: metrics_detail.json,
roc/roc_conceptclip.csv (DVC plots), plots/*.png, galleries/*.png, model_cards/conceptclip.md.

    python -m flows.evaluate_conceptclip [--params FILE] [-S section.key=value ...]
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows.evaluate_runner import run_evaluate_cli
from tasks.evaluate import conceptclip_stage, stage
from tasks.schema import resolve_training_preset

MODEL = "conceptclip"
EVALUATE_CONCEPTCLIP = ShardedStage(name="evaluate_conceptclip", unit="models", plan=stage.plan_model,
                                    work=conceptclip_stage.work, merge=stage.merge_model)


@flow(name="evaluate_conceptclip")
def evaluate_conceptclip_flow(params: dict, output_dir: str) -> dict:
    # what it takes from another section, passed explicitly (declared in dvc.yaml)
    cfg = {**params["evaluate"], "model": MODEL,
           "train_conceptclip": resolve_training_preset(params["train_conceptclip"])}
    return run_sharded(EVALUATE_CONCEPTCLIP, cfg, output_dir)


if __name__ == "__main__":
    run_evaluate_cli(evaluate_conceptclip_flow, MODEL)
