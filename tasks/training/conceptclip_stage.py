"""The train_conceptclip stage as plain functions: prepare data, train, write outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.common.summary import StageSummary
from tasks.common.tables import write_rows
from tasks.training import conceptclip_data as data
from tasks.training import conceptclip_records as records_of
from tasks.training.common import fingerprint, resolve
from tasks.training.loop import LoopResult, train_prepared
from tasks.training.outputs import load_trained  # noqa: F401  (the stage's reader)
from tasks.training.splits import TEST, TRAIN, split_spec
from tasks.training.text_tower import text_tower

STAGE = "train_conceptclip"
SPLIT_UNIT = "pmcid"  # an article's figures stay on one side
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass
class Prepared:
    cfg: dict  # the stage section, preset applied
    model_cfg: dict
    tokenizer: object
    train: data.FigureDataset
    validation: data.FigureDataset
    records: list
    rejected: list
    concept_ids: dict
    fingerprint: str
    counts: dict = field(default_factory=dict)


def other_sections(params: dict) -> dict:
    """What this stage takes from other sections (declared under its params in dvc.yaml): how
    the figures stage wrote the images it trains on, which predict repeats on a user's image."""
    figures = params["figures"]
    return {"source_image": {k: figures[k] for k in ("max_side", "jpeg_quality", "max_pixels")}}


def _path(p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def load_records(cfg: dict) -> tuple[list, list[dict], dict]:
    """(records with their split, rejected rows, shard index) as training selects them;
    evaluation calls this too, so validation and test mean the same figures."""
    index = data.index_shards(_path(cfg["shards_dir"]))
    records, rejected = records_of.load_records(
        _path(cfg["figures"]), _path(cfg["caption_concepts"]), _path(cfg["mentions"]), index, split_spec(cfg, SPLIT_UNIT),
        exclude_uncertain=cfg["exclude_uncertain"])
    return records, rejected, index


def prepare(params: dict) -> Prepared:
    cfg, model_cfg = resolve(params, STAGE, REPO)
    records, rejected, index = load_records(cfg)
    train_recs, val_recs = records_of.split_records(records)
    tokenizer = text_tower(cfg, model_cfg, [r.caption for r in train_recs], REPO)
    # concept ids from the training side only: a concept only outside it has no embedding to learn
    concept_ids = {c: i for i, c in enumerate(sorted({s[2] for r in train_recs for s in r.spans}))}
    image_size = int(model_cfg["image"]["image_size"])
    seed = cfg["seed"]
    cache = cfg["cache_images"]
    train = data.FigureDataset(train_recs, index, tokenizer, concept_ids, image_size, cfg["augment"], seed, cache)
    val = data.FigureDataset(val_recs, index, tokenizer, concept_ids, image_size, None, seed, cache)
    # where images come from (memory or shard reads) and how many workers read them change no tensor
    runtime_only = ("output_dir", "checkpoint_dir", "num_workers", "cache_images")
    # a pretrained image checkpoint counts by its bytes, not its path (a resume must not mix two)
    weights = [_path(model_cfg["image"]["weights"])] if model_cfg["image"].get("weights") else []
    fp = fingerprint(STAGE, {k: v for k, v in cfg.items() if k not in runtime_only}, model_cfg,
                     files=[_path(cfg["figures"]), _path(cfg["caption_concepts"]), _path(cfg["mentions"]), *weights])
    counts = {
        "figures_in": len(records) + len(rejected), "train_figures": len(train_recs), "validation_figures": len(val_recs),
        "train_articles": len({r.pmcid for r in train_recs}), "validation_articles": len({r.pmcid for r in val_recs}),
        "test_figures": sum(r.split == TEST for r in records),
        "concepts": len(concept_ids), "concept_spans_train": sum(len(s) for s in train.spans),
        "concept_spans_dropped": train.spans_dropped + val.spans_dropped,
        "figures_with_concepts": sum(1 for r in records if r.cuis), "vocab_size": tokenizer.vocab_size,
        # figures.panels split | both: figures trained as their panels, and those panel samples
        "figures_as_panels": len({r.parent for r in records if r.parent}),
        "panel_samples": sum(1 for r in records if r.parent),
    }
    return Prepared(cfg, model_cfg, tokenizer, train, val, records, rejected, concept_ids, fp, counts)


def train(prep: Prepared, kill_at_step: int | None = None, log=print) -> LoopResult:
    ckpt = _path(prep.cfg["checkpoint_dir"]) if prep.cfg["checkpoint_dir"] else None
    return train_prepared(prep, data.collate, ckpt, kill_at_step, log)


def write_outputs(prep: Prepared, result: LoopResult, params: dict, summary: StageSummary | None = None) -> dict:
    from tasks.training.outputs import curve_metrics, write_curve, write_json, write_model, write_run_record

    out = _path(prep.cfg["output_dir"])
    mentions = _path(prep.cfg["mentions"])
    surface = records_of.surface_forms(mentions, records_of.mention_keys([r for r in prep.records if r.split == TRAIN]))
    names = records_of.preferred_names(mentions, prep.concept_ids)
    config = {
        "model": prep.model_cfg, "concept_ids": prep.concept_ids,
        "concepts": [{"cui": c, "preferred_name": names.get(c, c), "surface": surface.get(c, names.get(c, c))}
                     for c in sorted(prep.concept_ids, key=prep.concept_ids.get)],
        "preprocess": {"image_size": prep.model_cfg["image"]["image_size"], "mean": data.MEAN, "std": data.STD,
                       "letterbox": True,
                       "source_image": dict(prep.cfg["source_image"])},
        "split": split_spec(prep.cfg, SPLIT_UNIT).record(),
        "zero_shot": prep.cfg["zero_shot"], "preset": prep.cfg["preset"],
    }
    write_model(out, result.model, config, prep.tokenizer)
    write_curve(result.curve, out / "curve.csv")
    metrics = curve_metrics(result.curve)
    metrics.update({"train_figures": prep.counts["train_figures"], "validation_figures": prep.counts["validation_figures"],
                    "concepts": prep.counts["concepts"], "samples_seen": result.steps * prep.cfg["batch_size"]})
    write_json(metrics, out / "metrics.json")
    import pyarrow as pa

    split_schema = pa.schema([("key", pa.string()), ("pmcid", pa.string()), ("split", pa.string()),
                              ("n_concepts", pa.int32())])
    write_rows([{"key": r.key, "pmcid": r.pmcid, "split": r.split, "n_concepts": len(r.cuis)} for r in prep.records],
               split_schema, out / "split.parquet", sort_by=("key",))
    inputs = [prep.cfg["figures"], prep.cfg["shards_dir"], prep.cfg["caption_concepts"], prep.cfg["mentions"]]
    write_run_record(out, REPO, STAGE, params, inputs, prep.counts, "figures_in", len(prep.records), prep.rejected, result,
                     summary or StageSummary(STAGE, unit="figures"))
    return metrics
