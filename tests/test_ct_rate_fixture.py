"""The CT-RATE-shaped fixture (scripts/make_ct_rate_fixture.py): layout, tables, stored values,
traps, broken rows, labels against the phantoms' truth, determinism."""
from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tasks.ct.ct_rate_names import parse_volume_name
from tasks.sample.ct_rate_labels import CT_RATE_LABELS, ct_rate_labels

# loaded by path: scripts/ is no package (and scispacy installs a top-level `scripts` of its own)
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_ct_rate_fixture.py"
_spec = importlib.util.spec_from_file_location("make_ct_rate_fixture", SCRIPT)
make_ct_rate_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_ct_rate_fixture)
main, make_fixture = make_ct_rate_fixture.main, make_ct_rate_fixture.make_fixture

PATIENTS, SEED = 5, 11
METADATA_COLUMNS = {"VolumeName", "Manufacturer", "ManufacturerModelName", "PatientSex", "PatientAge", "XYSpacing",
                    "ZSpacing", "RescaleIntercept", "RescaleSlope", "NumberofSlices", "ImageOrientationPatient"}
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct_rate")
    return root, make_fixture(root, n_patients=PATIENTS, seed=SEED)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def _table(root, manifest, kind):
    rows, columns = {}, None
    for rel in manifest["paths"][kind]:
        columns, found = _csv(root / rel)
        rows.update({r["VolumeName"]: r for r in found})
    return columns, rows


def test_layout_follows_ct_rate(fixture):
    root, manifest = fixture
    volumes = manifest["volumes"]
    assert 10 <= len(volumes) <= 14
    assert {v["split"] for v in volumes} == {"train", "valid"}
    for v in volumes:
        name = parse_volume_name(v["volume_name"])
        assert v["path"] == f"dataset/{name.split}/{name.patient}/{name.study}/{name.series}.nii.gz"
        assert (root / v["path"]).is_file()
        assert v["mask"] == f"masks/{name.series}.nii.gz" and (root / v["mask"]).is_file()
    on_disk = sorted(p.relative_to(root).as_posix() for p in (root / "dataset").rglob("*.nii.gz"))
    assert on_disk == sorted(v["path"] for v in volumes)
    assert manifest["paths"]["metadata"] == ["dataset/metadata/train_metadata.csv",
                                             "dataset/metadata/validation_metadata.csv"]
    assert manifest["paths"]["reports"] == ["dataset/radiology_text_reports/train_reports.csv",
                                            "dataset/radiology_text_reports/validation_reports.csv"]
    assert manifest["paths"]["labels"] == ["dataset/multi_abnormality_labels/train_predicted_labels.csv",
                                           "dataset/multi_abnormality_labels/valid_predicted_labels.csv"]


def test_tables_have_ct_rate_columns_and_formats(fixture):
    root, manifest = fixture
    columns, metadata = _table(root, manifest, "metadata")
    assert METADATA_COLUMNS <= set(columns) and columns[0] == "VolumeName"
    for row in metadata.values():
        assert re.fullmatch(r"\[\d+(\.\d+)?, \d+(\.\d+)?\]", row["XYSpacing"]), row["XYSpacing"]
        assert row["ImageOrientationPatient"] == "[1, 0, 0, 0, 1, 0]"
        assert re.fullmatch(r"\d{3}Y", row["PatientAge"]) and row["PatientSex"] in ("F", "M")
        assert (float(row["RescaleSlope"]), float(row["RescaleIntercept"])) == (1.0, -1024.0)
    columns, reports = _table(root, manifest, "reports")
    assert columns == REPORT_COLUMNS
    assert all(r[c].strip() for r in reports.values() for c in REPORT_COLUMNS)  # empty is written "Not given."
    assert any(r["ClinicalInformation_EN"] == "Not given." for r in reports.values())
    columns, labels = _table(root, manifest, "labels")
    assert columns == ["VolumeName", *CT_RATE_LABELS]
    assert {r[c] for r in labels.values() for c in CT_RATE_LABELS} <= {"0", "1"}
    for path in manifest["paths"]["metadata"] + manifest["paths"]["reports"] + manifest["paths"]["labels"]:
        names = [r["VolumeName"] for r in _csv(root / path)[1]]
        assert len(names) == len(set(names))
        split = "valid" if "valid" in path else "train"
        assert all(parse_volume_name(n).split == split for n in names), path


