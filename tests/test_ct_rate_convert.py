"""CT-RATE input in ct_convert (tasks.ct.ct_rate_names, tasks.ct.ct_rate, convert_stage's
ct_rate branch) on tiny volumes written here: names, metadata, HU applied exactly once,
geometry from header or metadata, reconstruction choice, and the stage's accounting."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.common.rejection import Rejected
from tasks.common.tables import Rejection
from tasks.schema.ct import CtConvertParams

KEY = "test-key"
CFG = {**CtConvertParams().model_dump(), "source_paths": "hashed", "input_kind": "ct_rate", "deid_key": KEY}
COLUMNS = ["VolumeName", "Manufacturer", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing",
           "ImagePositionPatient", "ImageOrientationPatient"]


def phantom_hu() -> np.ndarray:
    """12x12x6 HU: air around a block of soft tissue with a small bone insert."""
    hu = np.full((12, 12, 6), -1000, np.int16)
    hu[3:9, 3:9, :] = 40
    hu[5:7, 5:7, 2:4] = 700
    return hu


def write_volume(root: Path, name: str, stored: np.ndarray, affine=None, scaling=None) -> Path:
    """A NIfTI in CT-RATE's folders; `scaling` = (scl_slope, scl_inter) written into the header."""
    parts = name.split("_")
    path = root / parts[0] / "_".join(parts[:2]) / "_".join(parts[:3]) / f"{name}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(stored, np.eye(4) if affine is None else affine)
    if scaling is not None:
        img.header.set_slope_inter(*scaling)
    nib.save(img, path)
    return path


def write_metadata(root: Path, rows: list[dict], name: str = "validation_metadata.csv") -> Path:
    path = root / "metadata" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def meta_row(name: str, intercept=-1024, slope=1, xy="[0.75, 0.75]", z="1.5", **extra) -> dict:
    return {"VolumeName": f"{name}.nii.gz", "Manufacturer": "PHANTOM", "RescaleSlope": slope,
            "RescaleIntercept": intercept, "XYSpacing": xy, "ZSpacing": z, "ImagePositionPatient": "",
            "ImageOrientationPatient": "", **extra}


def convert_one(root: Path, name: str, out: Path, **rate):
    """Plan the folder and convert `name` alone: its row or Rejection, and the planned rejections."""
    from tasks.ct.ct_rate import convert_ct_rate_volume, plan_volumes
    from tasks.ct.deid import pseudonym

    cfg = {**CFG, "root": str(root), "ct_rate": {**CFG["ct_rate"], **rate}}
    inputs, rejected, _ = plan_volumes(cfg)
    wanted = pseudonym("series", name, KEY)
    for series_id, volume in inputs:
        if series_id == wanted:
            return convert_ct_rate_volume(volume, cfg, KEY, out, str(root))
    return next(Rejection(**r) for r in rejected if r["item"] == wanted)


def output_hu(out: Path, row: dict) -> np.ndarray:
    return np.asanyarray(nib.load(out / row["volume"]).dataobj)


# ---------------------------------------------------------------- names

def test_volume_names_parse_from_names_and_paths():
    from tasks.ct.ct_rate_names import VolumeName, parse_volume_name, raw_ids

    expected = VolumeName("valid", "valid_1", "valid_1_a", "valid_1_a_1", 1)
    assert parse_volume_name("valid_1_a_1.nii.gz") == expected
    assert parse_volume_name("/data/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz") == expected
    assert parse_volume_name("valid_1_a_1") == expected
    train = parse_volume_name("train_12_b_3.nii.gz")
    assert (train.patient, train.study, train.series, train.reconstruction) == ("train_12", "train_12_b",
                                                                               "train_12_b_3", 3)
    assert raw_ids(expected) == {"PatientID": "valid_1", "StudyInstanceUID": "valid_1_a",
                                 "SeriesInstanceUID": "valid_1_a_1", "AccessionNumber": "", "Modality": "CT"}
    for bad in ("chest.nii.gz", "valid_1_a.nii.gz", "valid_x_a_1.nii.gz", "valid_1_a_1.nii", "other_1_a_1"):
        with pytest.raises(Rejected) as caught:
            parse_volume_name(bad)
        assert caught.value.reason == "not_ct_rate_name"


