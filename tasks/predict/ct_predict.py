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

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tasks.predict.ct_input import (CtRefused, anatomy_status, convert_input, segment,
                                    study_hash)
from tasks.predict.ct_overlay import overlay_png
from tasks.predict.ct_settings import (anatomy_groups, check_preprocess, conversion_record, convert_cfg,
                                       finding_words, prompt_pair, usability_settings)
from tasks.common.hashing import sha256_file
from tasks.predict.model_folder import ModelFolder, NotAModelFolder

FORMAT = "medconcept-predict-ct/1"
OUTPUTS = ("ct.json", "overlay.png", "predictions.json")
_TOP = 5


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
    from tasks.evaluate.fvlm_eval import pair_prompts, zero_shot
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
    cfg, conversion_source = convert_cfg(config)

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
                          "config_sha256": sha256_file(Path(folder.path) / "config.json"),
                          "weights_sha256": sha256_file(Path(folder.path) / "model.safetensors"),
                          "anatomies": anatomies, "findings": findings},
                "input": {k: row[k] for k in ("source_format", "n_files", "n_slices_source", "orientation_source",
                                              "slice_thickness", "hu_source", "geometry_source", "notes")}
                | {"shape": [row["shape_x"], row["shape_y"], row["shape_z"]],
                   "spacing_mm": [row["spacing_x"], row["spacing_y"], row["spacing_z"]], "affine": [row["affine"][i:i + 4] for i in range(0, 16, 4)],
                   "hu": {k: row[k] for k in ("hu_min", "hu_max", "hu_mean", "hu_p01", "hu_p50", "hu_p99")},
                   "files_left_out": ignored},
                "conversion": conversion_record(cfg, conversion_source),
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
