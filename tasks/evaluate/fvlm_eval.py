"""fVLM on the test studies: zero-shot per (anatomy, finding) and per CT-RATE label, with the
prompt pair chosen on the validation studies.

Volumes are read a batch at a time from the prepared tensors (never the whole test
set at once). Every interval is a bootstrap over patients, the split unit. Cells whose anatomy
is cut by the field of view or absent carry no truth: they take no part and are counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tasks.evaluate import ct_rate_labels as ct_rate
from tasks.evaluate import tuning
from tasks.evaluate.metrics import auc_metrics, macro_auc
from tasks.training import fvlm_data as data
from tasks.training.fvlm_stage import SPLIT_UNIT, load_records, load_trained
from tasks.training.splits import TEST, VALIDATION, by_split, split_counts, split_spec

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
    embedding of anatomy t; studies are read BATCH at a time, on the model's device."""
    n = len(dataset)
    if not positives:
        return np.zeros((n, 0))
    device = next(iter(model.parameters()), torch.empty(0)).device if hasattr(model, "parameters") else "cpu"
    pe, ne = tokenizer.encode(positives), tokenizer.encode(negatives)
    pe_ids, pe_mask, ne_ids, ne_mask = (torch.as_tensor(t).to(device) for t in (
        pe["input_ids"], pe["attention_mask"], ne["input_ids"], ne["attention_mask"]))
    index = torch.tensor(anatomy_index, dtype=torch.long, device=device)
    parts = []
    with torch.no_grad():
        for start in range(0, n, BATCH):
            items = [dataset.get(i, -1) for i in range(start, min(n, start + BATCH))]
            volumes = torch.stack([item["volume"] for item in items]).to(device)
            masks = torch.stack([item["masks"] for item in items]).to(device)
            parts.append(model.zero_shot_scores(volumes, masks, pe_ids, pe_mask, ne_ids, ne_mask, index).cpu())
    return torch.cat(parts).numpy().astype(float)


def scored_pairs(dataset, anatomies: list[str], findings: list[str], min_pos: int) -> list[tuple[str, str]]:
    """(anatomy, finding) pairs with enough positives and at least one negative, counted on
    the studies where the anatomy is usable (elsewhere the pair has no truth)."""
    usable, truth = dataset.usable.numpy(), dataset.findings.numpy()  # [N, A], [N, A, F]
    pairs = []
    for ai, a in enumerate(anatomies):
        for fi, f in enumerate(findings):
            mask = usable[:, ai]
            pos = int(truth[mask, ai, fi].sum())
            if min_pos <= pos < int(mask.sum()):
                pairs.append((a, f))
    return pairs


def pair_prompts(pairs: list[tuple[str, str]], prompts: dict, names: dict[str, str]) -> tuple[list[str], list[str]]:
    def fill(template: str) -> list[str]:
        return [_prompt(template, names.get(f, f.replace("_", " ")), a) for a, f in pairs]
    return fill(prompts["positive"]), fill(prompts["negative"])


def pair_truth(dataset, pairs, a_index, f_index) -> tuple[np.ndarray, np.ndarray]:
    """([N, P] 0/1 truth, [N, P] usable): a cell without a usable anatomy has no truth (0 there)."""
    usable, truth = dataset.usable.numpy(), dataset.findings.numpy()
    shape = (len(dataset), len(pairs))
    if not pairs:
        return np.zeros(shape, dtype=int), np.zeros(shape, dtype=bool)
    labels = np.stack([truth[:, a_index[a], f_index[f]] for a, f in pairs], 1).astype(int)
    valid = np.stack([usable[:, a_index[a]] for a, _ in pairs], 1)
    return np.where(valid, labels, 0), valid


def anatomy_exclusions(records: list, anatomies: list[str]) -> dict[str, dict[str, int]]:
    """Per anatomy, the studies where it is scored and those left out, by reason: absent (not
    segmented, or under train_fvlm.min_voxels) or cut by the field of view (drop_fov_cut)."""
    out = {}
    for a in anatomies:
        absent = sum(a not in r.usable for r in records)
        cut = sum(a in r.usable and not r.usable[a] for r in records)
        out[a] = {"usable": len(records) - absent - cut, "absent": absent, "fov_cut": cut}
    return out