def test_ct_rate_keys_use_the_dicom_pseudonym_scheme():
    from tasks.ct.ct_rate_names import parse_volume_name, raw_ids
    from tasks.ct.deid import pseudonym, pseudonyms

    ids = pseudonyms(raw_ids(parse_volume_name("valid_1_a_1.nii.gz")), KEY)
    assert ids["patient_id"] == pseudonym("patient", "valid_1", KEY)
    assert ids["study_id"] == pseudonym("study", "valid_1_a", KEY)
    assert ids["series_id"] == pseudonym("series", "valid_1_a_1", KEY)
    assert ids["accession_id"] is None


# ---------------------------------------------------------------- metadata values

def test_metadata_values_parsed_and_bad_ones_rejected():
    from tasks.ct.ct_rate_metadata import parse_metadata

    meta = parse_metadata([meta_row("valid_1_a_1", xy="[0.7, 0.8]", z="1.25",
                                    ImageOrientationPatient="[1, 0, 0, 0, 1, 0]",
                                    ImagePositionPatient="[-10.0, 20.0, 30.5]")])
    assert meta.spacing == (0.7, 0.8, 1.25) and meta.intercept == -1024 and meta.slope == 1
    assert meta.orientation == (1, 0, 0, 0, 1, 0) and meta.position == (-10.0, 20.0, 30.5)
    assert dict(meta.context)["manufacturer"] == "PHANTOM"
    assert parse_metadata([meta_row("valid_1_a_1", xy="", z="")]).spacing is None
    for bad in ({"xy": "[0.75]"}, {"xy": "0.75, abc"}, {"z": "-1"}, {"slope": 0}, {"intercept": ""},
                {"xy": ""}, {"ImageOrientationPatient": "[1, 0, 0, 1, 0, 0]"}):
        with pytest.raises(Rejected) as caught:
            parse_metadata([meta_row("valid_1_a_1", **bad)])
        assert caught.value.reason == "bad_metadata", bad
    with pytest.raises(Rejected, match="disagree"):
        parse_metadata([meta_row("valid_1_a_1"), meta_row("valid_1_a_1", z="3")])


def test_metadata_csvs_read_in_name_order_and_required_columns_checked(tmp_path):
    from tasks.ct.ct_rate_metadata import read_metadata

    write_metadata(tmp_path, [meta_row("train_1_a_1"), {**meta_row("x"), "VolumeName": "junk"}], "train_metadata.csv")
    write_metadata(tmp_path, [meta_row("valid_1_a_1")], "validation_metadata.csv")
    table = read_metadata(tmp_path, "metadata/*_metadata.csv")
    assert (table.files, table.rows_read, table.rows_bad_name) == (2, 3, 1)
    assert sorted(n.series for n in table.rows) == ["train_1_a_1", "valid_1_a_1"]
    with pytest.raises(FileNotFoundError, match="metadata_glob"):
        read_metadata(tmp_path, "nothing/*.csv")
    (tmp_path / "metadata" / "z_metadata.csv").write_text("VolumeName,ZSpacing\nvalid_2_a_1.nii.gz,1\n")
    with pytest.raises(ValueError, match="lacks columns"):
        read_metadata(tmp_path, "metadata/*_metadata.csv")


# ---------------------------------------------------------------- HU exactly once

def test_raw_and_already_hu_volumes_end_in_hu_once(tmp_path):
    hu = phantom_hu()
    write_volume(tmp_path, "valid_1_a_1", (hu + 1024).astype(np.int16))   # raw stored values
    write_volume(tmp_path, "valid_2_a_1", hu)                              # a corrected release: HU already
    write_metadata(tmp_path, [meta_row("valid_1_a_1"), meta_row("valid_2_a_1")])  # the same rescale for both
    rows = {name: convert_one(tmp_path, name, tmp_path / "out") for name in ("valid_1_a_1", "valid_2_a_1")}
    assert rows["valid_1_a_1"]["hu_source"] == "rescaled" and rows["valid_2_a_1"]["hu_source"] == "already_hu"
    for name, row in rows.items():
        assert abs(row["hu_p01"] + 1000) < 5, name     # air near -1000, never -2024
        volume = output_hu(tmp_path / "out", row)
        assert volume.dtype == np.int16 and sorted(np.unique(volume)) == [-1000, 40, 700], name
        assert row["reconstruction"] == 1 and row["manufacturer"] == "PHANTOM" and row["source_split"] == "valid"
    assert "not applied" in rows["valid_2_a_1"]["notes"] and "applied" in rows["valid_1_a_1"]["notes"]


