"""`medconcept predict` on a CT with an fVLM model folder: a DICOM series folder (or one DICOM
file) or a NIfTI file -> per-anatomy finding probabilities (ct.json), an overlay PNG and a
predictions.json summary.

The study goes through the pipeline's own functions, in the pipeline's order:
1. ct_convert: `tasks.ct.convert` (discover, the DICOM header scan and series grouping,
   convert_dicom_series / convert_nifti), with every check and refusal reason ct_convert has
   (not_ct, single_slice, not_3d, implausible_hu, uneven spacing, ...). The ct_convert settings
   of the model's training data are not in the model folder, so the schema's defaults
   (tasks/schema/ct.py: CtConvertParams) are used, and ct.json records them.
   One input is one series: a folder with several series, with DICOM and NIfTI together, or
   with several NIfTI files is refused (give one). Files that are not DICOM (a README) are
   left out and counted; a DICOM file that cannot be read refuses the series (ct_convert would
   drop that one file and convert the rest: for one study's prediction a missing slice is
   not silently accepted).
2. segment: `tasks.ct.segment_stage.segment_series`, with the user's label map (`mask`: a
   NIfTI on the CT's grid, checked by tasks.ct.provided_backend.load_mask) or TotalSegmentator
   through its Python API (tasks.ct.totalseg_backend; its weights must be installed: without
   them, or without TotalSegmentator, the error asks for a mask). Label ids become anatomies by
   the repository's params.yaml `segment.anatomies` (TotalSegmentator v2 `total` class names),
   or by `mask_labels` ({label value: anatomy}, the model's anatomy keys or display names).
3. fvlm_prepare: `tasks.training.fvlm_prepare_stage.prepare_series` (tasks.training.
   fvlm_tensors: HU windows as channels, the model grid, zyx axes, any-pooled masks, float16),
   with config.json's `preprocess`; then training's dataset (tasks.training.fvlm_data.
   StudyDataset, unaugmented) reads those tensors back, as evaluate does.
4. Which anatomies are scored: as train_fvlm and evaluate_fvlm decide it (load_records):
   absent (not in the label map, or under train_fvlm.min_voxels) or cut by the field of view
   (train_fvlm.drop_fov_cut, keep_fov_cut) carry no probability, with the reason. Those settings
   come from the model folder's lineage.json (the training run's params), else the schema's
   defaults, and ct.json says which.
5. Scores: evaluate_fvlm's zero-shot (tasks.evaluate.fvlm_eval: pair_prompts, zero_shot), the
   softmax of the positive against the negative prompt on the anatomy's embedding, for every
   (usable anatomy, trained finding). The prompt pair is config.json's zero_shot, or the one
   evaluate chose on validation (`tuned_by`: evaluate's fvlm folder, metrics_detail.json
   tuning.chosen; its test AUC per pair is then copied beside each probability). Prompts name
   findings as evaluate does: by split_reports' finding names when `finding_names` gives them
   (anatomy_texts.parquet, or a JSON {finding key: name}), else by the key's words.

No patient name or id, date, UID, file path or DICOM tag other than geometry reaches an
output: the study is named by a hash of the converted voxels and grid ("ct-<16 hex>"), and the
model by the sha256 of its config and weights. A refused input raises CtRefused (a ValueError:
the reason code and the detail) and leaves nothing in `out_dir`; outputs are written in a
hidden sibling folder and moved in when complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from tasks.predict.model_folder import ModelFolder, NotAModelFolder

FORMAT = "medconcept-predict-ct/1"
OUTPUTS = ("ct.json", "overlay.png", "predictions.json")
REPO = Path(__file__).resolve().parent.parent.parent
# ct_convert keys that place or shard a stage's work, not how one series is converted
_LAYOUT_KEYS = ("source", "output_dir", "input_kind", "ct_rate", "files_per_task", "series_per_task")
_USABILITY_KEYS = ("min_voxels", "drop_fov_cut", "keep_fov_cut")
_TOP = 5


class CtRefused(ValueError):
    """The input cannot be scored: `reason` is ct_convert's code (or image_2d, no_input,
    several_series, ...), `detail` the sentence that says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"refused ({reason}): {detail}")
        self.reason, self.detail = reason, detail