def test_stored_values_and_geometry_traps(fixture):
    root, manifest = fixture
    _, metadata = _table(root, manifest, "metadata")
    traps = {}
    for v in manifest["volumes"]:
        traps.setdefault(v["trap"], []).append(v)
        img = nib.load(root / v["path"])
        stored = np.asarray(img.dataobj.get_unscaled())
        inter = float(img.header["scl_inter"])
        assert np.isnan(img.header["scl_slope"]) and (np.isnan(inter) or inter == 0)  # no header scaling
        p01 = float(np.percentile(stored, 1))
        if v["trap"] == "already_hu":
            assert -1100 < p01 < -900, v["volume_name"]  # already HU under the same slope/intercept
        else:
            assert p01 > -200 and -1100 < p01 - 1024 < -900, v["volume_name"]  # stored = HU + 1024
        zooms = np.asarray(img.header.get_zooms()[:3])
        row = metadata.get(v["volume_name"])
        if row is None:
            continue
        meta = np.array([*map(float, row["XYSpacing"][1:-1].split(", ")), float(row["ZSpacing"])])
        assert np.allclose(meta, v["spacing_mm"])
        assert int(row["NumberofSlices"]) == v["shape"][2]
        if v["trap"] == "identity_affine":
            assert np.allclose(img.affine, np.eye(4))
        elif v["trap"] == "spacing_contradiction":
            assert np.allclose(zooms[:2], meta[:2], rtol=1e-5) and zooms[2] / meta[2] > 1.1
        else:
            assert np.allclose(zooms, meta, rtol=1e-5) and nib.aff2axcodes(img.affine) == ("L", "P", "S")
        # the mask lies on the grid the metadata describes
        mask = nib.load(root / v["mask"])
        assert mask.shape == img.shape and np.allclose(mask.affine[:3, :3], np.diag([-1, -1, 1]) * meta, atol=1e-4)
    assert {t: len(vs) for t, vs in traps.items() if t != "none"} == {
        "already_hu": 3, "identity_affine": 2, "spacing_contradiction": 1, "two_reconstructions": 2,
        "no_report": 1, "no_metadata_row": 1}
    thick, thin = sorted(traps["two_reconstructions"], key=lambda v: v["reconstruction"])
    assert thick["study"] == thin["study"] and thin["spacing_mm"][2] == thick["spacing_mm"][2] / 2
    assert sum(v["dtype"] == "uint16" for v in manifest["volumes"]) == 1


def test_labels_and_reports_follow_the_truth(fixture):
    root, manifest = fixture
    _, labels = _table(root, manifest, "labels")
    _, reports = _table(root, manifest, "reports")
    for v in manifest["volumes"]:
        want = ct_rate_labels(v["findings"])
        assert want == v["labels"]
        assert {k: int(x) for k, x in labels[v["volume_name"]].items() if k != "VolumeName"} == want
        assert want["Lung nodule"] == ("nodule" in v["findings"])
        assert want["Lung opacity"] == ("ground_glass_opacity" in v["findings"])
    # each label the phantoms can show has a positive somewhere, and so does a negative
    for label in ("Lung nodule", "Pleural effusion", "Cardiomegaly", "Arterial wall calcification"):
        assert {v["labels"][label] for v in manifest["volumes"]} == {0, 1}, label
    # CT-RATE repeats a scan's report on each reconstruction row
    thick, thin = sorted((v for v in manifest["volumes"] if v["trap"] == "two_reconstructions"),
                         key=lambda v: v["reconstruction"])
    same = {k: x for k, x in reports[thick["volume_name"]].items() if k != "VolumeName"}
    assert same == {k: x for k, x in reports[thin["volume_name"]].items() if k != "VolumeName"}


def test_broken_rows_are_where_the_manifest_says(fixture):
    root, manifest = fixture
    _, metadata = _table(root, manifest, "metadata")
    _, reports = _table(root, manifest, "reports")
    _, labels = _table(root, manifest, "labels")
    files = {v["volume_name"] for v in manifest["volumes"]}
    broken = {b["kind"]: b for b in manifest["broken"]}
    assert broken["no_metadata_row"]["item"] in files - set(metadata)
    assert broken["no_metadata_row"]["reason"] == "no_metadata_row"
    assert set(metadata) == files - {broken["no_metadata_row"]["item"]}
    assert broken["volume_without_report"]["item"] in files - set(reports)
    assert set(reports) - files == {broken["report_without_volume"]["item"]}
    assert set(labels) - files == {broken["label_without_volume"]["item"]}
    first = manifest["expected"]["ct_convert"]["first"]
    assert first["rejected"] == {broken["no_metadata_row"]["item"]: "no_metadata_row",
                                 next(v["volume_name"] for v in manifest["volumes"]
                                      if v["trap"] == "two_reconstructions" and v["reconstruction"] == 2):
                                 "reconstruction_not_selected"}
    assert first["hu_source"] == {"already_hu": 3, "rescaled": len(first["converted"]) - 3}
    paired = manifest["expected"]["train_fvlm"]["studies_paired"]
    assert broken["volume_without_report"]["study"] not in paired and broken["no_metadata_row"]["study"] not in paired
    assert len(paired) == 2 * PATIENTS - 1


def test_same_arguments_same_bytes(fixture, tmp_path):
    root, manifest = fixture
    again = make_fixture(tmp_path / "again", n_patients=PATIENTS, seed=SEED)
    assert again["files"] == manifest["files"]
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (root / "manifest.json").read_bytes()


def test_command_line_refuses_bad_arguments(tmp_path, fixture, capsys):
    root, _ = fixture
    assert main([str(tmp_path / "few"), "--patients", "2"]) == 2
    assert main([str(root)]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