def test_more_tissue_than_air_is_still_not_rescaled_twice(tmp_path):
    """Rescaling HU by -1024 puts soft tissue into the air window: with more tissue than
    air, air alone would pick the double rescale."""
    hu = np.full((12, 12, 6), -1000, np.int16)
    hu[1:11, 1:11, :] = 40                                   # 69 % soft tissue, 31 % air
    hu[4:8, 4:8, :] = -850                                   # a lung
    write_volume(tmp_path, "valid_1_a_1", hu)
    write_volume(tmp_path, "valid_2_a_1", (hu + 1024).astype(np.int16))
    write_metadata(tmp_path, [meta_row("valid_1_a_1"), meta_row("valid_2_a_1")])
    already = convert_one(tmp_path, "valid_1_a_1", tmp_path / "out")
    raw = convert_one(tmp_path, "valid_2_a_1", tmp_path / "out")
    assert (already["hu_source"], raw["hu_source"]) == ("already_hu", "rescaled")
    for row in (already, raw):
        assert np.array_equal(output_hu(tmp_path / "out", row), output_hu(tmp_path / "out", already))
        assert row["hu_p01"] == -1000 and row["hu_p50"] == 40


def test_header_scaling_wins_and_metadata_is_not_applied_again(tmp_path):
    hu = phantom_hu()
    write_volume(tmp_path, "valid_1_a_1", (hu + 1024).astype(np.int16), scaling=(1.0, -1024.0))
    write_metadata(tmp_path, [meta_row("valid_1_a_1")])
    row = convert_one(tmp_path, "valid_1_a_1", tmp_path / "out")
    assert row["hu_source"] == "header" and abs(row["hu_p01"] + 1000) < 5
    assert sorted(np.unique(output_hu(tmp_path / "out", row))) == [-1000, 40, 700]
    forced = convert_one(tmp_path, "valid_1_a_1", tmp_path / "forced", hu="rescale")
    assert forced["hu_source"] == "rescaled" and "ignored" in forced["notes"]   # metadata on the stored values


def test_forced_hu_modes_and_undecidable_volumes(tmp_path):
    hu = phantom_hu()
    write_volume(tmp_path, "valid_1_a_1", hu)
    write_volume(tmp_path, "valid_2_a_1", np.full((12, 12, 6), 300, np.int16))   # no air either way
    write_volume(tmp_path, "valid_3_a_1", (hu + 1024).astype(np.int16))
    write_metadata(tmp_path, [meta_row("valid_1_a_1"), meta_row("valid_2_a_1"), meta_row("valid_3_a_1")])
    forced = convert_one(tmp_path, "valid_3_a_1", tmp_path / "a", hu="rescale")
    assert forced["hu_source"] == "rescaled" and abs(forced["hu_p01"] + 1000) < 5
    as_stored = convert_one(tmp_path, "valid_3_a_1", tmp_path / "b", hu="as_stored")
    assert isinstance(as_stored, Rejection) and as_stored.reason == "implausible_hu"   # no air at all
    assert "hu=as_stored" in as_stored.detail
    undecided = convert_one(tmp_path, "valid_2_a_1", tmp_path / "c")
    assert isinstance(undecided, Rejection) and undecided.reason == "hu_undetermined"
    identity = convert_one(tmp_path, "valid_1_a_1", tmp_path / "d", hu="as_stored")
    assert identity["hu_source"] == "already_hu"


def test_identity_rescale_is_already_hu():
    from tasks.ct.ct_rate import decide_hu
    from tasks.ct.ct_rate_metadata import parse_metadata

    meta = parse_metadata([meta_row("valid_1_a_1", intercept=0, slope=1)])
    decision = decide_hu(phantom_hu(), None, meta, CFG["ct_rate"])
    assert (decision.source, decision.slope, decision.intercept) == ("already_hu", 1.0, 0.0)


# ---------------------------------------------------------------- geometry

