"""The evaluate stages as plain functions for the stage runner.

`evaluate_conceptclip` and `evaluate_fvlm` each score one trained model in its own folder,
`<evaluate.output_dir>/<model>/`: test metrics (choices tuned on validation) with bootstrap intervals over the split
unit (articles, patients), ROC curve and plot, gallery, model card and metrics_detail.json.
So the CT branch runs without ConceptCLIP and the reverse. `evaluate` (the headline) reads
the metrics_detail.json of each model in `evaluate.models` and writes metrics.json (headline
figures, DVC metrics), metrics_detail.json (all models together) and lineage.json (uncached:
code version and stage chain of each model, from dvc.lock and git; nothing cached reads it).

cfg is the evaluate section plus, passed by the flow, the model stage's training section
with its preset applied (`train_conceptclip` or `train_fvlm`) and `model`; the headline's
cfg has `models_dir`, the folder holding the model folders; the runner adds the folder
the run started in (`run_root`).
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks.common.sharding import Merged, Plan, ShardResult
from tasks.evaluate.headline import headline
from tasks.lineage.provenance import Lineage, git_commit

STAGE = "evaluate"
LINEAGE_RECORD = "lineage.json"  # uncached (dvc.yaml): the one output that may read dvc.lock and git
DETAIL = "metrics_detail.json"
MODELS = ("conceptclip", "fvlm")  # each has its stage, evaluate_<model>, and folder <output_dir>/<model>
# a model's card sits in <output_dir>/<model>/model_cards/: the headline's lineage record is two up
CARD_LINEAGE = f"../../{LINEAGE_RECORD}"


def _lineage(artifact: str, root: str) -> dict:
    try:
        return Lineage(root).report(artifact)
    except (LookupError, FileNotFoundError, KeyError, ValueError):
        # Run outside `dvc repro` before the training stage is locked, or on weights outside
        # the repository (ValueError: not under its root): no chain to show.
        return {"artifact": artifact, "code": git_commit(Path(root), None), "stages": []}


def training_summary(train_dir: Path) -> dict:
    out = {}
    for name in ("config.json", "metrics.json"):
        path = train_dir / name
        if path.is_file():
            out[name.removesuffix(".json")] = json.loads(path.read_text())
    return out


def opening(cfg: dict, stage: str, out_dir: str) -> tuple[dict, Path, Path]:
    """(the training section, preset applied as training saw it; this stage's output
    folder; the model's folder), with torch seeded for repeatable sampling."""
    import torch

    torch.manual_seed(0)
    section = cfg[stage]
    return section, Path(out_dir), Path(section["output_dir"])


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


# -- one model's stage: evaluate_conceptclip, evaluate_fvlm ---------------------------------------
def plan_model(cfg: dict, out: Path) -> Plan:
    model = cfg["model"]
    if model not in MODELS:
        raise ValueError(f"no evaluation defined for model {model!r}; known: {list(MODELS)}")
    return Plan(items=[model], shards=[model])


def merge_model(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    detail = {name: value for result in results for name, value in result.value.items()}
    (model, metrics), = detail.items()
    _write_json(out / DETAIL, metrics)
    figures = headline({model: metrics})[model]
    print(f"[{STAGE}_{model}] zero-shot macro AUC {figures['macro_auc']} "
          f"(95% CI {figures['macro_auc_ci_low']}-{figures['macro_auc_ci_high']})", flush=True)
    return Merged(items_out=len(detail), accounted=set(detail))


# -- the headline stage: evaluate -----------------------------------------------------------------
def plan(cfg: dict, out: Path) -> Plan:
    return Plan(items=list(cfg["models"]), shards=list(cfg["models"]))


def read_model(model: str, cfg: dict, out: str) -> ShardResult:
    """The metrics the model's own stage wrote, or an error saying which stage to run."""
    path = Path(cfg["models_dir"]) / model / DETAIL
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.models lists {model!r} but {path} does not exist: run "
                                f"`python -m flows.evaluate_{model}` (DVC stage evaluate_{model}) first, "
                                f"or drop {model!r} from evaluate.models")
    return ShardResult(value={model: json.loads(path.read_text(encoding="utf-8"))})


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    detail = {name: value for result in results for name, value in result.value.items()}
    figures = headline(detail)
    _write_json(out / "metrics.json", figures)
    _write_json(out / DETAIL, detail)
    # after the cached outputs, and never read by them
    _write_json(out / LINEAGE_RECORD, {name: _lineage(m["artifact"], cfg["run_root"])
                                       for name, m in sorted(detail.items())})
    for name, m in figures.items():
        print(f"[{STAGE}] {name}: zero-shot macro AUC {m['macro_auc']} "
              f"(95% CI {m['macro_auc_ci_low']}-{m['macro_auc_ci_high']})", flush=True)
    return Merged(items_out=len(detail), accounted=set(detail))