# -- settings ------------------------------------------------------------------------------

def convert_cfg() -> dict:
    """ct_convert's cfg as its flow builds it, from the schema's defaults (the training data's
    own settings are not in the model folder)."""
    from tasks.schema.ct import CtConvertParams, DeidParams

    deid = DeidParams()
    return {**CtConvertParams().model_dump(), "source_paths": deid.source_paths, "deid_key": deid.key}


def conversion_record(cfg: dict) -> dict:
    return {"settings": {k: v for k, v in sorted(cfg.items()) if k not in (*_LAYOUT_KEYS, "deid_key", "source_paths")},
            "source": "the schema's ct_convert defaults (tasks/schema/ct.py CtConvertParams): the model folder "
                      "does not record the ct_convert settings of its training data"}


def usability_settings(model_dir: Path) -> tuple[dict, str]:
    """train_fvlm's min_voxels, drop_fov_cut and keep_fov_cut: the training run's (lineage.json)
    when the folder has them, else the schema's defaults."""
    from tasks.schema.training import TrainFvlmParams

    lineage = model_dir / "lineage.json"
    if lineage.is_file():
        try:
            run = json.loads(lineage.read_text(encoding="utf-8"))["params"]["train_fvlm"]
            if all(k in run for k in _USABILITY_KEYS):
                return {k: run[k] for k in _USABILITY_KEYS}, "the model folder's lineage.json (the training run)"
        except (ValueError, KeyError, TypeError):
            pass
    fields = TrainFvlmParams.model_fields
    return ({k: fields[k].default for k in _USABILITY_KEYS},
            "the schema's train_fvlm defaults (the model folder's lineage.json does not give them)")


def check_preprocess(config: dict) -> dict:
    """config.json's preprocess, checked against what this version's fvlm_prepare writes."""
    from tasks.training import fvlm_tensors

    pre = config["preprocess"]
    for key in ("volume_size", "axes", "hu_windows", "mask_pooling"):
        if key not in pre:
            raise NotAModelFolder(f"fVLM config.json preprocess has no {key!r}; retrain with this version of medconcept")
    if pre["axes"] != fvlm_tensors.AXES or pre["mask_pooling"] != fvlm_tensors.MASK_POOLING:
        raise NotAModelFolder(f"fVLM config.json preprocess axes {pre['axes']!r} / mask_pooling {pre['mask_pooling']!r}: "
                              f"this version prepares {fvlm_tensors.AXES!r} / {fvlm_tensors.MASK_POOLING!r}")
    if [int(v) for v in pre["volume_size"]] != [int(v) for v in config["model"]["ct"]["volume_size"]]:
        raise NotAModelFolder(f"fVLM config.json preprocess volume_size {pre['volume_size']} differs from the "
                              f"model's ct.volume_size {config['model']['ct']['volume_size']}")
    return {"volume_size": [int(v) for v in pre["volume_size"]], "axes": pre["axes"],
            "hu_windows": [[float(lo), float(hi)] for lo, hi in pre["hu_windows"]],
            "mask_pooling": pre["mask_pooling"], "volume_dtype": "float16",
            "source": "the model folder's config.json preprocess (as fvlm_prepare made the training tensors)"}


def segment_anatomies() -> dict:
    """segment.anatomies of the repository's params.yaml: anatomy -> TotalSegmentator classes."""
    from tasks.common.params import load_params

    return load_params(REPO / "params.yaml")["segment"]["anatomies"]


