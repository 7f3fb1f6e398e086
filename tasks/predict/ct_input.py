"""predict's CT input: one series converted as ct_convert converts it, its anatomy masks as
segment makes them, and each anatomy's usability as train_fvlm decides it; refusals carry
ct_convert's and segment's reason codes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np


class CtRefused(ValueError):
    """The input cannot be scored: `reason` is ct_convert's code (or image_2d, no_input,
    several_series, ...), `detail` the sentence that says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"refused ({reason}): {detail}")
        self.reason, self.detail = reason, detail



# -- 1. conversion -------------------------------------------------------------------------

def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def refuse_ct_for_images(inputs: list[str | Path]) -> None:
    """A ValueError when an input meant for a ConceptCLIP (2-D image) model is a CT volume."""
    from tasks.ct.convert import is_nifti

    for given in inputs:
        path = Path(given)
        if path.is_file() and (is_nifti(path.name) or is_dicom_file(path)):
            kind = "a NIfTI volume" if is_nifti(path.name) else "a DICOM file"
            raise ValueError(f"{path} is {kind}: a ConceptCLIP model reads 2-D images (PNG, JPEG, TIFF, ...); "
                             "score a CT with an fVLM model folder (train_fvlm's output_dir)")


def _refused(rejection) -> CtRefused:
    return CtRefused(rejection.reason, rejection.detail)


def convert_input(input_path: str | Path, cfg: dict, work: Path) -> tuple[dict, dict]:
    """(ct_convert's studies row of the one series, {reason: files left out}); writes
    work/volumes/<series_id>.nii.gz. Raises CtRefused."""
    from tasks.ct.convert import convert_dicom_series, convert_nifti, discover
    from tasks.ct.dicom_series import group_series, scan_files
    from tasks.predict.images import IMAGE_SUFFIXES

    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"predict: no file or folder at {path}")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise CtRefused("image_2d", f"a 2-D image ({path.suffix.lower()}); an fVLM model reads a CT volume: "
                                    "a DICOM series folder or a NIfTI file")
    root = str(path if path.is_dir() else path.parent)
    dicom_files, nifti_files = discover(path)
    if not dicom_files and not nifti_files:
        raise CtRefused("no_input", "the folder holds no files (hidden files are skipped)")
    if nifti_files:
        if dicom_files or len(nifti_files) > 1:
            raise CtRefused("several_inputs", f"{len(nifti_files)} NIfTI and {len(dicom_files)} other files: "
                                              "predict scores one CT, give one NIfTI file or one series folder")
        result = convert_nifti(nifti_files[0], cfg, cfg["deid_key"], work, root)
        if not isinstance(result, dict):
            raise _refused(result)
        return result, {}
    headers, problems = scan_files(dicom_files, missing_uid=cfg["missing_uid"], root=root)
    ignored: dict[str, int] = {}
    for problem in problems:
        if problem.reason != "not_dicom":
            raise CtRefused(problem.reason, f"{problem.detail} (one of the series' files; predict uses a "
                                            "series only when every DICOM file in it reads)")
        ignored[problem.reason] = ignored.get(problem.reason, 0) + 1
    if not headers:
        images = sum(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in dicom_files)
        if images:
            raise CtRefused("image_2d", f"{images} 2-D image file(s) and no DICOM or NIfTI: an fVLM model reads a "
                                        "CT volume")
        raise CtRefused("not_dicom", f"none of the {len(dicom_files)} file(s) is DICOM or NIfTI")
    series = group_series(headers)
    if len(series) > 1:
        kinds = ", ".join(f"{s.first.modality or '?'} ({len(s.frames)} frames)" for s in series)
        raise CtRefused("several_series", f"{len(series)} DICOM series: {kinds}; predict scores one, give the "
                                          "folder of one series")
    result = convert_dicom_series(series[0], cfg, cfg["deid_key"], work, root)
    if not isinstance(result, dict):
        raise _refused(result)
    return result, ignored