def evaluate(train_dir: str | Path, section: dict, params: dict) -> FvlmEval:
    """Prompts chosen on the validation studies; the test studies scored once."""
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
    sides = by_split(records)
    held = sides[TEST]
    if len(held) < 2:
        raise ValueError(f"only {len(held)} test studies: nothing to evaluate (train_fvlm.split)")
    all_findings = sorted({f for r in records for t in r.texts.values() for f in t["findings"]})
    f_index = {f: i for i, f in enumerate(all_findings)}
    a_index = {a: i for i, a in enumerate(anatomies)}
    names = finding_names(section["anatomy_texts"])
    min_pos = int(params["min_positives"])
    n_boot, seed = int(params["bootstrap"]["n"]), int(params["bootstrap"]["seed"])

    def dataset_of(rs):
        return data.StudyDataset(rs, anatomies, f_index, tokenizer, size, hu, None)

    # every candidate's prompts in one pass over the validation volumes
    candidates = list(params["fvlm_tuning"]["prompts"])
    val_records = sides[VALIDATION]
    val_scores: dict[int, float | None] = {}
    if len(candidates) > 1:
        val = dataset_of(val_records)
        val_pairs = scored_pairs(val, anatomies, all_findings, min_pos)
        val_labels, val_valid = pair_truth(val, val_pairs, a_index, f_index)
        pos, neg = zip(*(pair_prompts(val_pairs, c, names) for c in candidates))
        flat = zero_shot(model, val, tokenizer, [p for ps in pos for p in ps], [n for ns in neg for n in ns],
                         [a_index[a] for a, _ in val_pairs] * len(candidates))
        for i in range(len(candidates)):
            part = flat[:, i * len(val_pairs):(i + 1) * len(val_pairs)]
            val_scores[i] = macro_auc(val_labels, part, val_valid) if val_pairs else None
    chosen = tuning.choose(candidates, lambda i, _: val_scores[i], len({r.patient_id for r in val_records}),
                           len(val_records), "evaluate.fvlm_tuning.prompts")
    prompts = dict(chosen.chosen)

    dataset = dataset_of(held)
    patients = [r.patient_id for r in held]
    pairs = scored_pairs(dataset, anatomies, all_findings, min_pos)
    usable = dataset.usable.numpy()
    label_prompts = ct_rate.label_prompts(mapping, prompts)
    # CT-RATE label truth per test study: report keys reach volumes through the study key map
    study_rows = pq.read_table(section["studies"]).to_pylist()
    label_names = [p.label for p in label_prompts]
    label_truth, has_row, matched = ct_rate.truth_matrix([r.study_id for r in held], table,
                                                         data.study_key_map(study_rows), label_names)
    if table.rows and study_rows and not matched:
        raise ValueError(ct_rate.no_match_message(table, study_rows))
    label_usable = np.stack([usable[:, a_index[p.anatomy]] for p in label_prompts], 1) if label_prompts \
        else np.zeros((len(held), 0), dtype=bool)

    # one pass over the volumes scores the pairs and the CT-RATE labels together
    positives, negatives = pair_prompts(pairs, prompts, names)
    all_scores = zero_shot(model, dataset, tokenizer, positives + [p.positive for p in label_prompts],
                           negatives + [p.negative for p in label_prompts],
                           [a_index[a] for a, _ in pairs] + [a_index[p.anatomy] for p in label_prompts])
    scores, label_scores = all_scores[:, :len(pairs)], all_scores[:, len(pairs):]
    labels, valid = pair_truth(dataset, pairs, a_index, f_index)

    metrics = {
        "test_studies": len(held),
        "test_patients": len(set(patients)),
        "split": {**split_spec(section, SPLIT_UNIT, source_splits=True).record(), "counts": split_counts(records, "patient_id")},
        "pairs_evaluated": len(pairs),
        # cells of a cut or absent anatomy carry no truth: left out of every figure, counted here
        "anatomy_exclusions": anatomy_exclusions(held, anatomies),
        "cells_scored": int(valid.sum()),
        "cells_excluded": int((~valid).sum()),
        **auc_metrics("zero_shot", labels, scores, [f"{f} @ {a}" for a, f in pairs], patients, n_boot, seed, valid),
        "tuning": chosen.record("zero-shot macro AUC over the validation (anatomy, finding) pairs"),
        "prompts": prompts,
        "interval": "95% percentile bootstrap over test patients (all studies of a drawn patient)",
        "ct_rate_label_anatomies": {a: list(ls) for a, ls in mapping.items()},
        # the stage records the table's path relative to the run
        "ct_rate_label_source": {"source": table.source, "table": str(table.path),
                                 "test_studies_with_labels": int(has_row.sum())},
        **ct_rate.score_labels(label_prompts, label_scores, label_usable, label_truth, patients, table.labels,
                               min_pos, n_boot, seed),
    }
    return FvlmEval(metrics, labels, scores, valid, pairs, held, dataset, table, label_names, label_truth,
                    label_scores, label_usable & (label_truth >= 0))
