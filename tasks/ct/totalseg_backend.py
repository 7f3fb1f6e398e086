"""Segmentation backend `totalsegmentator`: TotalSegmentator's own Python API.

Weights live where TotalSegmentator looks for them, `$TOTALSEG_HOME_DIR/nnunet/results/
<DatasetNNN_...>/<trainer>__<plans>__3d_fullres/` (segment.totalsegmentator.home_dir sets
the variable). TotalSegmentator would download missing weights from the internet; this
backend checks first and fails with the download command instead, so a hospital
machine never reaches out unannounced. Its usage statistics are switched off in the
home's config.json before the first call.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np


class TotalSegWeightsMissing(RuntimeError):
    """TotalSegmentator's weights for the task are not installed."""


def configure_home(home_dir: str | None) -> Path:
    """Point TotalSegmentator at its home and switch usage statistics off there."""
    if home_dir:
        os.environ["TOTALSEG_HOME_DIR"] = str(Path(home_dir).resolve())
    from totalsegmentator.config import get_totalseg_dir

    home = get_totalseg_dir()
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "config.json"
    config = {}
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except ValueError:
            config = {}
    # TotalSegmentator creates this file with send_usage_stats true when it is missing.
    wanted = {"send_usage_stats": False, "statistics_disclaimer_shown": True}
    if any(config.get(k) != v for k, v in wanted.items()) or "totalseg_id" not in config:
        config = {"totalseg_id": "totalseg_medconcept", "prediction_counter": 0, **config, **wanted}
        config_file.write_text(json.dumps(config, indent=4))
    return home


def required_datasets(task: str, fast: bool, roi_subset) -> list[tuple[int, str]]:
    """(task id, weights folder name) TotalSegmentator will load for this call."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS

    if task not in TASK_CONFIGS:
        raise ValueError(f"TotalSegmentator has no task {task!r}")
    raw = TASK_CONFIGS[task]
    mode = "fast" if fast else "default"
    config = raw["sub_modes"][mode] if "sub_modes" in raw else raw
    ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    if roi_subset and task == "total":
        ids = [298, *ids]  # the 6 mm model crops to the requested classes first
    out = []
    for tid in ids:
        info = TASK_ID_WEIGHTS_CONFIGS[tid]
        folder = info["foldername"]
        if info.get("rel_path"):
            folder = str(Path(info["rel_path"]) / folder)
        out.append((tid, folder))
    return out


def check_weights(task: str, fast: bool, roi_subset) -> None:
    from totalsegmentator.config import get_weights_dir

    weights = get_weights_dir()
    missing = [folder for _tid, folder in required_datasets(task, fast, roi_subset)
               if not (weights / folder).is_dir()]
    if missing:
        name = f"{task}_fast" if fast and task == "total" else task
        raise TotalSegWeightsMissing(
            f"TotalSegmentator weights missing under {weights}: {', '.join(missing)}. "
            f"Install them with `totalseg_download_weights -t {name}` (needs internet; "
            f"TOTALSEG_HOME_DIR={os.environ.get('TOTALSEG_HOME_DIR', '~/.totalsegmentator')}), "
            f"or run with segment.backend=provided and masks that come with the data.")


def resolve_roi_subset(setting, class_names: list[str]) -> list[str] | None:
    if setting in (None, "none", "all"):
        return None
    if setting == "auto":
        return list(class_names)
    return list(setting)


def segment_image(img: nib.Nifti1Image, cfg: dict, roi_subset: list[str] | None) -> np.ndarray:
    """Multi-label map (uint8, TotalSegmentator ids) on the grid of `img`; cfg: segment.totalsegmentator."""
    from totalsegmentator.python_api import totalsegmentator

    task, fast = cfg["task"], cfg["fast"]
    check_weights(task, fast, roi_subset)
    seg = totalsegmentator(img, None, ml=True, task=task, fast=fast, roi_subset=roi_subset, device=cfg["device"],
                           quiet=True, nr_thr_resamp=cfg["nr_threads"], nr_thr_saving=1)
    data = np.asanyarray(seg.dataobj)
    if data.shape != img.shape or not np.allclose(seg.affine, img.affine, atol=1e-3):
        raise RuntimeError(f"TotalSegmentator returned grid {data.shape} for input {img.shape}")
    return data.astype(np.uint8)