def study_hash(volume: np.ndarray, affine: np.ndarray) -> str:
    """The study's name: a hash of the converted voxels (int16 HU, RAS+) and their grid."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"shape": list(volume.shape), "affine": [round(float(v), 6) for v in
                                                                     np.asarray(affine).reshape(-1)]}).encode())
    digest.update(np.ascontiguousarray(volume, dtype=np.int16).tobytes())
    return "ct-" + digest.hexdigest()[:16]


# -- 2. anatomy masks ----------------------------------------------------------------------

def _ts_device(device: str) -> str:
    device = str(device or "cpu")
    return "gpu" + device[4:] if device.startswith("cuda") else device


def segment_cfg(mask: str | None, segment_device: str) -> dict:
    """The segment section's schema defaults for one series (no overlay: predict draws its own)."""
    from tasks.schema.ct import SegmentParams, TotalSegmentatorParams

    fields = SegmentParams.model_fields
    return {"backend": "provided" if mask else "totalsegmentator",
            "totalsegmentator": {**TotalSegmentatorParams().model_dump(), "device": _ts_device(segment_device)},
            "geometry_tolerance_mm": fields["geometry_tolerance_mm"].default, "overlays": False}


def totalsegmentator_ready(cfg: dict, groups) -> None:
    """TotalSegmentator importable and its weights installed, else a ValueError asking for --mask."""
    ask = ("give the anatomy label map with --mask (a NIfTI on the CT's grid, TotalSegmentator v2 class ids or "
           "--mask-labels)")
    try:
        from tasks.ct.totalseg_backend import (TotalSegWeightsMissing, check_weights, configure_home,
                                               resolve_roi_subset)

        ts = cfg["totalsegmentator"]
        configure_home(ts["home_dir"])
        check_weights(ts["task"], ts["fast"], resolve_roi_subset(ts["roi_subset"], groups.class_names()))
    except ImportError as exc:
        raise ValueError(f"TotalSegmentator is not installed ({exc}); {ask}") from None
    except TotalSegWeightsMissing as exc:
        raise ValueError(f"no anatomy masks: {exc} Or {ask}.") from None


def segment(row: dict, work: Path, groups, mask: str | None, segment_device: str) -> tuple[list[dict], dict]:
    """segment's anatomy rows of the series (work/labels/<series_id>.nii.gz written) and its cfg."""
    from tasks.ct.segment_stage import segment_series

    cfg = segment_cfg(mask, segment_device)
    if groups.task == "mask-labels":  # values --mask-labels does not name are no anatomy of the model
        groups = replace(groups, names={i: groups.names.get(i, f"unnamed label {i}") for i in range(1, 256)})
    index = None
    if mask:
        if not Path(mask).is_file():
            raise FileNotFoundError(f"--mask {mask}: no such file")
        index = {row["series_id"]: str(mask)}
    else:
        totalsegmentator_ready(cfg, groups)
    result = segment_series(row, cfg, groups, str(work), str(work), index)
    if "rejected" in result:
        raise _refused(result["rejected"])
    return result["rows"], cfg


def anatomy_status(anatomies: list[str], rows: list[dict], groups, usability: dict) -> dict[str, dict]:
    """Per model anatomy: usable / absent / fov_cut, as train_fvlm's load_records decides it."""
    measured = {r["anatomy"]: r for r in rows}
    keep = set(usability["keep_fov_cut"])
    out = {}
    for a in anatomies:
        r = measured.get(a)
        entry = {"status": "absent", "detail": None, "label_ids": [], "voxels": 0, "volume_ml": 0.0,
                 "edge_faces": ""}
        if a not in groups.ids:
            entry["detail"] = ("no label ids for it in the label map"
                               + (f" (TotalSegmentator task {groups.other_task[a][0]!r}, not "
                                  f"{groups.task!r})" if a in groups.other_task else ""))
        elif r is None:
            entry["detail"] = "not segmented: no voxel of its labels in the mask"
        else:
            entry.update(label_ids=[int(i) for i in r["label_ids"]], voxels=int(r["voxels"]),
                         volume_ml=float(r["volume_ml"]), edge_faces=r["edge_faces"])
            cut = bool(r["touches_fov_edge"]) and a not in keep
            if r["voxels"] < usability["min_voxels"]:
                entry["detail"] = f"{r['voxels']} voxels, under train_fvlm.min_voxels {usability['min_voxels']}"
            elif usability["drop_fov_cut"] and cut:
                entry.update(status="fov_cut", detail=f"cut by the field of view (touches {r['edge_faces']})")
            else:
                entry["status"] = "usable"
        out[a] = entry
    return out