def anatomy_groups(anatomies: list[str], names: dict[str, str], mask_labels: str | None):
    """(AnatomyGroups for the model's anatomies, where the label ids came from)."""
    from tasks.ct.anatomy import AnatomyGroups, build_groups
    from tasks.schema.ct import TotalSegmentatorParams

    if mask_labels is None:
        wanted = {a: v for a, v in segment_anatomies().items() if a in set(anatomies)}
        return (build_groups(wanted, task=TotalSegmentatorParams().task),
                "params.yaml segment.anatomies (TotalSegmentator v2 class ids)")
    path = Path(mask_labels)
    if not path.is_file():
        raise FileNotFoundError(f"--mask-labels {path}: no such file")
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--mask-labels {path}: not JSON ({exc})") from None
    if not isinstance(given, dict) or not given:
        raise ValueError(f"--mask-labels {path}: expected a JSON object {{label value: anatomy}}")
    by_word = {a.lower(): a for a in anatomies} | {str(names.get(a, a)).lower(): a for a in anatomies}
    ids: dict[str, set[int]] = {}
    label_names: dict[int, str] = {}
    for value, anatomy in given.items():
        try:
            label = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"--mask-labels: label value {value!r} is not an integer") from None
        if not 1 <= label <= 255:
            raise ValueError(f"--mask-labels: label value {label} outside 1..255 (label maps are uint8)")
        key = by_word.get(str(anatomy).strip().lower())
        if key is None:
            raise ValueError(f"--mask-labels: {anatomy!r} (label {label}) is none of the model's anatomies "
                             f"{list(anatomies)}")
        ids.setdefault(key, set()).add(label)
        label_names[label] = key
    return (AnatomyGroups(task="mask-labels", ids={a: tuple(sorted(v)) for a, v in sorted(ids.items())},
                          other_task={}, names=label_names), "--mask-labels")


def prompt_pair(config: dict, tuned_by: str | None) -> tuple[dict, str, dict]:
    """(prompt pair, where it came from, evaluate's test figures per "finding @ anatomy")."""
    if not tuned_by:
        return dict(config["zero_shot"]), "the model folder's config.json zero_shot", {}
    detail = Path(tuned_by) / "metrics_detail.json"
    if not detail.is_file():
        raise ValueError(f"--tuned-by {tuned_by}: no metrics_detail.json (evaluate's fvlm folder)")
    record = json.loads(detail.read_text(encoding="utf-8"))
    chosen = (record.get("tuning") or {}).get("chosen") or {}
    if not {"positive", "negative"} <= set(chosen) or "pairs_evaluated" not in record:
        raise ValueError(f"--tuned-by {tuned_by}: not evaluate's fvlm folder (no chosen prompt pair)")
    auc, support = record.get("zero_shot_auc") or {}, record.get("zero_shot_support") or {}
    tested = {k: {"test_auc": auc[k], "test_support": support.get(k)} for k in sorted(auc)}
    return ({"positive": chosen["positive"], "negative": chosen["negative"]},
            "evaluate's choice on the validation studies (--tuned-by: metrics_detail.json tuning.chosen)", tested)


def finding_words(finding_names: str | None) -> tuple[dict[str, str], str]:
    """finding key -> the name evaluate puts in its prompts."""
    if not finding_names:
        return {}, "the finding keys' words (no --finding-names: evaluate uses split_reports' names where it has them)"
    path = Path(finding_names)
    if not path.is_file():
        raise FileNotFoundError(f"--finding-names {path}: no such file")
    if path.suffix == ".parquet":
        from tasks.evaluate.fvlm_eval import finding_names as names_of

        return names_of(path), "--finding-names: split_reports' anatomy_texts (as evaluate_fvlm reads them)"
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--finding-names {path}: neither anatomy_texts.parquet nor JSON ({exc})") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise ValueError(f"--finding-names {path}: expected a JSON object {{finding key: name}}")
    return {str(k): v for k, v in names.items()}, "--finding-names JSON"


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


# -- 3.-5. tensors and scores --------------------------------------------------------------

