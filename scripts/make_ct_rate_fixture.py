"""Write a CT-RATE-shaped folder from the sample's phantoms, with CT-RATE's traps and broken rows.

    python scripts/make_ct_rate_fixture.py OUT_DIR [--patients N] [--seed S]

Layout (as the Hugging Face dataset ibrahimhamamci/CT-RATE ships it):
  OUT/dataset/{train,valid}/<split>_<p>/<split>_<p>_<scan>/<split>_<p>_<scan>_<recon>.nii.gz
  OUT/dataset/metadata/{train,validation}_metadata.csv
  OUT/dataset/radiology_text_reports/{train,validation}_reports.csv
  OUT/dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
  OUT/masks/<split>_<p>_<scan>_<recon>.nii.gz    label maps (TotalSegmentator v2 ids), for segment's `provided`
  OUT/manifest.json                              what was written and what each volume and row must become

Each patient has scans a and b, each one phantom (tasks/sample/ct_body) with its own findings
(tasks/sample/ct_plan), report (tasks/sample/reports) and CT-RATE labels (tasks/sample/ct_rate_labels).
Volumes hold stored values (HU + 1024) with RescaleSlope 1 / RescaleIntercept -1024 in the metadata,
in LPS voxel order (ImageOrientationPatient [1, 0, 0, 0, 1, 0]). Traps, one scan each: three
volumes already in HU under the same metadata (CT-CLIP issue #50), two with an identity affine
(the header has no geometry: the metadata's must be used), one whose header z spacing contradicts
the metadata by 30 %, one scan with a second, thinner reconstruction, one volume without a report.
Broken rows: a volume without a metadata row (its own scan c), a report row and a label row for
volumes that do not exist. Same arguments, same bytes.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from any folder

import numpy as np  # noqa: E402
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform  # noqa: E402

from tasks.ct.nifti_io import write_nifti  # noqa: E402
from tasks.sample.ct_body import build_phantom  # noqa: E402
from tasks.sample.ct_plan import study_specs  # noqa: E402
from tasks.sample.ct_rate_labels import CT_RATE_LABELS, ct_rate_labels  # noqa: E402
from tasks.sample.reports import report_sections  # noqa: E402
from tasks.schema.literature import SampleCt  # noqa: E402

FORMAT = "ct_rate_fixture/1"
SHAPE = (64, 64, 48)
XY_MM, Z_MM = 6.0, 8.0          # nominal phantom spacing; each scan varies it by up to 5 %
STORED_OFFSET = 1024            # stored = HU + 1024, so RescaleIntercept = -1024
CONTRADICTION = 1.3             # the contradicting header's z spacing over the metadata's
TRAPS = ["already_hu"] * 3 + ["identity_affine"] * 2 + ["spacing_contradiction", "two_reconstructions",
                                                          "no_report"]
MIN_PATIENTS = 5                # the traps take 8 scans; keep at least two plain ones
NOT_GIVEN = "Not given."
SPLIT_FILES = {"train": "train", "valid": "validation"}   # metadata / reports file prefix per split
SCANNERS = [("SIEMENS", "SOMATOM Definition Edge"), ("PHILIPS", "Ingenuity CT"),
            ("GE MEDICAL SYSTEMS", "Revolution EVO"), ("TOSHIBA", "Aquilion Prime")]
METADATA_COLUMNS = ["VolumeName", "Manufacturer", "SeriesDescription", "ManufacturerModelName", "PatientSex",
                    "PatientAge", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
                    "XYSpacing", "RescaleIntercept", "RescaleSlope", "RescaleType", "NumberofSlices", "ZSpacing",
                    "StudyDate"]
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
LABEL_COLUMNS = ["VolumeName", *CT_RATE_LABELS]
ORIENTATION = "LPS"           # voxel order of every volume, as DICOM slices stack
IOP = "[1, 0, 0, 0, 1, 0]"    # its ImageOrientationPatient: axis 0 towards the patient's left, axis 1 posterior

# What each broken row or trap must end as: (stage, reason) where a stage rejects it (the
# codes of tasks/ct/ct_rate.py, tasks/reports/stage.py and tasks/training/fvlm_data.py).
NO_METADATA = ("ct_convert", "no_metadata_row")
NOT_SELECTED = ("ct_convert", "reconstruction_not_selected")
CONTRADICTION_REJECTED = ("ct_convert", "spacing_contradiction")   # with ct_convert.ct_rate.spacing_conflict=reject
SAME_REPORT = ("split_reports", "same_study_reconstruction")
NO_REPORT = ("train_fvlm", "no_descriptions")
REPORT_WITHOUT_VOLUME = ("train_fvlm", "report_without_volume")
LABEL_WITHOUT_VOLUME = ("train_fvlm", "label_without_volume")
EXTRA_SERIES = ("train_fvlm", "extra_series")                      # with reconstructions=all
POLICIES = ("first", "thinnest", "all")                            # ct_convert.ct_rate.reconstructions


def _specs(n_patients: int, seed: int) -> list[dict]:
    """Two phantom specs per patient, then three more: the no-metadata scan, the orphan report
    and the orphan label row (findings dealt by the sample's planner, so every label has positives)."""
    ct = SampleCt(n_patients=n_patients, n_studies=2 * n_patients + 3, nifti_fraction=1.0, jpeg2000_fraction=0.0,
                  enhanced_studies=0, tilted_studies=0, broken_inputs=False).model_dump()
    return study_specs({"sample": {"seed": seed, "ct": ct}})


def _num(value: float) -> str:
    """A number as CT-RATE's string lists write it: 0 not -0.0, 186.5, 1."""
    value = round(float(value), 4) + 0.0
    return str(int(value)) if value == int(value) else repr(value)


def _reoriented(data: np.ndarray, affine: np.ndarray, code: str) -> tuple[np.ndarray, np.ndarray]:
    """RAS+ (data, affine) in the voxel order `code` (flips and transposes only)."""
    t = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(code)))
    return apply_orientation(data, t), affine @ inv_ornt_aff(t, data.shape)


