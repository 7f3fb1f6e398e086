"""The train_fvlm stage as plain functions: prepare data, train, write outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tasks.common.summary import StageSummary
from tasks.common.tables import write_rows
from tasks.ct.conversion_settings import read_conversion_settings
from tasks.training import fvlm_data as data
from tasks.training.common import fingerprint, resolve
from tasks.training.loop import LoopResult, train_prepared
from tasks.training.outputs import load_trained  # noqa: F401  (the stage's reader)
from tasks.training.splits import TEST, split_spec
from tasks.training.text_tower import text_tower

STAGE = "train_fvlm"
SPLIT_UNIT = "patient_id"  # a patient's studies stay on one side
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass
class Prepared:
    cfg: dict
    model_cfg: dict
    tokenizer: object
    train: data.StudyDataset
    validation: data.StudyDataset
    records: list
    rejected: list
    findings: dict
    fingerprint: str
    counts: dict = field(default_factory=dict)
    prepared: dict = field(default_factory=dict)  # prepared.json of the tensors trained on


def _path(p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def other_sections(params: dict) -> dict:
    """What this stage takes from other sections (declared under its params in dvc.yaml)."""
    return {"segment_anatomies": list(params["segment"]["anatomies"]),
            "anatomy_names": dict(params["split_reports"]["anatomy_names"])}


def anatomy_list(cfg: dict) -> list[str]:
    names = cfg["anatomies"] or cfg["segment_anatomies"]
    if not names:
        raise ValueError("train_fvlm.anatomies is empty and params has no segment.anatomies")
    return list(names)


def load_study_table(cfg: dict, anatomies: list[str], prepared: data.PreparedSet | None = None) -> data.StudyTable:
    """Every study with its split and prepared tensors file, as training selects them
    (field-of-view policy included), every rejected item, and the pairing counts."""
    labels = _path(cfg["reference_labels"]) if cfg["reference_labels"] else None
    if labels is not None and not labels.is_file():
        raise FileNotFoundError(f"train_fvlm.reference_labels: {labels} not found (split_reports writes it; "
                                f"null: no reference labels)")
    return data.load_records(
        _path(cfg["studies"]), _path(cfg["anatomy"]), _path(cfg["anatomy_texts"]),
        prepared or data.read_prepared(_path(cfg["prepared"])), anatomies,
        split_spec(cfg, SPLIT_UNIT, source_splits=True), finding_field=cfg["finding_field"],
        drop_fov_cut=cfg["drop_fov_cut"], min_voxels=cfg["min_voxels"], keep_fov_cut=tuple(cfg["keep_fov_cut"]),
        reference_labels=labels)


def load_records(cfg: dict, anatomies: list[str]) -> tuple[list, list[dict]]:
    """(records, rejected) of load_study_table: evaluation calls this too, so validation and
    test mean the same studies."""
    table = load_study_table(cfg, anatomies)
    return table.records, table.rejected


def _fingerprint_files(cfg: dict) -> list[Path]:
    """The tables a run's weights depend on: tensors.parquet carries each tensors file's sha256."""
    prepared = _path(cfg["prepared"])
    return [_path(cfg["studies"]), _path(cfg["anatomy"]), _path(cfg["anatomy_texts"]),
            prepared / "tensors.parquet", prepared / "prepared.json"]


def prepare(params: dict) -> Prepared:
    cfg, model_cfg = resolve(params, STAGE, REPO)
    anatomies = anatomy_list(cfg)
    size = tuple(int(v) for v in model_cfg["ct"]["volume_size"])
    hu = data.hu_windows_of(cfg)
    prepared = data.read_prepared(_path(cfg["prepared"]))
    data.check_prepared(prepared.meta, size, hu, anatomies)
    table = load_study_table(cfg, anatomies, prepared)
    records, rejected = table.records, table.rejected
    if table.counts["items_in"] != len(records) + len(rejected):
        raise RuntimeError(f"train_fvlm accounting: {table.counts['items_in']} items in, {len(records)} studies "
                           f"and {len(rejected)} rejected rows out")
    train_recs, val_recs = data.split_records(records)
    texts = [t["description"] for r in train_recs for t in r.texts.values()]
    tokenizer = text_tower(cfg, model_cfg, texts, REPO)
    model_cfg["anatomies"] = anatomies
    for key in ("skip_all_normal", "anatomy_reduction"):
        if key in cfg:
            model_cfg[key] = cfg[key]
    findings = {f: i for i, f in enumerate(sorted({f for r in train_recs for t in r.texts.values()
                                                     for f in t["findings"]}))}
    model_cfg["ct"]["in_chans"] = len(hu)
    seed, cache = cfg["seed"], cfg["cache_in_memory"]
    train = data.StudyDataset(train_recs, anatomies, findings, tokenizer, size, hu, cfg["augment"], seed, cache)
    val = data.StudyDataset(val_recs, anatomies, findings, tokenizer, size, hu, None, seed, cache)
    # settings that change no weight stay out: a run resumes across them
    ignored = ("output_dir", "checkpoint_dir", "num_workers", "cache_in_memory", "reference_labels")
    fp = fingerprint(STAGE, {k: v for k, v in cfg.items() if k not in ignored}, model_cfg,
                     files=_fingerprint_files(cfg))
    counts = {
        **table.counts, "train_studies": len(train_recs), "validation_studies": len(val_recs),
        "train_patients": len({r.patient_id for r in train_recs}), "validation_patients": len({r.patient_id for r in val_recs}),
        "test_studies": sum(r.split == TEST for r in records),
        "anatomies": len(anatomies), "findings": len(findings), "train_pairs": train.pairs(), "validation_pairs": val.pairs(),
        "fov_cut_pairs": sum(1 for r in records for ok in r.usable.values() if not ok), "vocab_size": tokenizer.vocab_size,
    }
    return Prepared(cfg, model_cfg, tokenizer, train, val, records, rejected, findings, fp, counts, prepared.meta)


def train(prep: Prepared, kill_at_step: int | None = None, log=print) -> LoopResult:
    ckpt = _path(prep.cfg["checkpoint_dir"]) if prep.cfg["checkpoint_dir"] else None
    return train_prepared(prep, data.collate, ckpt, kill_at_step, log)


def write_outputs(prep: Prepared, result: LoopResult, params: dict, summary: StageSummary | None = None) -> dict:
    import pyarrow as pa

    from tasks.training.outputs import curve_metrics, write_curve, write_json, write_model, write_run_record

    out = _path(prep.cfg["output_dir"])
    names = prep.cfg["anatomy_names"]
    config = {
        "model": prep.model_cfg, "findings": prep.findings,
        "anatomy_names": {a: names.get(a, a.replace("_", " ").capitalize()) for a in prep.model_cfg["anatomies"]},
        "preprocess": {"volume_size": prep.model_cfg["ct"]["volume_size"], "axes": prep.prepared["axes"],
                       "hu_windows": [list(w) for w in data.hu_windows_of(prep.cfg)],
                       "mask_pooling": prep.prepared["mask_pooling"]},
        "split": split_spec(prep.cfg, SPLIT_UNIT, source_splits=True).record(),
        "zero_shot": prep.cfg["zero_shot"], "preset": prep.cfg["preset"],
        "finding_field": prep.cfg["finding_field"],
        "ct_convert": read_conversion_settings(prep.cfg["studies"]),
    }
    write_model(out, result.model, config, prep.tokenizer)
    write_curve(result.curve, out / "curve.csv")
    metrics = curve_metrics(result.curve)
    metrics.update({k: prep.counts[k] for k in ("train_studies", "validation_studies", "train_pairs", "validation_pairs",
                                                "studies_with_volume", "studies_with_report", "studies_paired")})
    metrics["samples_seen"] = result.steps * prep.cfg["batch_size"]
    write_json(metrics, out / "metrics.json")
    schema = pa.schema([("study_id", pa.string()), ("patient_id", pa.string()), ("series_id", pa.string()),
                        ("split", pa.string())])
    write_rows([{"study_id": r.study_id, "patient_id": r.patient_id, "series_id": r.series_id, "split": r.split}
                for r in prep.records], schema, out / "split.parquet", sort_by=("study_id",))
    # the prepared folder by its table (each tensors file's sha256), not by hashing every file again
    inputs = [prep.cfg["studies"], prep.cfg["anatomy"], prep.cfg["anatomy_texts"],
              str(Path(prep.cfg["prepared"]) / "tensors.parquet"), str(Path(prep.cfg["prepared"]) / "prepared.json"),
              *([prep.cfg["reference_labels"]] if prep.cfg["reference_labels"] else [])]
    write_run_record(out, REPO, STAGE, params, inputs, prep.counts, "items_in", len(prep.records), prep.rejected, result,
                     summary or StageSummary(STAGE, unit="studies"))
    return metrics
