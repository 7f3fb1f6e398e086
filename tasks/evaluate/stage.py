"""The evaluate stage as plain functions for the stage runner: one shard per model.

evaluate_<model>(cfg, out): held-out metrics with bootstrap intervals, ROC curve and plot,
gallery and model card of one trained model. merge: metrics.json (headline figures, DVC
metrics), metrics_detail.json, and lineage.json (uncached: code version and stage chain of
each model, from dvc.lock and git; nothing cached reads it).

cfg is the evaluate section plus, passed by the flow, each training section with its
preset applied (`train_conceptclip`, `train_fvlm`), the reports' label rules
(`report_label_rules`); the runner adds the folder the run started in (`run_root`).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tasks.common.locations import recorded
from tasks.common.sharding import Merged, Plan, ShardResult
from tasks.evaluate import cards, plots
from tasks.evaluate.headline import headline
from tasks.lineage.provenance import Lineage, git_commit

STAGE = "evaluate"
LINEAGE_RECORD = "lineage.json"  # uncached (dvc.yaml): the one output that may read dvc.lock and git


def _lineage(artifact: str, root: str) -> dict:
    try:
        return Lineage(root).report(artifact)
    except (LookupError, FileNotFoundError, KeyError):
        # Run outside `dvc repro` before the training stage is locked: no chain to show.
        return {"artifact": artifact, "code": git_commit(Path(root), None), "stages": []}


def _training_summary(train_dir: Path) -> dict:
    out = {}
    for name in ("config.json", "metrics.json"):
        path = train_dir / name
        if path.is_file():
            out[name.removesuffix(".json")] = json.loads(path.read_text())
    return out


def _opening(cfg: dict, stage: str, out_dir: str) -> tuple[dict, Path, Path]:
    """(the training section, preset applied as training saw it; this stage's output
    folder; the model's folder), with torch seeded for repeatable sampling."""
    import torch

    torch.manual_seed(0)
    section = cfg[stage]
    return section, Path(out_dir), Path(section["output_dir"])


def evaluate_conceptclip(cfg: dict, out_dir: str) -> dict:
    from tasks.evaluate import conceptclip_eval

    ev_params = cfg
    section, out, train_dir = _opening(cfg, "train_conceptclip", out_dir)
    ev = conceptclip_eval.evaluate(train_dir, section, ev_params["concepts_table"], ev_params)
    names = [name for _, name in ev.concepts]
    plots.write_micro_roc_csv(ev.labels, ev.scores, out / "roc" / "roc_conceptclip.csv")
    plots.roc_png(ev.labels, ev.scores, names, "ConceptCLIP zero-shot (held-out figures)",
                  out / "plots" / "roc_conceptclip.png")
    for i, item in enumerate(conceptclip_eval.patch_maps(ev, int(ev_params["gallery"]["n_figures"]))):
        plots.patch_overlay_png(item, out / "galleries" / "conceptclip" / f"{i:02d}_{item['key'][:40]}.png")
    figures = pq.read_table(section["figures"], columns=["pmcid", "licence"]).to_pylist()
    held = {r.pmcid for r in ev.records}
    train_licences = Counter(f["licence"] for f in {f["pmcid"]: f for f in figures}.values() if f["pmcid"] not in held)
    training = _training_summary(train_dir)
    m = ev.metrics
    card = cards.model_card(
        "ConceptCLIP — model card",
        "Research on concept-aware image–text alignment for biomedical figures: zero-shot concept "
        "recognition, image–text retrieval and patch-level concept localisation on figures from open-access "
        "literature. Not a medical device; not for diagnosis or patient care.",
        ["Trained on the data named below only; on the embedded sample the figures are synthetic and the "
         "model learns their simplified appearance, not real radiology.",
         "Concepts come from automatic UMLS linking of captions (negated mentions excluded); linking errors "
         "become label noise.",
         "Held-out metrics use a deterministic split by article; intervals are bootstrap over held-out figures."],
        [f"- figures: {len(figures)} from {len({f['pmcid'] for f in figures})} articles; held out: "
         f"{m['heldout_figures']} figures from {m['heldout_articles']} articles",
         f"- concepts evaluated (>= {ev_params['min_positives']} held-out positives): {m['concepts_evaluated']}"],
        train_licences, training,
        [("zero-shot macro AUC", m["zero_shot_macro_auc"]), ("PC-Align annotation macro AUC", m["annotation_macro_auc"])]
        + [(k, v) for k, v in m["retrieval"].items()],
        recorded(train_dir / "model.safetensors", cfg["run_root"]), f"../{LINEAGE_RECORD}",
    )
    (out / "model_cards").mkdir(parents=True, exist_ok=True)
    (out / "model_cards" / "conceptclip.md").write_text(card, encoding="utf-8")
    return {"conceptclip": {"metrics": m, "artifact": recorded(train_dir / "model.safetensors", cfg["run_root"])}}


def evaluate_fvlm(cfg: dict, out_dir: str) -> dict:
    from tasks.evaluate import fvlm_eval

    ev_params = cfg
    section, out, train_dir = _opening(cfg, "train_fvlm", out_dir)
    label_map = cfg["report_label_rules"]
    ev = fvlm_eval.evaluate(train_dir, section, ev_params, ev_params["report_labels"], label_map)
    names = [f"{f} @ {a}" for a, f in ev.pairs]
    plots.write_micro_roc_csv(ev.labels, ev.scores, out / "roc" / "roc_fvlm.csv")
    plots.roc_png(ev.labels, ev.scores, names, "fVLM zero-shot (held-out studies)", out / "plots" / "roc_fvlm.png")
    anatomies = ev.dataset.anatomies
    for i, record in enumerate(ev.records[: int(ev_params["gallery"]["n_studies"])]):
        top = np.argsort(-ev.scores[i])[:3]
        lines = [f"{names[j]}: p={ev.scores[i, j]:.2f} (truth {int(ev.labels[i, j])})" for j in top]
        plots.study_png(ev.dataset.volumes[i].float().numpy(), ev.dataset.masks[i].numpy(), anatomies, lines,
                        f"study {record.study_id[:12]}", out / "galleries" / "fvlm" / f"{i:02d}_{record.study_id[:16]}.png")
    m = ev.metrics
    rows = [("zero-shot macro AUC (anatomy, finding)", m["zero_shot_macro_auc"])]
    if "ct_rate" in m:
        rows.append(("CT-RATE labels macro AUC", m["ct_rate"]["macro_auc"]))
    studies = pq.read_table(section["studies"]).num_rows
    prompts = ev_params["fvlm_prompts"]  # the ones scored, as the card must say
    card = cards.model_card(
        "fVLM — model card",
        "Research on anatomy-level CT–report alignment: zero-shot detection of findings per anatomy by "
        f"comparing '{prompts['positive']}' against '{prompts['negative']}'. Not a medical "
        "device; not for diagnosis or patient care.",
        ["On the embedded sample the CT studies are synthetic phantoms with simplified findings.",
         "Anatomy descriptions come from rule-based report splitting; anatomies cut by the field of view are "
         "dropped; masks come from TotalSegmentator or are provided with the data (see params).",
         "Held-out metrics use a deterministic split by pseudonymous patient; intervals are bootstrap over studies."],
        [f"- CT series converted: {studies}; held out: {m['heldout_studies']} studies of "
         f"{m['heldout_patients']} patients", f"- (anatomy, finding) pairs evaluated: {m['pairs_evaluated']}"],
        Counter(), _training_summary(train_dir), rows, recorded(train_dir / "model.safetensors", cfg["run_root"]), f"../{LINEAGE_RECORD}",
    )
    (out / "model_cards").mkdir(parents=True, exist_ok=True)
    (out / "model_cards" / "fvlm.md").write_text(card, encoding="utf-8")
    return {"fvlm": {"metrics": m, "artifact": recorded(train_dir / "model.safetensors", cfg["run_root"])}}


MODELS = {"conceptclip": evaluate_conceptclip, "fvlm": evaluate_fvlm}


def plan(cfg: dict, out: Path) -> Plan:
    return Plan(items=list(cfg["models"]), shards=list(cfg["models"]))


def evaluate_model(model: str, cfg: dict, out: str) -> ShardResult:
    return ShardResult(value=MODELS[model](cfg, out))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    detail, artifacts = {}, {}
    for result in results:
        for name, value in result.value.items():
            detail[name], artifacts[name] = value["metrics"], value["artifact"]
    figures = headline(detail)
    _write_json(out / "metrics.json", figures)
    _write_json(out / "metrics_detail.json", detail)
    # after the cached outputs, and never read by them
    _write_json(out / LINEAGE_RECORD, {name: _lineage(path, cfg["run_root"])
                                       for name, path in sorted(artifacts.items())})
    for name, m in figures.items():
        print(f"[{STAGE}] {name}: zero-shot macro AUC {m['macro_auc']} "
              f"(95% CI {m['macro_auc_ci_low']}-{m['macro_auc_ci_high']})", flush=True)
    return Merged(items_out=len(detail), accounted=set(detail))
