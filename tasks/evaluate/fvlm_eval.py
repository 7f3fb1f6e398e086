"""fVLM on held-out studies: zero-shot per (anatomy, finding) and per CT-RATE label.

Volumes are read a batch at a time from the prepared tensors (never the whole held-out
set at once). Every interval is a bootstrap over patients, the split unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tasks.evaluate import ct_rate_labels as ct_rate
from tasks.evaluate.metrics import auc_metrics
from tasks.training import fvlm_data as data
from tasks.training.fvlm_stage import load_records, load_trained
from tasks.training.splits import HELDOUT

BATCH = 8


@dataclass
class FvlmEval:
    metrics: dict
    labels: np.ndarray   # [N, P] (anatomy, finding) truth
    scores: np.ndarray   # [N, P] zero-shot probability
    valid: np.ndarray    # [N, P] the pair's anatomy is usable in the study (else no truth there)
    pairs: list[tuple[str, str]]
    records: list
    dataset: object
    label_table: ct_rate.LabelTable
    label_names: list[str]      # the mapped CT-RATE labels, in the mapping's order
    label_truth: np.ndarray     # [N, L] 0/1, -1: the study has no label row
    label_scores: np.ndarray    # [N, L]
    label_valid: np.ndarray     # [N, L] the label's anatomy is usable and the study has a row


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


def zero_shot(model, dataset, tokenizer, positives: list[str], negatives: list[str],
              anatomy_index: list[int]) -> np.ndarray:
    """[N, T]: each study's probability of positive prompt t against negative t, on the
    embedding of anatomy t; studies are read BATCH at a time."""
    n = len(dataset)
    if not positives:
        return np.zeros((n, 0))
    pe, ne = tokenizer.encode(positives), tokenizer.encode(negatives)
    index = torch.tensor(anatomy_index, dtype=torch.long)
    parts = []
    with torch.no_grad():
        for start in range(0, n, BATCH):
            items = [dataset.get(i, -1) for i in range(start, min(n, start + BATCH))]
            volumes = torch.stack([item["volume"] for item in items])
            masks = torch.stack([item["masks"] for item in items])
            parts.append(model.zero_shot_scores(volumes, masks, pe["input_ids"], pe["attention_mask"],
                                                ne["input_ids"], ne["attention_mask"], index))
    return torch.cat(parts).numpy().astype(float)


def evaluate(train_dir: str | Path, section: dict, params: dict) -> FvlmEval:
    model, tokenizer, config = load_trained(train_dir)
    anatomies = list(config["model"]["anatomies"])
    # the labels table and the mapping first: a wrong param fails before any volume is read
    table = ct_rate.read_label_table(params)
    mapping = params["ct_rate_label_anatomies"]
    ct_rate.check_label_anatomies(mapping, anatomies, table)

    size = tuple(int(v) for v in config["model"]["ct"]["volume_size"])
    hu = data.hu_windows_of(config["preprocess"])  # as trained, whatever params say now
    # the tensors read must be what the model was trained on (grid, HU windows, anatomies)
    data.check_prepared(data.read_prepared(Path(section["prepared"])).meta, size, hu, anatomies)
    records, _ = load_records(section, anatomies)
    held = [r for r in records if r.split == HELDOUT]
    if len(held) < 2:
        raise ValueError(f"only {len(held)} held-out studies: nothing to evaluate")
    all_findings = sorted({f for r in records for t in r.texts.values() for f in t["findings"]})
    dataset = data.StudyDataset(held, anatomies, {f: i for i, f in enumerate(all_findings)}, tokenizer, size, hu, None)
    names = finding_names(section["anatomy_texts"])
    a_index = {a: i for i, a in enumerate(anatomies)}
    f_index = {f: i for i, f in enumerate(all_findings)}
    min_pos = int(params["min_positives"])
    n_boot, seed = int(params["bootstrap"]["n"]), int(params["bootstrap"]["seed"])
    patients = [r.patient_id for r in held]

    # (anatomy, finding) pairs with enough held-out positives and at least one negative,
    # counted on the studies where the anatomy is usable (elsewhere the pair has no truth)
    usable = dataset.usable.numpy()
    truth = dataset.findings.numpy()  # [N, A, F]
    pairs = []
    for a in anatomies:
        for f in all_findings:
            ai, fi = a_index[a], f_index[f]
            mask = usable[:, ai]
            pos = int(truth[mask, ai, fi].sum())
            if min_pos <= pos < int(mask.sum()):
                pairs.append((a, f))
    prompts = params["fvlm_prompts"]
    label_prompts = ct_rate.label_prompts(mapping, prompts)
    # CT-RATE label truth per held-out study: report keys reach volumes through the study key map
    study_rows = pq.read_table(section["studies"]).to_pylist()
    label_names = [p.label for p in label_prompts]
    label_truth, has_row, matched = ct_rate.truth_matrix([r.study_id for r in held], table,
                                                         data.study_key_map(study_rows), label_names)
    if table.rows and study_rows and not matched:
        raise ValueError(ct_rate.no_match_message(table, study_rows))
    label_usable = np.stack([usable[:, a_index[p.anatomy]] for p in label_prompts], 1) if label_prompts \
        else np.zeros((len(held), 0), dtype=bool)

    # one pass over the volumes scores the pairs and the CT-RATE labels together
    positives = [_prompt(prompts["positive"], names.get(f, f.replace("_", " ")), a) for a, f in pairs] + \
        [p.positive for p in label_prompts]
    negatives = [_prompt(prompts["negative"], names.get(f, f.replace("_", " ")), a) for a, f in pairs] + \
        [p.negative for p in label_prompts]
    all_scores = zero_shot(model, dataset, tokenizer, positives, negatives,
                           [a_index[a] for a, _ in pairs] + [a_index[p.anatomy] for p in label_prompts])
    scores, label_scores = all_scores[:, :len(pairs)], all_scores[:, len(pairs):]

    shape = (len(held), len(pairs))
    labels = np.stack([truth[:, a_index[a], f_index[f]] for a, f in pairs], 1).astype(int) if pairs \
        else np.zeros(shape, dtype=int)
    valid = np.stack([usable[:, a_index[a]] for a, _ in pairs], 1) if pairs else np.zeros(shape, dtype=bool)
    labels = np.where(valid, labels, 0)

    metrics = {
        "heldout_studies": len(held),
        "heldout_patients": len({r.patient_id for r in held}),
        "pairs_evaluated": len(pairs),
        **auc_metrics("zero_shot", labels, scores, [f"{f} @ {a}" for a, f in pairs], patients, n_boot, seed, valid),
        "interval": "95% percentile bootstrap over held-out patients (all studies of a drawn patient)",
        "ct_rate_label_anatomies": {a: list(ls) for a, ls in mapping.items()},
        # the stage records the table's path relative to the run
        "ct_rate_label_source": {"source": table.source, "table": str(table.path),
                                 "heldout_studies_with_labels": int(has_row.sum())},
        **ct_rate.score_labels(label_prompts, label_scores, label_usable, label_truth, patients, table.labels,
                               min_pos, n_boot, seed),
    }
    return FvlmEval(metrics, labels, scores, valid, pairs, held, dataset, table, label_names, label_truth,
                    label_scores, label_usable & (label_truth >= 0))
