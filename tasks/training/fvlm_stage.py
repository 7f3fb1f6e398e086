"""The train_fvlm stage as plain functions: prepare data, train, write outputs."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tasks.common.summary import StageSummary
from tasks.common.tables import write_rejected, write_rows
from tasks.training import fvlm_data as data
from tasks.training.common import fingerprint, resolve
from tasks.training.conceptclip_stage import build_tokenizer
from tasks.training.loop import LoopConfig, LoopResult, train_loop
from tasks.training.splits import split_params

STAGE = "train_fvlm"
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass
class Prepared:
    cfg: dict
    model_cfg: dict
    tokenizer: object
    train: data.StudyDataset
    heldout: data.StudyDataset
    records: list
    rejected: list
    findings: dict
    fingerprint: str
    counts: dict = field(default_factory=dict)


def _path(p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def anatomy_list(params: dict, cfg: dict) -> list[str]:
    names = cfg.get("anatomies") or list(((params.get("segment") or {}).get("anatomies") or {}).keys())
    if not names:
        raise ValueError("train_fvlm.anatomies is empty and params has no segment.anatomies")
    return list(names)


def prepare(params: dict) -> Prepared:
    cfg, model_cfg = resolve(params, STAGE, REPO)
    frac, salt = split_params(cfg)
    anatomies = anatomy_list(params, cfg)
    records, rejected = data.load_records(
        _path(cfg["studies"]), _path(cfg["anatomy"]), _path(cfg["anatomy_texts"]), _path(cfg["labels_dir"]),
        anatomies, frac, salt, finding_field=cfg.get("finding_field", "finding_keys"),
        drop_fov_cut=bool(cfg.get("drop_fov_cut", True)), min_voxels=int(cfg.get("min_voxels", 1)),
        keep_fov_cut=tuple(cfg.get("keep_fov_cut") or ()))
    train_recs, held_recs = data.split_records(records)
    tcfg = cfg.get("tokenizer") or {}
    if tcfg.get("hf_folder"):
        from models.text_encoder import resolve_hf_folder

        spec = str(tcfg["hf_folder"])  # python:<module> stays portable in config.json
        model_cfg["text"]["hf_folder"] = spec if spec.startswith("python:") else str(_path(resolve_hf_folder(spec)))
    if "freeze" in tcfg:
        model_cfg["text"]["freeze"] = bool(tcfg["freeze"])
    if tcfg.get("pool"):
        model_cfg["text"]["pool"] = tcfg["pool"]
    ctx = int(model_cfg["text"]["context_length"])
    texts = [t["description"] for r in train_recs for t in r.texts.values()]
    tokenizer = build_tokenizer(cfg, texts, ctx)
    model_cfg["text"]["vocab_size"] = tokenizer.vocab_size
    model_cfg["anatomies"] = anatomies
    for key in ("skip_all_normal", "anatomy_reduction"):
        if key in cfg:
            model_cfg[key] = cfg[key]
    findings = {f: i for i, f in enumerate(sorted({f for r in train_recs for t in r.texts.values()
                                                     for f in t["findings"]}))}
    size = tuple(int(v) for v in model_cfg["ct"]["volume_size"])
    hu = tuple(cfg.get("hu_window", (-1000.0, 1000.0)))
    seed = int(cfg.get("seed", 0))
    train = data.StudyDataset(train_recs, anatomies, findings, tokenizer, size, hu, cfg.get("augment"), seed)
    held = data.StudyDataset(held_recs, anatomies, findings, tokenizer, size, hu, None, seed)
    fp = fingerprint(STAGE, {k: v for k, v in cfg.items() if k not in ("output_dir", "checkpoint_dir", "num_workers")},
                     model_cfg, files=[_path(cfg["studies"]), _path(cfg["anatomy"]), _path(cfg["anatomy_texts"])])
    pairs = lambda ds: int((ds.usable & torch.tensor([[(i, a) in ds.text_of for a in range(len(anatomies))]
                                                      for i in range(len(ds))], dtype=torch.bool).view(len(ds), -1)).sum()) if len(ds) else 0
    counts = {
        "studies_in": len(records) + len(rejected), "train_studies": len(train_recs), "heldout_studies": len(held_recs),
        "train_patients": len({r.patient_id for r in train_recs}), "heldout_patients": len({r.patient_id for r in held_recs}),
        "anatomies": len(anatomies), "findings": len(findings), "train_pairs": pairs(train), "heldout_pairs": pairs(held),
        "fov_cut_pairs": sum(1 for r in records for ok in r.usable.values() if not ok), "vocab_size": tokenizer.vocab_size,
    }
    return Prepared(cfg, model_cfg, tokenizer, train, held, records, rejected, findings, fp, counts)


def train(prep: Prepared, kill_at_step: int | None = None, log=print) -> LoopResult:
    from models import build_model

    loop = LoopConfig.from_dict(prep.cfg)
    torch.manual_seed(loop.seed)
    model = build_model(prep.model_cfg)
    ckpt = _path(prep.cfg["checkpoint_dir"]) if prep.cfg.get("checkpoint_dir") else None
    return train_loop(model, prep.train, data.collate, loop, ckpt, prep.fingerprint, heldout_set=prep.heldout,
                      kill_at_step=kill_at_step, log=log)


def write_outputs(prep: Prepared, result: LoopResult, params: dict, summary: StageSummary | None = None) -> dict:
    import pyarrow as pa

    from tasks.training.lineage import build_lineage
    from tasks.training.outputs import curve_metrics, save_weights, write_curve, write_json

    out = _path(prep.cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    save_weights(result.model, out / "model.safetensors")
    frac, salt = split_params(prep.cfg)
    names = (params.get("split_reports") or {}).get("anatomy_names") or {}
    config = {
        "model": prep.model_cfg, "findings": prep.findings,
        "anatomy_names": {a: names.get(a, a.replace("_", " ").capitalize()) for a in prep.model_cfg["anatomies"]},
        "preprocess": {"volume_size": prep.model_cfg["ct"]["volume_size"], "axes": "zyx",
                       "hu_window": list(prep.cfg.get("hu_window", (-1000.0, 1000.0))), "mask_pooling": "any"},
        "split": {"by": "patient_id", "heldout_fraction": frac, "salt": salt},
        "zero_shot": prep.cfg.get("zero_shot") or {}, "preset": prep.cfg.get("preset"),
        "finding_field": prep.cfg.get("finding_field", "finding_keys"),
    }
    write_json(config, out / "config.json")
    tok_dir = out / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    prep.tokenizer.save(tok_dir)
    write_curve(result.curve, out / "curve.csv")
    metrics = curve_metrics(result.curve)
    metrics.update({k: prep.counts[k] for k in ("train_studies", "heldout_studies", "train_pairs", "heldout_pairs")})
    metrics["samples_seen"] = result.steps * prep.cfg["batch_size"]
    write_json(metrics, out / "metrics.json")
    schema = pa.schema([("study_id", pa.string()), ("patient_id", pa.string()), ("series_id", pa.string()),
                        ("split", pa.string())])
    write_rows([{"study_id": r.study_id, "patient_id": r.patient_id, "series_id": r.series_id, "split": r.split}
                for r in prep.records], schema, out / "split.parquet", sort_by=("study_id",))
    write_rejected([dict(r, stage=STAGE) for r in prep.rejected], out / "rejected.parquet")
    inputs = [prep.cfg["studies"], prep.cfg["anatomy"], prep.cfg["anatomy_texts"], prep.cfg["labels_dir"]]
    write_json(build_lineage(REPO, STAGE, inputs, {STAGE: params.get(STAGE)}, prep.counts), out / "lineage.json")
    summary = summary or StageSummary(STAGE, unit="studies")
    summary.items_in = prep.counts["studies_in"]
    summary.items_out = len(prep.records)
    summary.add_rejections(Counter(r["reason"] for r in prep.rejected).elements())
    summary.merge_counts({k: v for k, v in prep.counts.items() if k != "studies_in"})
    summary.merge_counts({"steps": result.steps, "resumed_from_step": result.resumed_from})
    summary.write(out)
    (out / "timing.json").write_text(json.dumps(dict(summary.timing(), train_seconds=round(result.seconds, 2)), indent=2) + "\n")
    return metrics


def load_trained(output_dir: str | Path):
    """(model in eval mode, tokenizer, config) from a train_fvlm output folder."""
    from models import build_model
    from models.text_encoder import TextTokenizer
    from tasks.training.outputs import load_weights

    out = Path(output_dir)
    config = json.loads((out / "config.json").read_text())
    model = load_weights(build_model(config["model"]), out / "model.safetensors").eval()
    tok = TextTokenizer.load(out / "tokenizer", int(config["model"]["text"]["context_length"]))
    return model, tok, config
