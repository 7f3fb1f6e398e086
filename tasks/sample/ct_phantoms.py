"""Synthetic CT studies for the sample: labelled phantoms with known findings.

Each study is a 64x64x48 chest-abdomen phantom (about 6 x 6 x 8 mm voxels) built
in RAS+ voxel space from ellipsoids and tubes (ct_body). Labels are TotalSegmentator
v2 `total` class ids (ct_labels), so the `provided` segmentation backend and the real
model speak the same ids.

Findings from the shared catalogue are drawn into known anatomies with an
appearance a model can learn (a nodule is a dense sphere in a lung lobe, emphysema
a texture of holes, cardiomegaly a bigger heart, ...); per anatomy about
`normal_fraction` of the studies are normal.

Written to data/sample/ct/:
  input/<case>/...            DICOM series (file names and nesting vary; some JPEG 2000,
                              some enhanced multi-frame, one with gantry tilt)
  input/<case>.nii.gz + .json NIfTI studies with a BIDS-style sidecar of identifiers
  masks/<SeriesInstanceUID>.nii.gz   label maps (uint8, TotalSegmentator v2 ids)
  studies.csv                 one row per study: raw identifiers (PatientID,
                              StudyInstanceUID, SeriesInstanceUID, AccessionNumber),
                              format, expected outcome, ground-truth findings
Plus the broken studies (truncated file, MR series, mixed matrix sizes, a missing
slice, a single slice), listed in studies.csv with the reason they must be rejected.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from tasks.ct.nifti_io import write_nifti
from tasks.sample.ct_body import build_phantom
from tasks.sample.ct_dicom import write_broken, write_dicom_series, write_enhanced
from tasks.sample.ct_nifti import write_nifti_study
from tasks.sample.ct_plan import FINDINGS_BY_ANATOMY, ct_settings, shards, study_specs

OUTPUT_SUBDIR = "ct"

CSV_COLUMNS = ["case", "PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber",
               "StudyDate", "sex", "age", "format", "orientation", "contrast", "path", "mask", "expected",
               "findings", "normal_anatomies", "findings_json"]


def plan(params: dict) -> list[list[dict]]:
    return shards(params)


def generate_shard(params: dict, shard: list[dict]) -> dict:
    cfg = ct_settings(params)
    seed = int(params["sample"]["seed"])
    root = Path(params["sample"]["output_dir"]) / OUTPUT_SUBDIR
    input_dir, mask_dir = root / "input", root / "masks"
    counts = {"items": 0, "studies": 0, "dicom_series": 0, "jpeg2000_series": 0, "enhanced_series": 0,
              "tilted_series": 0, "nifti_studies": 0, "broken_studies": 0, "findings": 0}
    parts = root / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    for spec in shard:
        ph = build_phantom(spec, cfg)
        counts["items"] += 1
        (parts / f"{spec['case']}.json").write_text(json.dumps(ph.findings, sort_keys=True))
        if spec.get("broken"):
            write_broken(ph, spec, input_dir / spec["case"], seed)
            counts["broken_studies"] += 1
            continue
        counts["studies"] += 1
        counts["findings"] += len(ph.findings)
        mask_path = mask_dir / f"{spec['SeriesInstanceUID']}.nii.gz"
        fmt = spec["format"]
        if fmt == "nifti":
            write_nifti_study(ph, spec, input_dir, mask_path)
            counts["nifti_studies"] += 1
            continue
        write_nifti(ph.labels, ph.affine, mask_path)
        case_dir = input_dir / spec["case"]
        if fmt == "dicom-enhanced":
            write_enhanced(ph, spec, case_dir, seed)
            counts["enhanced_series"] += 1
        elif fmt == "dicom-tilt":
            write_dicom_series(ph, spec, case_dir, seed, tilt_vox=0.125)
            counts["tilted_series"] += 1
        else:
            syntax = JPEG2000Lossless if fmt == "dicom-j2k" else ExplicitVRLittleEndian
            write_dicom_series(ph, spec, case_dir, seed, syntax=syntax)
            counts["jpeg2000_series"] += fmt == "dicom-j2k"
        counts["dicom_series"] += 1
    return counts


def finalize(params: dict, results: list[dict]) -> dict:
    """studies.csv: the ground truth another engineer writes reports from."""
    root = Path(params["sample"]["output_dir"]) / OUTPUT_SUBDIR
    rows = []
    parts = root / ".parts"
    for spec in study_specs(params):
        # findings with the locations the generator settled on (written by generate_shard)
        findings = [] if spec.get("broken") else json.loads((parts / f"{spec['case']}.json").read_text())
        fmt = spec["format"]
        path = f"input/{spec['case']}.nii.gz" if fmt == "nifti" else f"input/{spec['case']}/"
        abnormal = {f["anatomy"] for f in findings}
        rows.append({
            "case": spec["case"], "PatientID": spec["PatientID"], "PatientName": spec["PatientName"],
            "StudyInstanceUID": spec["StudyInstanceUID"], "SeriesInstanceUID": spec["SeriesInstanceUID"],
            "AccessionNumber": spec["AccessionNumber"], "StudyDate": spec["StudyDate"], "sex": spec["sex"],
            "age": spec["age"], "format": fmt, "orientation": spec["orientation"],
            "contrast": int(spec["contrast"]), "path": path,
            "mask": "" if spec.get("broken") else f"masks/{spec['SeriesInstanceUID']}.nii.gz",
            "expected": spec["expected"],
            "findings": ";".join(f["finding"] for f in findings),
            "normal_anatomies": "" if spec.get("broken") else ";".join(
                a for a in FINDINGS_BY_ANATOMY if a not in abnormal),
            "findings_json": json.dumps(findings, sort_keys=True),
        })
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "studies.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    shutil.rmtree(parts, ignore_errors=True)
    return {"patients": len({r["PatientID"] for r in rows if r["expected"] == "ok"})}