def test_header_without_spacing_takes_the_metadata_geometry(tmp_path):
    write_volume(tmp_path, "valid_1_a_1", phantom_hu())                       # identity affine, unit zooms
    write_metadata(tmp_path, [meta_row("valid_1_a_1", xy="[0.7, 0.8]", z="2.5",
                                       ImageOrientationPatient="[1, 0, 0, 0, 1, 0]",
                                       ImagePositionPatient="[10, 20, 30]")])
    row = convert_one(tmp_path, "valid_1_a_1", tmp_path / "out")
    assert row["geometry_source"] == "metadata" and "ImageOrientationPatient" in row["notes"]
    assert (row["spacing_x"], row["spacing_y"], row["spacing_z"]) == (0.7, 0.8, 2.5)
    assert row["orientation_source"] == "LPS"           # DICOM axes, written RAS+
    out = nib.load(tmp_path / "out" / row["volume"])
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    corner = out.affine @ [11, 11, 0, 1]                 # RAS voxel of source voxel (0, 0, 0)
    assert np.allclose(corner[:3], [-10, -20, 30])       # ImagePositionPatient, LPS -> RAS


def test_header_agreeing_with_metadata_is_used(tmp_path):
    affine = np.diag([-0.75, -0.75, 1.5, 1.0])
    write_volume(tmp_path, "valid_1_a_1", phantom_hu(), affine=affine)
    write_metadata(tmp_path, [meta_row("valid_1_a_1", xy="[0.76, 0.76]", z="1.5")])   # within 2 %
    row = convert_one(tmp_path, "valid_1_a_1", tmp_path / "out")
    assert row["geometry_source"] == "header=metadata" and row["spacing_x"] == 0.75


def test_contradicting_spacing_rejected_or_overruled(tmp_path):
    affine = np.diag([-0.75, -0.75, 5.0, 1.0])
    write_volume(tmp_path, "valid_1_a_1", phantom_hu(), affine=affine)
    write_metadata(tmp_path, [meta_row("valid_1_a_1", xy="[0.75, 0.75]", z="1.5")])
    rejected = convert_one(tmp_path, "valid_1_a_1", tmp_path / "a", spacing_conflict="reject")
    assert isinstance(rejected, Rejection) and rejected.reason == "spacing_contradiction"
    assert "5" in rejected.detail and "1.5" in rejected.detail
    row = convert_one(tmp_path, "valid_1_a_1", tmp_path / "b", spacing_conflict="metadata")
    assert row["geometry_source"] == "metadata" and row["spacing_z"] == 1.5 and "wins" in row["notes"]


def test_no_spacing_anywhere_is_rejected(tmp_path):
    write_volume(tmp_path, "valid_1_a_1", phantom_hu())
    write_metadata(tmp_path, [meta_row("valid_1_a_1", xy="", z="")])
    assert convert_one(tmp_path, "valid_1_a_1", tmp_path / "out").reason == "no_spacing"


# ---------------------------------------------------------------- planning

def test_reconstruction_selection_first_all_thinnest():
    from tasks.ct.ct_rate_metadata import parse_metadata, select_reconstructions
    from tasks.ct.ct_rate_names import parse_volume_name

    metas = {parse_volume_name(n): parse_metadata([meta_row(n, z=z)])
             for n, z in (("valid_1_a_1", "3"), ("valid_1_a_2", "1"), ("valid_1_a_3", "1"), ("valid_1_b_2", "2"))}
    names = {n.series: n for n in metas}
    first = select_reconstructions(metas, "first")
    thinnest = select_reconstructions(metas, "thinnest")
    every = select_reconstructions(metas, "all")
    assert {n.series for n, k in first.items() if k == n} == {"valid_1_a_1", "valid_1_b_2"}
    assert {n.series for n, k in thinnest.items() if k == n} == {"valid_1_a_2", "valid_1_b_2"}  # tie -> lower
    assert thinnest[names["valid_1_a_1"]] == names["valid_1_a_2"]
    assert all(k == n for n, k in every.items())