def study_dataset(row: dict, rows: list[dict], status: dict, folder: ModelFolder, preprocess: dict, work: Path):
    """fvlm_prepare's tensors of the series read back through training's dataset (one study)."""
    from tasks.training import fvlm_data, fvlm_prepare_stage
    from tasks.common.rejection import Rejected

    anatomies = list(folder.config["model"]["anatomies"])
    wanted = set(anatomies)
    labels = {r["anatomy"]: sorted(int(i) for i in r["label_ids"] or []) for r in rows if r["anatomy"] in wanted}
    cfg = {"grid": None, "model_grid": preprocess["volume_size"], "anatomies": anatomies,
           "hu_windows": preprocess["hu_windows"], "studies": str(work / "studies.parquet"),
           "labels_dir": str(work / "labels")}
    try:
        prepared = fvlm_prepare_stage.prepare_series(row, labels, cfg, work)
    except Rejected as exc:
        raise CtRefused(exc.reason, exc.detail) from None
    # load_records: a mask channel for each anatomy with enough voxels; usable unless cut
    present = {a: s for a, s in status.items() if s["status"] in ("usable", "fov_cut")}
    record = fvlm_data.StudyRecord(study_id="study", patient_id="patient", series_id=row["series_id"],
                                   tensors=work / prepared["tensors"],
                                   mask_index={a: anatomies.index(a) for a in present},
                                   usable={a: s["status"] == "usable" for a, s in present.items()})
    size = tuple(preprocess["volume_size"])
    return fvlm_data.StudyDataset([record], anatomies, {}, folder.tokenizer, size, preprocess["hu_windows"], None)


def zero_shot(model, dataset, tokenizer, positives: list[str], negatives: list[str], index: list[int]) -> np.ndarray:
    """evaluate_fvlm's zero-shot scores; on another device than the CPU the same call with the
    tensors moved there."""
    import torch

    from tasks.evaluate.fvlm_eval import zero_shot as evaluate_zero_shot

    device = next(model.parameters()).device
    if device.type == "cpu" or not positives:
        return evaluate_zero_shot(model, dataset, tokenizer, positives, negatives, index)
    pe, ne = tokenizer.encode(positives), tokenizer.encode(negatives)
    item = dataset.get(0, -1)
    with torch.no_grad():
        scores = model.zero_shot_scores(item["volume"][None].to(device), item["masks"][None].to(device),
                                        pe["input_ids"].to(device), pe["attention_mask"].to(device),
                                        ne["input_ids"].to(device), ne["attention_mask"].to(device),
                                        torch.tensor(index, dtype=torch.long, device=device))
    return scores.cpu().numpy().astype(float)


# -- outputs -------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    from tasks.common.hashing import sha256_file

    return sha256_file(path)


