"""`evaluate_fvlm` stage: fVLM on held-out CT studies, without ConceptCLIP.

Zero-shot AUC per (anatomy, finding) and per CT-RATE label through its anatomy
(`evaluate.ct_rate_label_anatomies`, truth from `evaluate.label_source`), intervals by
bootstrap over patients. Outputs in `<evaluate.output_dir>/fvlm/`: metrics_detail.json,
roc/roc_fvlm.csv (DVC plots), plots/*.png, galleries/*.png, model_cards/fvlm.md.

    python -m flows.evaluate_fvlm [--params FILE] [-S section.key=value ...]
"""
from __future__ import annotations

from flows.evaluate_runner import model_flow, run_evaluate_cli
from tasks.evaluate import fvlm_stage

MODEL = "fvlm"
evaluate_fvlm_flow = model_flow(MODEL, fvlm_stage.work, "train_fvlm")

if __name__ == "__main__":
    run_evaluate_cli(evaluate_fvlm_flow, MODEL)
