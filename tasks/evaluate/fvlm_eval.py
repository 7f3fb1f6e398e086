"""fVLM on held-out studies: zero-shot per (anatomy, finding) and per CT-RATE label."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tasks.evaluate.metrics import auc_metrics, macro_auc_with_ci, per_label_auc
from tasks.training import fvlm_data as data
from tasks.training.fvlm_stage import load_records, load_trained
from tasks.training.splits import HELDOUT


@dataclass
class FvlmEval:
    metrics: dict
    labels: np.ndarray
    scores: np.ndarray
    pairs: list[tuple[str, str]]
    records: list
    dataset: object


def finding_names(texts_path: str | Path) -> dict[str, str]:
    names = {}
    table = pq.read_table(texts_path)
    cols = set(table.column_names)
    if {"finding_keys", "finding_names"} <= cols:
        for keys, labels in zip(table["finding_keys"].to_pylist(), table["finding_names"].to_pylist()):
            for k, n in zip(keys or [], labels or []):
                names.setdefault(k, n)
    return names


def _prompt(template: str, finding: str, anatomy: str) -> str:
    return template.format(finding=finding.lower(), anatomy=anatomy.replace("_", " "))


def evaluate(train_dir: str | Path, section: dict, params: dict, report_labels: str | Path | None,
             label_map: dict | None) -> FvlmEval:
    model, tokenizer, config = load_trained(train_dir)
    anatomies = list(config["model"]["anatomies"])
    records, _ = load_records(section, anatomies)
    held = [r for r in records if r.split == HELDOUT]
    if len(held) < 2:
        raise ValueError(f"only {len(held)} held-out studies: nothing to evaluate")
    size = tuple(int(v) for v in config["model"]["ct"]["volume_size"])
    hu = data.hu_windows_of(config["preprocess"])  # as trained, whatever params say now
    all_findings = sorted({f for r in records for t in r.texts.values() for f in t["findings"]})
    dataset = data.StudyDataset(held, anatomies, {f: i for i, f in enumerate(all_findings)}, tokenizer, size, hu, None)
    names = finding_names(section["anatomy_texts"])
    a_index = {a: i for i, a in enumerate(anatomies)}
    f_index = {f: i for i, f in enumerate(all_findings)}
    min_pos = int(params["min_positives"])

    # (anatomy, finding) pairs with enough held-out positives and at least one negative.
    usable = dataset.usable.numpy()
    truth = dataset.findings.numpy()  # [N, A, F]
    pairs, columns = [], []
    for a in anatomies:
        for f in all_findings:
            ai, fi = a_index[a], f_index[f]
            mask = usable[:, ai]
            pos = int(truth[mask, ai, fi].sum())
            if pos >= min_pos and pos < int(mask.sum()):
                pairs.append((a, f))
                columns.append((ai, fi))
    prompts = params["fvlm_prompts"]
    pos_text = [_prompt(prompts["positive"], names.get(f, f.replace("_", " ")), a) for a, f in pairs]
    neg_text = [_prompt(prompts["negative"], names.get(f, f.replace("_", " ")), a) for a, f in pairs]
    scores = np.zeros((len(held), len(pairs)))
    if pairs:
        pe, ne = tokenizer.encode(pos_text), tokenizer.encode(neg_text)
        anatomy_index = torch.tensor([ai for ai, _ in columns])
        volumes = torch.stack([dataset.volumes[i].float() for i in range(len(held))])
        masks = torch.stack([dataset.masks[i] for i in range(len(held))])
        with torch.no_grad():
            parts = [model.zero_shot_scores(volumes[s:s + 8], masks[s:s + 8], pe["input_ids"], pe["attention_mask"],
                                            ne["input_ids"], ne["attention_mask"], anatomy_index)
                     for s in range(0, len(held), 8)]
        scores = torch.cat(parts).numpy()
    labels = np.stack([truth[:, ai, fi] for ai, fi in columns], axis=1).astype(int) if pairs \
        else np.zeros((len(held), 0), dtype=int)
    valid = np.stack([usable[:, ai] for ai, _ in columns], axis=1) if pairs else np.zeros((len(held), 0), bool)
    # Pairs whose anatomy is cut or missing in a study carry no truth there: score them as the pair's minimum.
    scores = np.where(valid, scores, np.nan)
    labels = np.where(valid, labels, 0)
    fill = np.nanmin(np.where(np.isnan(scores), np.inf, scores), axis=0) if pairs else np.zeros(0)
    scores = np.where(np.isnan(scores), fill[None, :] if pairs else 0, scores)

    n_boot, seed = int(params["bootstrap"]["n"]), int(params["bootstrap"]["seed"])
    names_out = [f"{f} @ {a}" for a, f in pairs]
    metrics = {
        "heldout_studies": len(held),
        "heldout_patients": len({r.patient_id for r in held}),
        "pairs_evaluated": len(pairs),
        **auc_metrics("zero_shot", labels, scores, names_out, n_boot, seed),
    }
    ct_rate = ct_rate_labels(held, pairs, scores, report_labels, label_map, min_pos, n_boot, seed)
    if ct_rate:
        metrics["ct_rate"] = ct_rate
    return FvlmEval(metrics, labels, scores, pairs, held, dataset)


def ct_rate_labels(held, pairs, scores, report_labels, label_map, min_pos, n_boot, seed) -> dict | None:
    """The CT-RATE abnormalities that the held-out reports carry: a label scores as the max
    over the evaluated (anatomy, finding) pairs that make it up."""
    if not report_labels or not Path(report_labels).is_file() or not label_map or not pairs:
        return None
    table = pq.read_table(report_labels).to_pylist()
    by_study = {r["study_id"]: r for r in table if "study_id" in r}
    rows = [by_study.get(r.study_id) for r in held]
    names, truth, label_scores = [], [], []
    for label, spec in label_map.items():
        # The label's finding keys decide; its anatomy list names lexicon regions, not masks.
        members = [j for j, (_, f) in enumerate(pairs) if f in set(spec.get("findings") or [])]
        if not members or not all(r is not None and label in r for r in rows):
            continue
        y = np.array([int(bool(r[label])) for r in rows])
        if y.sum() < min_pos or y.sum() == len(y):
            continue
        names.append(label)
        truth.append(y)
        label_scores.append(scores[:, members].max(axis=1))
    if not names:
        return None
    labels, values = np.stack(truth, 1), np.stack(label_scores, 1)
    return {"labels_evaluated": len(names), "macro_auc": macro_auc_with_ci(labels, values, n_boot, seed),
            "auc": per_label_auc(labels, values, names)}