def overlay_png(volume: np.ndarray, labels: np.ndarray, affine: np.ndarray, groups, anatomies: list[str],
                names: dict[str, str], lines: dict[str, str], status: dict, path: Path, height_px: int = 200) -> None:
    """Three axial slices and one coronal slice through the labelled region, anatomy masks in
    colour (radiological view: the patient's right on the left), and per anatomy its top
    probability (or why it has none) in the anatomy's colour."""
    from PIL import Image, ImageDraw, ImageFont

    from tasks.ct.nifti_io import spacing
    from tasks.ct.overlays import _panel, anatomy_colours

    colours = anatomy_colours(anatomies)
    lut = np.zeros((256, 3), np.float32)
    for a, ids in groups.ids.items():
        for i in ids:
            if a in colours and i < 256:
                lut[i] = colours[a]
    shown = np.isin(labels, [i for a, ids in groups.ids.items() if a in colours for i in ids])
    sx, sy, sz = spacing(affine)
    if shown.any():
        where = np.argwhere(shown)
        lo, hi, centre = where.min(0), where.max(0), where.mean(0).astype(int)
    else:
        lo, hi, centre = np.zeros(3, int), np.array(volume.shape) - 1, np.array(volume.shape) // 2
    zs = sorted({int(round(lo[2] + f * (hi[2] - lo[2]))) for f in (0.25, 0.5, 0.75)})
    cy = int(centre[1])

    def panel(hu2d, lab2d, pixel_mm):
        # a slab (few slices) is drawn lower rather than wider than 1.5 x height_px
        w_mm, h_mm = hu2d.shape[0] * pixel_mm[0], hu2d.shape[1] * pixel_mm[1]
        return _panel(hu2d, lab2d, lut, 0.45, pixel_mm, max(16, min(height_px, int(1.5 * height_px * h_mm / w_mm))))

    panels = [panel(volume[::-1, :, z], labels[::-1, :, z], (sx, sy)) for z in zs]
    panels.append(panel(volume[::-1, cy, :], labels[::-1, cy, :], (sx, sz)))
    font = ImageFont.load_default()
    row_h = 13
    width = max(sum(p.width for p in panels) + 4 * (len(panels) - 1), 420)
    canvas = Image.new("RGB", (width, height_px + 18 + row_h * (len(anatomies) + 1)), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for n, p in enumerate(panels):
        canvas.paste(p, (x, 0))
        draw.text((x + 3, 2), "coronal" if n == len(panels) - 1 else f"axial {n + 1}", fill=(255, 255, 0), font=font)
        x += p.width + 4
    y = height_px + 6
    draw.text((4, y), "anatomy: top finding probability (zero-shot, per anatomy)", fill=(255, 255, 255), font=font)
    for a in anatomies:
        y += row_h
        colour = tuple(colours[a]) if status[a]["status"] == "usable" else (150, 150, 150)
        draw.text((4, y), f"{names.get(a, a)}: {lines[a]}", fill=colour, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=False)


def _write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _place(staging: Path, out: Path) -> None:
    """Move the finished outputs into `out` (each file by one rename)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        os.replace(staging / name, out / name)


def predict_ct(folder: ModelFolder, input_path: str | Path, out_dir: str | Path, mask: str | None = None,
               mask_labels: str | None = None, segment_device: str = "cpu", tuned_by: str | None = None,
               finding_names: str | None = None) -> dict:
    """Writes <out>/ct.json, <out>/overlay.png and <out>/predictions.json for one CT; returns
    the latter. Raises CtRefused (a ValueError) for an input ct_convert or segment would reject,
    NotAModelFolder for a model folder that is not fVLM, FileNotFoundError for a missing path."""
    from tasks.ct.nifti_io import read_nifti
    from tasks.evaluate.fvlm_eval import pair_prompts
    from tasks.training.fvlm_tensors import nifti_array

    if folder.kind != "fvlm":
        raise NotAModelFolder(f"model folder {folder.path} holds a {folder.kind} model; a CT needs an fVLM model "
                              "(train_fvlm's output_dir)")
    if mask_labels and not mask:
        raise ValueError("--mask-labels names the values of a --mask label map: give --mask too")
    config = folder.config
    anatomies = list(config["model"]["anatomies"])
    display = {a: config["anatomy_names"].get(a, a) for a in anatomies}
    findings = sorted(config["findings"])
    preprocess = check_preprocess(config)
    usability, usability_source = usability_settings(Path(folder.path))
    prompts, prompts_source, tested = prompt_pair(config, tuned_by)
    words, words_source = finding_words(finding_names)
    groups, labels_source = anatomy_groups(anatomies, display, mask_labels)
    cfg = convert_cfg()

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="medconcept-predict-ct-") as tmp:
            work = Path(tmp)
            row, ignored = convert_input(input_path, cfg, work)
            rows, seg_cfg = segment(row, work, groups, mask, segment_device)
            status = anatomy_status(anatomies, rows, groups, usability)
            dataset = study_dataset(row, rows, status, folder, preprocess, work)
            a_index = {a: i for i, a in enumerate(anatomies)}
            pairs = [(a, f) for a in anatomies if status[a]["status"] == "usable" for f in findings]
            positives, negatives = pair_prompts(pairs, prompts, words)
            scores = zero_shot(folder.model, dataset, folder.tokenizer, positives, negatives,
                               [a_index[a] for a, _ in pairs])[0] if pairs else np.zeros(0)
            grid_voxels = dataset.get(0, -1)["masks"].reshape(len(anatomies), -1).sum(1).tolist()
            img = read_nifti(work / row["volume"])
            volume, affine = nifti_array(img), img.affine
            labels = np.asanyarray(read_nifti(work / "labels" / f"{row['series_id']}.nii.gz").dataobj)
            named = {i for ids in groups.ids.values() for i in ids}
            unnamed = sorted(int(v) for v in np.unique(labels) if v and int(v) not in named) \
                if groups.task == "mask-labels" else []
            study = study_hash(volume, affine)

            probability = {pair: float(p) for pair, p in zip(pairs, scores)}
            per_anatomy, lines, tops = [], {}, []
            for a in anatomies:
                entry = {"anatomy": a, "name": display[a], **status[a], "grid_voxels": int(grid_voxels[a_index[a]])}
                if status[a]["status"] != "usable":
                    entry["findings"], entry["top"] = None, None
                    lines[a] = f"{status[a]['status']} ({status[a]['detail']})"
                    per_anatomy.append(entry)
                    continue
                scored = []
                for f in findings:
                    item = {"finding": f, "name": words.get(f, f.replace("_", " ")), "probability": probability[(a, f)]}
                    if tested:
                        item.update(tested.get(f"{f} @ {a}") or {"test_auc": None, "test_support": None})
                    scored.append(item)
                # the top among the pairs evaluate scored on test when they are known, else among all
                pool = [s for s in scored if s.get("test_auc") is not None] if tested else scored
                entry["findings"], entry["top"] = scored, None
                if pool:
                    top = max(pool, key=lambda s: s["probability"])
                    entry["top"] = {"finding": top["finding"], "probability": top["probability"]}
                    lines[a] = f"{top['name']} {top['probability']:.2f}"
                    tops.append({"anatomy": a, **entry["top"]})
                else:
                    lines[a] = "no finding of this anatomy was scored on test by evaluate (see ct.json)"
                per_anatomy.append(entry)

            record = {
                "format": FORMAT,
                "study": study,
                "model": {"kind": folder.kind, "preset": config.get("preset"),
                          "config_sha256": _sha256(Path(folder.path) / "config.json"),
                          "weights_sha256": _sha256(Path(folder.path) / "model.safetensors"),
                          "anatomies": anatomies, "findings": findings},
                "input": {k: row[k] for k in ("source_format", "n_files", "n_slices_source", "orientation_source",
                                              "slice_thickness", "hu_source", "geometry_source", "notes")}
                | {"shape": [row["shape_x"], row["shape_y"], row["shape_z"]],
                   "spacing_mm": [row["spacing_x"], row["spacing_y"], row["spacing_z"]], "affine": [row["affine"][i:i + 4] for i in range(0, 16, 4)],
                   "hu": {k: row[k] for k in ("hu_min", "hu_max", "hu_mean", "hu_p01", "hu_p50", "hu_p99")},
                   "files_left_out": ignored},
                "conversion": conversion_record(cfg),
                "segmentation": {"backend": seg_cfg["backend"], "label_map": labels_source,
                                 **({"label_values_not_named": unnamed} if groups.task == "mask-labels" else {}),
                                 "geometry_tolerance_mm": seg_cfg["geometry_tolerance_mm"],
                                 **({"totalsegmentator": seg_cfg["totalsegmentator"]}
                                    if seg_cfg["backend"] == "totalsegmentator" else {})},
                "preprocess": preprocess,
                "usability": {**usability, "source": usability_source},
                "scoring": {"prompts": prompts, "prompts_source": prompts_source, "finding_names": words_source,
                            "probability": "evaluate_fvlm's zero-shot: softmax of the positive against the negative "
                                           "prompt on the anatomy's embedding (tasks.evaluate.fvlm_eval.zero_shot)",
                            "pairs_scored": len(pairs)},
                "anatomies": per_anatomy,
            }
            counts = {s: sum(status[a]["status"] == s for a in anatomies) for s in ("usable", "absent", "fov_cut")}
            summary = {"model": folder.kind, "study": study, "input_format": row["source_format"],
                       "outputs": list(OUTPUTS[:2]), "anatomies": counts, "pairs_scored": len(pairs),
                       "top": sorted(tops, key=lambda t: -t["probability"])[:_TOP],
                       "files_left_out": ignored, "refused": []}
            _write_json(record, staging / "ct.json")
            overlay_png(volume, labels, affine, groups, anatomies, display, lines, status, staging / "overlay.png")
            _write_json(summary, staging / "predictions.json")
        _place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