def test_plan_rejects_each_unusable_file_with_its_reason(tmp_path):
    from tasks.ct.ct_rate import plan_volumes

    hu = phantom_hu()
    for name in ("valid_1_a_1", "valid_1_a_2", "valid_2_a_1", "valid_3_a_1"):
        write_volume(tmp_path, name, hu)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "valid" / "chest.nii.gz")
    write_metadata(tmp_path, [meta_row("valid_1_a_1"), meta_row("valid_1_a_2"), meta_row("valid_2_a_1", z="x"),
                              meta_row("valid_9_a_1")])
    cfg = {**CFG, "root": str(tmp_path)}
    inputs, rejected, counts = plan_volumes(cfg)
    assert [v.name.series for _, v in inputs] == ["valid_1_a_1"]
    assert sorted(r["reason"] for r in rejected) == ["bad_metadata", "no_metadata_row", "not_ct_rate_name",
                                                     "reconstruction_not_selected"]
    not_kept = next(r for r in rejected if r["reason"] == "reconstruction_not_selected")
    assert inputs[0][0] in not_kept["detail"] and "reconstruction 1" in not_kept["detail"]
    assert counts == {"files": 5, "metadata_csvs": 1, "metadata_rows": 4, "metadata_rows_bad_name": 0,
                      "metadata_rows_without_volume": 1}
    inputs_all, _, _ = plan_volumes({**cfg, "ct_rate": {**CFG["ct_rate"], "reconstructions": "all"}})
    assert [v.name.series for _, v in inputs_all] == ["valid_1_a_1", "valid_1_a_2"]


def test_unreadable_file_rejected(tmp_path):
    path = write_volume(tmp_path, "valid_1_a_1", phantom_hu())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])   # truncated download
    write_metadata(tmp_path, [meta_row("valid_1_a_1")])
    result = convert_one(tmp_path, "valid_1_a_1", tmp_path / "out")
    assert isinstance(result, Rejection) and result.reason == "unreadable_file"


def test_row_and_volume_are_deterministic(tmp_path):
    write_volume(tmp_path, "valid_1_a_1", (phantom_hu() + 1024).astype(np.int16))
    write_metadata(tmp_path, [meta_row("valid_1_a_1")])
    first = convert_one(tmp_path, "valid_1_a_1", tmp_path / "a")
    second = convert_one(tmp_path, "valid_1_a_1", tmp_path / "b")
    assert first == second
    assert (tmp_path / "a" / first["volume"]).read_bytes() == (tmp_path / "b" / second["volume"]).read_bytes()


# ---------------------------------------------------------------- the stage

def _serial_fan_out(fn, shards, *shared, name=None):
    return [fn(shard, *shared) for shard in shards]


def test_stage_accounts_for_every_volume(tmp_path):
    from flows._runner import check_accounting
    from flows.ct_convert import CT_CONVERT
    from tasks.ct.convert_stage import convert_shard, merge, plan

    hu = phantom_hu()
    src = tmp_path / "ct_rate"
    write_volume(src, "valid_1_a_1", (hu + 1024).astype(np.int16))
    write_volume(src, "valid_1_a_2", (hu + 1024).astype(np.int16), affine=np.diag([-0.75, -0.75, 1.5, 1]))
    write_volume(src, "valid_2_a_1", hu)
    write_volume(src, "valid_3_a_1", hu, affine=np.diag([-0.75, -0.75, 5.0, 1]))
    write_volume(src, "valid_4_a_1", hu)                                       # no metadata row
    (src / "valid" / "valid_5_a_1.nii.gz").write_bytes(b"not a nifti")        # unreadable
    write_metadata(src, [meta_row(n) for n in ("valid_1_a_1", "valid_1_a_2", "valid_2_a_1", "valid_3_a_1",
                                              "valid_5_a_1", "valid_6_a_1")])
    cfg = {**CFG, "root": str(src), "series_per_task": 2,
           "ct_rate": {**CFG["ct_rate"], "reconstructions": "all", "spacing_conflict": "reject"}}
    out = tmp_path / "out"
    planned = plan(cfg, out, _serial_fan_out)
    results = _serial_fan_out(convert_shard, planned.shards, cfg, str(out))
    merged = merge(cfg, out, planned, results, _serial_fan_out)
    rejected = [r for result in results for r in result.rejected] + merged.rejected
    check_accounting(CT_CONVERT, planned, merged, rejected)
    assert len(planned.items) == 6 and merged.items_out == 3
    assert sorted(r["reason"] for r in rejected) == ["no_metadata_row", "spacing_contradiction", "unreadable_file"]
    assert merged.counts["by_hu_source"] == {"already_hu": 1, "rescaled": 2}
    assert merged.counts["by_geometry_source"] == {"header=metadata": 1, "metadata": 2}
    assert planned.counts["metadata_rows_without_volume"] == 1
    table = pq.read_table(out / "studies.parquet").to_pylist()
    assert all(abs(row["hu_p01"] + 1000) < 5 for row in table)
    assert sorted(row["reconstruction"] for row in table) == [1, 1, 2]