def _thinner(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy at half the slice spacing: each slice becomes two (RAS+ input)."""
    thin = affine.copy()
    thin[:3, 2] /= 2
    thin[:3, 3] -= affine[:3, 2] / 4  # thick slice k covers the two thin slices at its centre -+ dz/4
    return np.repeat(data, 2, axis=2), thin


def _plan(n_patients: int, seed: int) -> tuple[list[dict], list[dict], dict]:
    """(scans with their volumes, the specs of the orphan report and label rows, patient counts)."""
    if n_patients < MIN_PATIENTS:
        raise ValueError(f"--patients must be at least {MIN_PATIENTS} (the traps take {len(TRAPS)} scans)")
    specs = _specs(n_patients, seed)
    n_valid = max(1, round(n_patients / 4))
    n_train = n_patients - n_valid
    rng = np.random.default_rng([seed, 7301])
    traps = dict(zip((int(i) for i in rng.permutation(2 * n_patients)), TRAPS))
    scans = []
    for index, spec in enumerate(specs[:2 * n_patients + 1]):
        p = min(index // 2, n_patients - 1)  # the extra scan (c) is the last patient's
        split, number = ("train", p + 1) if p < n_train else ("valid", p - n_train + 1)
        first = specs[2 * p]  # a patient's sex and age are those of its first scan
        letter = "abc"[index - 2 * p]
        trap = "no_metadata_row" if index == 2 * n_patients else traps.get(index, "none")
        xy = round(XY_MM * spec["scale"][0], 2)
        z = round(Z_MM * spec["scale"][2] * 4) / 4
        manufacturer, model = SCANNERS[int(rng.integers(len(SCANNERS)))]
        study = f"{split}_{number}_{letter}"
        scans.append({"spec": spec, "split": split, "patient": f"{split}_{number}", "study": study,
                      "trap": trap, "xy": xy, "z": z, "sex": first["sex"],
                      "age": first["age"], "manufacturer": manufacturer, "model": model,
                      "reconstructions": [1, 2] if trap == "two_reconstructions" else [1]})
    plain = [s for s in scans if s["trap"] == "none"]
    plain[0]["dtype"] = "uint16"  # one volume stored unsigned, as some exports do
    orphans = [{"spec": specs[-2], "volume_name": f"train_{n_train + 1}_a_1.nii.gz", "split": "train"},
               {"spec": specs[-1], "volume_name": f"valid_{n_valid + 1}_a_1.nii.gz", "split": "valid"}]
    return scans, orphans, {"train": n_train, "valid": n_valid}


def _write_volume(out: Path, scan: dict, recon: int, data_ras, labels_ras, affine_ras) -> dict:
    """One reconstruction's volume, mask and metadata row; returns its manifest entry."""
    trap = scan["trap"]
    name = f"{scan['study']}_{recon}"
    if recon == 2:  # the thin reconstruction of the two_reconstructions scan
        (data_ras, thin_affine), (labels_ras, _) = _thinner(data_ras, affine_ras), _thinner(labels_ras, affine_ras)
        affine_ras = thin_affine
    data, true_affine = _reoriented(data_ras, affine_ras, ORIENTATION)
    labels, _ = _reoriented(labels_ras, affine_ras, ORIENTATION)
    header_affine = true_affine.copy()
    if trap == "identity_affine":  # no geometry in the header: the metadata's spacing, IOP and IPP describe it
        header_affine = np.eye(4)
    elif trap == "spacing_contradiction":
        header_affine[:3, 2] *= CONTRADICTION
    stored_hu = trap == "already_hu"
    dtype = np.dtype(scan.get("dtype", "int16"))
    values = data.astype(np.int32) + (0 if stored_hu else STORED_OFFSET)
    rel = Path("dataset") / scan["split"] / scan["patient"] / scan["study"] / f"{name}.nii.gz"
    write_nifti(np.ascontiguousarray(values.astype(dtype)), header_affine, out / rel)
    mask_rel = Path("masks") / f"{name}.nii.gz"
    write_nifti(np.ascontiguousarray(labels.astype(np.uint8)), true_affine, out / mask_rel)
    spacing = [float(v) for v in np.sqrt((true_affine[:3, :3] ** 2).sum(axis=0))]
    header_spacing = [float(v) for v in np.sqrt((header_affine[:3, :3] ** 2).sum(axis=0))]
    origin_lps = [-true_affine[0, 3], -true_affine[1, 3], true_affine[2, 3]]
    metadata = {
        "VolumeName": f"{name}.nii.gz", "Manufacturer": scan["manufacturer"],
        "SeriesDescription": f"THORAX {_num(spacing[2])} mm", "ManufacturerModelName": scan["model"],
        "PatientSex": scan["sex"], "PatientAge": f"{int(scan['age']):03d}Y",
        "ImagePositionPatient": "[" + ", ".join(_num(v) for v in origin_lps) + "]",
        "ImageOrientationPatient": IOP, "Rows": data.shape[1], "Columns": data.shape[0],
        "XYSpacing": f"[{_num(spacing[0])}, {_num(spacing[1])}]", "RescaleIntercept": -STORED_OFFSET,
        "RescaleSlope": 1, "RescaleType": "HU", "NumberofSlices": data.shape[2], "ZSpacing": repr(spacing[2]),
        "StudyDate": scan["spec"]["StudyDate"],
    }
    return {
        "volume_name": f"{name}.nii.gz", "path": rel.as_posix(), "mask": mask_rel.as_posix(),
        "split": scan["split"], "patient": scan["patient"], "study": scan["study"], "series": name,
        "reconstruction": recon, "trap": trap, "stored": "hu" if stored_hu else "hu+1024", "dtype": dtype.name,
        "orientation": ORIENTATION, "shape": list(data.shape), "spacing_mm": spacing,
        "header_spacing_mm": header_spacing,
        "affine": true_affine.round(6).tolist(),
        "in_metadata": trap != "no_metadata_row", "in_reports": trap != "no_report", "in_labels": True,
        "expected": {  # when ct_convert converts it
            "hu_source": "already_hu" if stored_hu else "rescaled",
            "geometry_source": "metadata" if trap in ("identity_affine", "spacing_contradiction")
            else "header=metadata",
        },
        "_metadata": metadata,
    }


def _report_row(volume_name: str, spec: dict, seed: int) -> dict:
    parts = report_sections(spec, seed)
    return {"VolumeName": volume_name, "ClinicalInformation_EN": parts["history"] or NOT_GIVEN,
            "Technique_EN": parts["technique"] or NOT_GIVEN,
            "Findings_EN": " ".join(text for _, text in parts["findings"]) or NOT_GIVEN,
            "Impressions_EN": parts["impression"] or NOT_GIVEN}


def _volume_key(name: str) -> tuple:
    """train_10_b_2.nii.gz -> ('train', 10, 'b', 2), train_10_b -> ('train', 10, 'b'): patients in number order."""
    split, patient, scan, *recon = name.removesuffix(".nii.gz").split("_")
    return split, int(patient), scan, *(int(r) for r in recon)


def _ct_convert_outcome(volumes: list[dict], policy: str) -> dict:
    """Which volumes ct_convert converts and rejects (and why) under a reconstructions policy."""
    rejected, candidates = {}, {}
    for v in volumes:
        if not v["in_metadata"]:
            rejected[v["volume_name"]] = NO_METADATA[1]
        else:
            candidates.setdefault(v["study"], []).append(v)
    converted = []
    for study in sorted(candidates, key=_volume_key):
        recons = sorted(candidates[study], key=lambda v: v["reconstruction"])
        keep = recons if policy == "all" else [recons[0] if policy == "first" else
                                               min(recons, key=lambda v: (v["spacing_mm"][2], v["reconstruction"]))]
        converted += keep
        rejected.update({v["volume_name"]: NOT_SELECTED[1] for v in recons if v not in keep})
    return {"converted": [v["volume_name"] for v in converted], "rejected": dict(sorted(rejected.items())),
            "hu_source": dict(sorted(Counter(v["expected"]["hu_source"] for v in converted).items())),
            "geometry_source": dict(sorted(Counter(v["expected"]["geometry_source"] for v in converted).items()))}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: _volume_key(r["VolumeName"])))


