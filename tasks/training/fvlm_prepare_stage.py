"""The fvlm_prepare stage as plain functions for the stage runner (flows/_runner.py).

plan: every series of ct_convert's studies.parquet, with its anatomies' label ids from
segment's anatomy.parquet; one task per `series_per_task`.
prepare_shard (on a worker): one series at a time, its volume and label map read from
disk, its tensors at the model grid written to tensors/<series_id>.zip
(tasks.training.fvlm_tensors), one row each; bad inputs become rejected rows.
merge: tensors.parquet from the part tables, and prepared.json (grid, HU windows,
anatomies, axes, mask pooling) that train_fvlm checks against its model.

cfg is the fvlm_prepare section plus what `other_sections` takes from train_fvlm and
segment (passed by the flow, declared under the stage's params in dvc.yaml).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.common.hashing import sha256_file
from tasks.common.rejection import Rejected
from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import Rejection, concat_parts, write_rows
from tasks.training import fvlm_tensors

STAGE = "fvlm_prepare"
REPO = Path(__file__).resolve().parent.parent.parent
TENSORS_DIR = "tensors"
SUFFIX = ".zip"
STUDY_COLUMNS = ["series_id", "study_id", "patient_id", "volume"]
TENSORS_SCHEMA = pa.schema([
    ("series_id", pa.string()), ("study_id", pa.string()), ("patient_id", pa.string()),
    ("tensors", pa.string()),   # relative to fvlm_prepare.output_dir
    ("grid_d", pa.int32()), ("grid_h", pa.int32()), ("grid_w", pa.int32()), ("channels", pa.int32()),
    ("anatomies", pa.list_(pa.string())),
    ("anatomy_voxels", pa.list_(pa.int64())),   # mask voxels per anatomy at the model grid
    ("sha256", pa.string()), ("stage", pa.string()),
])


def model_grid(params: dict) -> list[int]:
    """ct.volume_size of train_fvlm's model: its preset's model config with train_fvlm.model's
    overrides, as tasks.training.common.resolve reads it (not imported: its code closure is
    the whole training code, which as a DVC dep would re-prepare on every training change)."""
    from tasks.schema import resolve_training_preset

    fvlm = resolve_training_preset(params["train_fvlm"])
    path = Path(fvlm["model_config"])
    path = path if path.is_absolute() else REPO / path
    model = json.loads(path.read_text())
    override = ((fvlm["model"] or {}).get("ct") or {}).get("volume_size")   # free-form overrides
    grid = override if override is not None else model["ct"]["volume_size"]
    return [int(v) for v in grid]


def other_sections(params: dict) -> dict:
    """What this stage takes from other sections: train_fvlm's HU windows, its anatomy list
    (else segment.anatomies' names, in their order) and its model's grid."""
    fvlm = params["train_fvlm"]
    anatomies = list(fvlm["anatomies"] or params["segment"]["anatomies"])
    if not anatomies:
        raise ValueError("train_fvlm.anatomies is empty and params has no segment.anatomies")
    return {"hu_windows": [[float(lo), float(hi)] for lo, hi in fvlm["hu_windows"]], "anatomies": anatomies,
            "model_grid": model_grid(params)}


def grid_of(cfg: dict) -> tuple[int, int, int]:
    """fvlm_prepare.grid, or the model's grid when it is null."""
    grid = cfg["grid"] if cfg["grid"] is not None else cfg["model_grid"]
    return tuple(int(v) for v in grid)


def _hu_windows(cfg: dict) -> list[tuple[float, float]]:
    windows = [(float(lo), float(hi)) for lo, hi in cfg["hu_windows"]]
    if not windows or any(hi <= lo for lo, hi in windows):
        raise ValueError(f"train_fvlm.hu_windows must be [low, high] pairs with low < high, got {cfg['hu_windows']}")
    return windows


def _volume_path(volume: str, studies: Path) -> Path:
    path = Path(volume)
    return path if path.is_absolute() else studies.parent / path   # relative to ct_convert's folder


def plan(cfg: dict, out: Path) -> Plan:
    grid_of(cfg), _hu_windows(cfg)   # start-up checks: a bad value fails before any task
    studies = pq.read_table(cfg["studies"], columns=STUDY_COLUMNS).to_pylist()
    studies.sort(key=lambda r: r["series_id"])
    labels: dict[str, dict[str, list[int]]] = {}
    wanted = set(cfg["anatomies"])
    for r in pq.read_table(cfg["anatomy"], columns=["series_id", "anatomy", "label_ids"]).to_pylist():
        if r["anatomy"] in wanted:
            labels.setdefault(r["series_id"], {})[r["anatomy"]] = sorted(int(i) for i in r["label_ids"] or [])
    shards = [(index, rows, {r["series_id"]: labels.get(r["series_id"], {}) for r in rows})
              for index, rows in enumerate(chunks(studies, cfg["series_per_task"]))]
    return Plan(items=[r["series_id"] for r in studies], shards=shards,
                counts={"series_without_anatomy": sum(1 for r in studies if not labels.get(r["series_id"]))})


def _open(path: Path, missing: str, unreadable: str, what: str):
    import nibabel as nib

    if not path.is_file():
        raise Rejected(missing, f"{what} {path.name} not found")
    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001  (any header a reader cannot parse)
        raise Rejected(unreadable, _failure(what, path, exc)) from None


def _data(img, unreadable: str, what: str) -> np.ndarray:
    try:
        return fvlm_tensors.nifti_array(img)
    except Exception as exc:  # noqa: BLE001  (a truncated or corrupt file)
        raise Rejected(unreadable, _failure(what, Path(img.get_filename()), exc)) from None


def _failure(what: str, path: Path, exc: Exception) -> str:
    # the file name only: an absolute path would make rejected.parquet differ between clones
    return f"{what} {path.name}: {type(exc).__name__}: {str(exc).replace(str(path), path.name)}"


def prepare_series(row: dict, anatomy_labels: dict[str, list[int]], cfg: dict, out: Path) -> dict:
    """The tensors of one series written under out/tensors/; its tensors.parquet row.
    Raises Rejected. Reads the label map before the volume so that one large array at a time
    is held at the source grid."""
    series_id = row["series_id"]
    grid, anatomies = grid_of(cfg), list(cfg["anatomies"])
    volume_img = _open(_volume_path(row["volume"], Path(cfg["studies"])), "volume_missing",
                       "volume_unreadable", "volume")
    labels_img = _open(Path(cfg["labels_dir"]) / f"{series_id}.nii.gz", "labels_missing",
                       "labels_unreadable", "label map")
    if tuple(volume_img.shape) != tuple(labels_img.shape):
        raise Rejected("labels_grid_mismatch",
                       f"volume {tuple(volume_img.shape)} and label map {tuple(labels_img.shape)} differ")
    masks = fvlm_tensors.anatomy_masks(_data(labels_img, "labels_unreadable", "label map"),
                                       anatomy_labels, anatomies, grid)
    volume = fvlm_tensors.volume_channels(_data(volume_img, "volume_unreadable", "volume"), grid,
                                          _hu_windows(cfg))
    relative = f"{TENSORS_DIR}/{series_id}{SUFFIX}"
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    masks = masks.numpy()
    fvlm_tensors.write_study_tensors(path, volume.half().numpy(), masks)
    return {"series_id": series_id, "study_id": row["study_id"], "patient_id": row["patient_id"],
            "tensors": relative, "grid_d": grid[0], "grid_h": grid[1], "grid_w": grid[2],
            "channels": int(volume.shape[0]), "anatomies": anatomies,
            "anatomy_voxels": [int(v) for v in np.count_nonzero(masks.reshape(len(anatomies), -1), axis=1)],
            "sha256": sha256_file(path), "stage": STAGE}


def prepare_shard(shard: tuple[int, list[dict], dict[str, dict[str, list[int]]]], cfg: dict,
                  out: str) -> ShardResult:
    """One shard of series, one at a time; value: the part table's path."""
    index, studies, labels = shard
    out_dir = Path(out)
    rows, rejected = [], []
    for study in studies:
        try:
            rows.append(prepare_series(study, labels[study["series_id"]], cfg, out_dir))
        except Rejected as exc:
            rejected.append(Rejection(study["series_id"], study["volume"], exc.reason, exc.detail, STAGE).as_row())
    part = out_dir / "_parts" / f"tensors-{index:06d}.parquet"
    write_rows(rows, TENSORS_SCHEMA, part)
    return ShardResult(value=str(part), rejected=rejected)


def prepared_record(cfg: dict) -> dict:
    """What a training run must agree with (prepared.json)."""
    return {"format": fvlm_tensors.FORMAT, "grid": list(grid_of(cfg)),
            "grid_source": "fvlm_prepare.grid" if cfg["grid"] is not None else "train_fvlm model ct.volume_size",
            "hu_windows": [list(w) for w in _hu_windows(cfg)], "anatomies": list(cfg["anatomies"]),
            "axes": fvlm_tensors.AXES, "mask_pooling": fvlm_tensors.MASK_POOLING, "volume_dtype": "float16",
            "table": "tensors.parquet"}


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    table = out / "tensors.parquet"
    rows = concat_parts([r.value for r in results], TENSORS_SCHEMA, table, sort_by=("series_id",))
    (out / "prepared.json").write_text(json.dumps(prepared_record(cfg), indent=2, sort_keys=True) + "\n")
    prepared = set(pq.read_table(table, columns=["series_id"]).column("series_id").to_pylist())
    tensor_bytes = sum((out / TENSORS_DIR / f"{s}{SUFFIX}").stat().st_size for s in sorted(prepared))
    return Merged(items_out=rows, accounted=prepared, counts={"tensor_bytes": tensor_bytes})
