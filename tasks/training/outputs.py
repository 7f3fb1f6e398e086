"""What both training stages write: weights, config, tokenizer, curve, metrics, lineage."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch


def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return Path(path)


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model


def write_json(data, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def write_curve(rows: list[dict], path: str | Path) -> Path:
    cols = ["step", "epoch", "lr", "train_loss", "validation_loss"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        w = csv.DictWriter(handle, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()})
    return Path(path)


def curve_metrics(curve: list[dict]) -> dict:
    held = [r["validation_loss"] for r in curve if math.isfinite(r.get("validation_loss", float("nan")))]
    out = {"steps": curve[-1]["step"] if curve else 0,
           "train_loss_start": round(curve[0]["train_loss"], 6) if curve else None,
           "train_loss_end": round(curve[-1]["train_loss"], 6) if curve else None}
    if held:
        out.update(validation_loss_start=round(held[0], 6), validation_loss_end=round(held[-1], 6),
                   validation_loss_min=round(min(held), 6),
                   validation_loss_ratio=round(held[-1] / held[0], 6) if held[0] else None)
    return out


def write_model(out: Path, model: torch.nn.Module, config: dict, tokenizer) -> None:
    """model.safetensors, config.json (model config plus what inference needs) and tokenizer/."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    write_json(config, out / "config.json")
    tok_dir = out / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tokenizer.save(tok_dir)


def load_trained(output_dir: str | Path):
    """(model in eval mode, tokenizer, config) from a training stage's output folder."""
    from models import build_model
    from models.text_encoder import TextTokenizer

    out = Path(output_dir)
    config = json.loads((out / "config.json").read_text())
    model = load_weights(build_model(config["model"]), out / "model.safetensors").eval()
    tok = TextTokenizer.load(out / "tokenizer", int(config["model"]["text"]["context_length"]))
    return model, tok, config


def write_run_record(out: Path, repo: Path, stage: str, params: dict, inputs: list, counts: dict, items_in_key: str,
                     records_out: int, rejected: list[dict], result, summary) -> None:
    """rejected.parquet, lineage.json, summary.json (DVC metrics) and timing.json of a run."""
    from collections import Counter

    from tasks.common.tables import write_rejected
    from tasks.training.lineage import build_lineage

    write_rejected([dict(r, stage=stage) for r in rejected], out / "rejected.parquet")
    # where this run's own outputs went is not part of what made them
    own = {k: v for k, v in params[stage].items() if k not in ("output_dir", "checkpoint_dir")}
    write_json(build_lineage(repo, stage, inputs, {stage: own}, counts), out / "lineage.json")
    summary.items_in = counts[items_in_key]
    summary.items_out = records_out
    summary.add_rejections(Counter(r["reason"] for r in rejected).elements())
    summary.merge_counts({k: v for k, v in counts.items() if k != items_in_key})
    summary.merge_counts({"steps": result.steps, "resumed_from_step": result.resumed_from})
    summary.write(out)
    timing = dict(summary.timing(), train_seconds=round(result.seconds, 2))
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