def make_fixture(out_dir: str | Path, n_patients: int = 16, seed: int = 20261125) -> dict:
    """Write the fixture under out_dir (absent or empty) and return its manifest (also
    written to out_dir/manifest.json, paths relative to out_dir):

    paths      dataset, volumes, masks and the metadata / reports / labels CSVs
    labels     CT-RATE's 18 label columns
    volumes    per file: volume_name, path, mask, split, patient, study, series, reconstruction,
               trap (none, already_hu, identity_affine, spacing_contradiction, two_reconstructions,
               no_report, no_metadata_row), stored (hu+1024 | hu), dtype, orientation, shape,
               spacing_mm (the metadata's, the truth), header_spacing_mm, affine (true, RAS),
               in_metadata / in_reports / in_labels, findings, labels, expected hu_source and
               geometry_source once converted
    studies    per scan: volumes, findings, labels, has_report, has_converted_volume
    broken     per broken row or trap: kind, item (VolumeName), study, stage, reason, note
    expected   ct_convert per reconstructions policy (converted, rejected {volume: reason},
               hu_source and geometry_source counts); with spacing_conflict=reject; split_reports
               (report rows, studies, rejected rows, reference label rows and studies); train_fvlm
               (studies paired, rejected {study, reason}); raw names throughout, not pseudonyms
    counts     patients, scans, volumes, rows per table kind, traps, studies_paired
    files      relative path -> SHA-256 of every file written (manifest.json aside)
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: the fixture is written into an empty folder")
    scans, orphans, patients = _plan(n_patients, seed)
    volumes, studies = [], []
    metadata = {split: [] for split in SPLIT_FILES}
    reports = {split: [] for split in SPLIT_FILES}
    labels = {split: [] for split in SPLIT_FILES}
    for scan in scans:
        spec = dict(scan["spec"], scale=[scan["xy"], scan["xy"], scan["z"]])  # spacing in mm, cfg below is 1 mm
        ph = build_phantom(spec, {"shape": list(SHAPE), "spacing_mm": [1.0, 1.0, 1.0]})
        finding_keys = sorted(f["finding"] for f in ph.findings)
        study_labels = ct_rate_labels(finding_keys)
        names = []
        for recon in scan["reconstructions"]:
            entry = _write_volume(out, scan, recon, ph.hu, ph.labels, ph.affine)
            row = entry.pop("_metadata")
            if entry["in_metadata"]:
                metadata[scan["split"]].append(row)
            if entry["in_reports"]:  # CT-RATE repeats a scan's report on each reconstruction
                reports[scan["split"]].append(_report_row(entry["volume_name"], scan["spec"], seed))
            labels[scan["split"]].append({"VolumeName": entry["volume_name"], **study_labels})
            entry.update(findings=finding_keys, labels=study_labels)
            volumes.append(entry)
            names.append(entry["volume_name"])
        studies.append({"study": scan["study"], "patient": scan["patient"], "split": scan["split"],
                        "volumes": names, "findings": finding_keys, "labels": study_labels,
                        "has_report": scan["trap"] != "no_report",
                        "has_converted_volume": scan["trap"] != "no_metadata_row"})
    report_orphan, label_orphan = orphans
    reports[report_orphan["split"]].append(_report_row(report_orphan["volume_name"], report_orphan["spec"], seed))
    orphan_labels = ct_rate_labels(f["finding"] for f in label_orphan["spec"]["findings"])
    labels[label_orphan["split"]].append({"VolumeName": label_orphan["volume_name"], **orphan_labels})

    tables = {"metadata": [], "reports": [], "labels": []}
    for split, prefix in SPLIT_FILES.items():
        for kind, folder, name, columns, rows in (
                ("metadata", "metadata", f"{prefix}_metadata.csv", METADATA_COLUMNS, metadata[split]),
                ("reports", "radiology_text_reports", f"{prefix}_reports.csv", REPORT_COLUMNS, reports[split]),
                ("labels", "multi_abnormality_labels", f"{split}_predicted_labels.csv", LABEL_COLUMNS, labels[split])):
            rel = Path("dataset") / folder / name
            _write_csv(out / rel, columns, rows)
            tables[kind].append(rel.as_posix())

    by_trap = {v["trap"]: v for v in volumes}
    no_metadata, no_report = by_trap["no_metadata_row"], by_trap["no_report"]
    contradiction, thin = by_trap["spacing_contradiction"], by_trap["two_reconstructions"]
    study_of = {v["volume_name"]: v["study"] for v in volumes}
    orphan_report, orphan_label = report_orphan["volume_name"], label_orphan["volume_name"]
    broken = [
        {"kind": "no_metadata_row", "item": no_metadata["volume_name"], "study": no_metadata["study"],
         "stage": NO_METADATA[0], "reason": NO_METADATA[1],
         "note": "its report and label rows exist: train_fvlm rejects its study's keys as "
                 "report_without_volume and label_without_volume"},
        {"kind": "volume_without_report", "item": no_report["volume_name"], "study": no_report["study"],
         "stage": NO_REPORT[0], "reason": NO_REPORT[1],
         "note": "converted and segmented; no report row, so split_reports gives its study no descriptions"},
        {"kind": "report_without_volume", "item": orphan_report, "study": orphan_report[:-len("_1.nii.gz")],
         "table": tables["reports"][0], "stage": REPORT_WITHOUT_VOLUME[0], "reason": REPORT_WITHOUT_VOLUME[1],
         "note": "split_reports processes it; no volume has its study"},
        {"kind": "label_without_volume", "item": orphan_label, "study": orphan_label[:-len("_1.nii.gz")],
         "table": tables["labels"][1], "stage": LABEL_WITHOUT_VOLUME[0], "reason": LABEL_WITHOUT_VOLUME[1],
         "note": "split_reports reads it as a reference study; no volume has its study"},
        {"kind": "spacing_contradiction", "item": contradiction["volume_name"], "study": contradiction["study"],
         "stage": CONTRADICTION_REJECTED[0], "reason": CONTRADICTION_REJECTED[1],
         "note": f"header z spacing {CONTRADICTION}x the metadata's: converted on the metadata's grid with "
                 "ct_convert.ct_rate.spacing_conflict=metadata (the default), rejected only with =reject"},
    ]
    with_report = {s["study"] for s in studies if s["has_report"]} | {broken[2]["study"]}
    with_volume = {s["study"] for s in studies if s["has_converted_volume"]}
    paired = sorted(with_report & with_volume, key=_volume_key)
    same_report = [v["volume_name"] for v in volumes if v["in_reports"] and v["reconstruction"] > 1]
    expected = {
        "ct_convert": {policy: _ct_convert_outcome(volumes, policy) for policy in POLICIES},
        "ct_convert_spacing_conflict_reject": {contradiction["volume_name"]: CONTRADICTION_REJECTED[1]},
        "split_reports": {
            "report_rows": sum(len(r) for r in reports.values()),
            "studies": sorted(with_report, key=_volume_key),
            "rejected": {name: SAME_REPORT[1] for name in same_report},   # by VolumeName of the row
            "reference_label_rows": sum(len(r) for r in labels.values()),
            "reference_studies": len({study_of.get(r["VolumeName"], r["VolumeName"][:-len("_1.nii.gz")])
                                      for rows in labels.values() for r in rows})},
        "train_fvlm": {  # with ct_convert.ct_rate.reconstructions=first
            "studies_paired": paired,
            "rejected": sorted([
                {"study": no_report["study"], "reason": NO_REPORT[1]},
                {"study": no_metadata["study"], "reason": REPORT_WITHOUT_VOLUME[1]},
                {"study": no_metadata["study"], "reason": LABEL_WITHOUT_VOLUME[1]},
                {"study": broken[2]["study"], "reason": REPORT_WITHOUT_VOLUME[1]},
                {"study": broken[3]["study"], "reason": LABEL_WITHOUT_VOLUME[1]},
            ], key=lambda r: (_volume_key(r["study"]), r["reason"])),
            "with_reconstructions_all": {thin["study"]: EXTRA_SERIES[1]}},
    }
    counts = {
        "patients": n_patients, "scans": len(studies), "volumes": len(volumes),
        "metadata_rows": sum(len(r) for r in metadata.values()), "report_rows": sum(len(r) for r in reports.values()),
        "label_rows": sum(len(r) for r in labels.values()),
        "traps": dict(sorted(Counter(v["trap"] for v in volumes).items())),
        "studies_paired": len(paired),
    }
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest = {
        "format": FORMAT, "seed": seed, "n_patients": n_patients, "patients": patients,
        "paths": {"dataset": "dataset", "volumes": ["dataset/train", "dataset/valid"], "masks": "masks", **tables},
        "labels": CT_RATE_LABELS, "volumes": volumes, "studies": studies, "broken": broken,
        "expected": expected, "counts": counts,
        "files": {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/make_ct_rate_fixture.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (absent or empty)")
    parser.add_argument("--patients", type=int, default=16, help="patients, two scans each (default 16)")
    parser.add_argument("--seed", type=int, default=20261125, help="phantom and plan seed (default 20261125)")
    args = parser.parse_args(argv)
    try:
        manifest = make_fixture(args.out_dir, n_patients=args.patients, seed=args.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"make_ct_rate_fixture: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(manifest["counts"], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
