"""`evaluate_conceptclip` stage: ConceptCLIP on held-out figures, without fVLM.

Zero-shot concept AUC, image-text retrieval R@K and PC-Align annotation AUC, intervals by
bootstrap over articles. Outputs in `<evaluate.output_dir>/conceptclip/`: metrics_detail.json,
roc/roc_conceptclip.csv (DVC plots), plots/*.png, galleries/*.png, model_cards/conceptclip.md.

    python -m flows.evaluate_conceptclip [--params FILE] [-S section.key=value ...]
"""
from __future__ import annotations

from flows.evaluate_runner import model_flow, run_evaluate_cli
from tasks.evaluate import conceptclip_stage

MODEL = "conceptclip"
evaluate_conceptclip_flow = model_flow(MODEL, conceptclip_stage.work, "train_conceptclip")

if __name__ == "__main__":
    run_evaluate_cli(evaluate_conceptclip_flow, MODEL)
