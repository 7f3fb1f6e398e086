"""The evaluate_fvlm stage's work: fVLM tuned on validation and scored on the test studies (pairs and CT-RATE labels),
then its ROC curves and plots, study gallery and model card in the model's folder."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq

from tasks.common.locations import recorded
from tasks.common.sharding import ShardResult
from tasks.evaluate import cards, fvlm_eval, plots
from tasks.evaluate.stage import CARD_LINEAGE, opening, training_summary


def evaluate_fvlm(cfg: dict, out_dir: str) -> dict:
    ev_params = cfg
    section, out, train_dir = opening(cfg, "train_fvlm", out_dir)
    ev = fvlm_eval.evaluate(train_dir, section, ev_params)
    names = [f"{f} @ {a}" for a, f in ev.pairs]
    plots.write_micro_roc_csv(ev.labels[ev.valid], ev.scores[ev.valid], out / "roc" / "roc_fvlm.csv")
    plots.roc_png(ev.labels, ev.scores, names, "fVLM zero-shot (test studies)", out / "plots" / "roc_fvlm.png",
                  valid=ev.valid)
    scored = [j for j, label in enumerate(ev.label_names) if label in ev.metrics["ct_rate_labels"]]
    plots.roc_png(np.where(ev.label_valid, ev.label_truth, 0)[:, scored], ev.label_scores[:, scored],
                  [f"{ev.label_names[j]} @ {ev.metrics['ct_rate_labels'][ev.label_names[j]]['anatomy']}" for j in scored],
                  "fVLM zero-shot, CT-RATE labels (test studies)", out / "plots" / "roc_fvlm_ct_rate.png",
                  max_curves=len(scored), valid=ev.label_valid[:, scored])
    anatomies = ev.dataset.anatomies
    for i, record in enumerate(ev.records[: int(ev_params["gallery"]["n_studies"])]):
        top = [j for j in np.argsort(-ev.scores[i], kind="stable") if ev.valid[i, j]][:3]
        lines = [f"{names[j]}: p={ev.scores[i, j]:.2f} (truth {int(ev.labels[i, j])})" for j in top]
        item = ev.dataset.get(i, -1)
        plots.study_png(item["volume"].numpy(), item["masks"].numpy(), anatomies, lines,
                        f"study {record.study_id[:12]}", out / "galleries" / f"{i:02d}_{record.study_id[:16]}.png")
    m = ev.metrics
    table = recorded(ev.label_table.path, cfg["run_root"])
    m["ct_rate_label_source"]["table"] = table  # relative to the run: no absolute path in a cached output
    rows = [("zero-shot macro AUC (anatomy, finding)", m["zero_shot_macro_auc"]),
            ("CT-RATE labels macro AUC", m["ct_rate_macro_auc"])]
    studies = pq.read_table(section["studies"]).num_rows
    prompts = m["prompts"]  # the pair chosen on validation and scored on test
    excluded = m["anatomy_exclusions"]
    steps = (f"{section['max_steps']} steps and the other loop settings are params (train_fvlm), set by reading "
             f"the validation loss curve")
    sections = cards.splits_section(m["split"], "patient", "studies", m["tuning"], steps) + [""]
    sections += ["## Anatomies scored and left out (test studies)", "",
                 "A cell whose anatomy is absent (not segmented, or under train_fvlm.min_voxels) or cut by the "
                 "field of view (train_fvlm.drop_fov_cut) has no truth: it takes no part in any figure.", "",
                 f"Cells scored: {m['cells_scored']}; left out: {m['cells_excluded']}.", "",
                 "| anatomy | usable | absent | cut by the field of view |", "|---|---|---|---|"]
    sections += [f"| {a} | {e['usable']} | {e['absent']} | {e['fov_cut']} |" for a, e in excluded.items()]
    sections += [""] + cards.per_label_section("Zero-shot AUC per (finding @ anatomy) (test)", m["zero_shot_auc"],
                                               m["zero_shot_support"], "patient")
    sections += [""] + cards.ct_rate_section(m["ct_rate_label_anatomies"], m["ct_rate_label_source"]["source"], table,
                                             m["ct_rate_labels"], m["ct_rate_labels_not_scored"],
                                             m["ct_rate_macro_auc"], m["interval"])
    card = cards.model_card(
        "fVLM — model card",
        "Research on anatomy-level CT–report alignment: zero-shot detection of findings per anatomy by "
        f"comparing '{prompts['positive']}' against '{prompts['negative']}'. Not a medical "
        "device; not for diagnosis or patient care.",
        ["On the embedded sample the CT studies are synthetic phantoms with simplified findings.",
         "Anatomy descriptions come from rule-based report splitting; anatomies cut by the field of view are "
         "dropped (and carry no truth in the metrics); masks come from TotalSegmentator or are provided with "
         "the data (see params).",
         "Test metrics use a deterministic split by pseudonymous patient; intervals are a bootstrap over "
         "test patients (every study of a drawn patient comes along)."],
        [f"- CT series converted: {studies}; test: {m['test_studies']} studies of "
         f"{m['test_patients']} patients", f"- (anatomy, finding) pairs evaluated: {m['pairs_evaluated']}",
         f"- test studies with a row in the labels table: {m['ct_rate_label_source']['test_studies_with_labels']}"],
        Counter(), training_summary(train_dir), rows, recorded(train_dir / "model.safetensors", cfg["run_root"]),
        CARD_LINEAGE, sections, unit="patient", items="studies",
    )
    (out / "model_cards").mkdir(parents=True, exist_ok=True)
    (out / "model_cards" / "fvlm.md").write_text(card, encoding="utf-8")
    return {"artifact": recorded(train_dir / "model.safetensors", cfg["run_root"]), **m}


def work(model: str, cfg: dict, out: str) -> ShardResult:
    return ShardResult(value={model: evaluate_fvlm(cfg, out)})
