"""Sample CT studies -> ct_convert -> segment (provided masks), through the Prefect flows.

A reduced sample (6 studies + the 5 broken ones) keeps this quick; the checks are
the real ones: every good study converts onto its mask's exact grid with plausible
HU, every broken study is rejected with its own reason, and no original identifier
appears in any output file.
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import stage_params

LUNG = [10, 11, 12, 13, 14]


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory, repo_root):
    from flows._stage import run_stage
    from flows.ct_convert import ct_convert_flow
    from flows.segment import segment_flow
    from tasks.sample import ct_phantoms

    root = tmp_path_factory.mktemp("ct")
    params = stage_params(
        repo_root,
        **{"sample.output_dir": str(root / "sample"), "sample.ct.n_studies": 6, "sample.ct.n_patients": 5,
           "sample.ct.enhanced_studies": 1, "sample.ct.tilted_studies": 1,
           "ct_convert.source": str(root / "sample" / "ct" / "input"),
           "ct_convert.output_dir": str(root / "ct_convert"),
           "ct_convert.series_per_task": 4,
           "segment.input_dir": str(root / "ct_convert"), "segment.output_dir": str(root / "segment"),
           "segment.provided.masks_dir": str(root / "sample" / "ct" / "masks")})
    results = [ct_phantoms.generate_shard(params, shard) for shard in ct_phantoms.plan(params)]
    ct_phantoms.finalize(params, results)
    convert_summary = run_stage(ct_convert_flow, params)
    segment_summary = run_stage(segment_flow, params)
    studies = list(csv.DictReader(open(root / "sample" / "ct" / "studies.csv", encoding="utf-8")))
    return {"root": root, "params": params, "studies": studies, "convert": convert_summary,
            "segment": segment_summary}


def _series_id(params, raw_uid):
    from tasks.ct.deid import deid_key, pseudonym
    return pseudonym("series", raw_uid, deid_key(params))


def test_good_studies_land_on_their_mask_grid_with_plausible_hu(ct_run):
    from tasks.ct.nifti_io import same_grid

    out = ct_run["root"] / "ct_convert"
    table = pd.read_parquet(out / "studies.parquet")
    good = [s for s in ct_run["studies"] if s["expected"] == "ok"]
    assert len(good) == 6 and len(table) == 6
    formats = set(table.source_format)
    assert {"dicom", "dicom-enhanced", "nifti"} <= formats
    for study in good:
        sid = _series_id(ct_run["params"], study["SeriesInstanceUID"])
        row = table[table.series_id == sid].iloc[0]
        vol = nib.load(out / row.volume)
        assert vol.get_data_dtype() == np.int16
        assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
        mask = nib.as_closest_canonical(nib.load(ct_run["root"] / "sample" / "ct" / study["mask"]))
        assert same_grid(vol.shape, vol.affine, mask.shape, mask.affine, 1e-3) is None, study["case"]
        hu, lab = np.asanyarray(vol.dataobj), np.asanyarray(mask.dataobj)
        assert np.median(hu[np.isin(lab, LUNG)]) < -500, study["case"]
        assert 0 < np.median(hu[lab == 5]) < 200, study["case"]
        assert np.allclose(np.array(row.affine).reshape(4, 4), vol.affine, atol=1e-4)


def test_conversion_settings_written_beside_the_studies(ct_run):
    from tasks.ct.conversion_settings import LAYOUT_KEYS, read_conversion_settings
    from tasks.ct.deid import deid_key

    out = ct_run["root"] / "ct_convert"
    settings = read_conversion_settings(out / "studies.parquet")
    section = ct_run["params"]["ct_convert"]
    assert settings == {k: v for k, v in section.items() if k not in LAYOUT_KEYS}
    assert "min_slices" in settings and "series_per_task" not in settings
    assert deid_key(ct_run["params"]) not in (out / "conversion.json").read_text()


def test_each_broken_study_rejected_with_its_own_reason(ct_run):
    rejected = pd.read_parquet(ct_run["root"] / "ct_convert" / "rejected.parquet")
    broken = [s for s in ct_run["studies"] if s["expected"] != "ok"]
    assert len(broken) == 5
    for study in broken:
        sid = _series_id(ct_run["params"], study["SeriesInstanceUID"])
        reasons = rejected[rejected["item"] == sid].reason.tolist()
        assert reasons == [study["expected"]], (study["case"], reasons)
    assert ct_run["convert"]["rejected"] == 5
    assert ct_run["convert"]["items_in"] == ct_run["convert"]["items_out"] + ct_run["convert"]["rejected"]


def test_gantry_tilt_resampled_and_noted(ct_run):
    table = pd.read_parquet(ct_run["root"] / "ct_convert" / "studies.parquet")
    tilted = [s for s in ct_run["studies"] if s["format"] == "dicom-tilt"]
    sid = _series_id(ct_run["params"], tilted[0]["SeriesInstanceUID"])
    assert "gantry tilt" in table[table.series_id == sid].notes.iloc[0]


def test_segment_outputs_match_masks(ct_run):
    from tasks.ct.anatomy import build_groups

    seg = ct_run["root"] / "segment"
    anatomy = pd.read_parquet(seg / "anatomy.parquet")
    groups = build_groups(ct_run["params"]["segment"]["anatomies"])
    assert ct_run["segment"]["rejected"] == 0
    for study in (s for s in ct_run["studies"] if s["expected"] == "ok"):
        sid = _series_id(ct_run["params"], study["SeriesInstanceUID"])
        labels = nib.load(seg / "labels" / f"{sid}.nii.gz")
        vol = nib.load(ct_run["root"] / "ct_convert" / "volumes" / f"{sid}.nii.gz")
        assert labels.get_data_dtype() == np.uint8 and labels.shape == vol.shape
        assert np.allclose(labels.affine, vol.affine, atol=1e-6)
        mask = np.asanyarray(nib.as_closest_canonical(
            nib.load(ct_run["root"] / "sample" / "ct" / study["mask"])).dataobj)
        assert np.array_equal(np.asanyarray(labels.dataobj), mask)
        rows = anatomy[anatomy.series_id == sid].set_index("anatomy")
        voxel_ml = abs(np.linalg.det(vol.affine[:3, :3])) / 1000
        for name in ("lung", "liver", "heart", "kidney", "vertebrae"):
            expected = int(np.isin(mask, groups.ids[name]).sum())
            assert rows.loc[name, "voxels"] == expected
            assert rows.loc[name, "volume_ml"] == pytest.approx(expected * voxel_ml, rel=1e-4)
        assert (seg / "overlays" / f"{sid}.png").stat().st_size > 1000


def _readable_bytes(path: Path) -> bytes:
    """A file's bytes as a reader would see them: gzip inflated, Parquet cells as text."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data += gzip.decompress(data)
    if path.suffix == ".parquet":
        data += pq.read_table(path).to_pandas().to_csv().encode()
    return data


def test_no_original_identifier_in_any_output(ct_run):
    import pydicom

    originals = set()
    for study in ct_run["studies"]:
        for key in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber",
                    "StudyDate"):
            originals.add(study[key])
    # and what is only in the DICOM headers: birth dates, institution, station, serial numbers, SOP UIDs
    for path in (ct_run["root"] / "sample" / "ct" / "input").rglob("*"):
        if path.is_file() and not path.name.endswith((".nii.gz", ".json")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            for key in ("PatientBirthDate", "InstitutionName", "InstitutionAddress", "StationName",
                        "DeviceSerialNumber", "SOPInstanceUID", "FrameOfReferenceUID", "ReferringPhysicianName"):
                if ds.get(key):
                    originals.add(str(ds.get(key)))
    originals = {o for o in originals if len(o) >= 6}
    assert len(originals) > 50
    outputs = [p for d in ("ct_convert", "segment") for p in (ct_run["root"] / d).rglob("*") if p.is_file()]
    assert len(outputs) > 20
    for path in outputs:
        data = _readable_bytes(path)
        leaked = [o for o in originals if o.encode() in data]
        assert not leaked, (path.name, leaked[:3])


def test_summaries_are_deterministic_counts(ct_run):
    summary = json.loads((ct_run["root"] / "ct_convert" / "summary.json").read_text())
    assert summary["items_out"] == 6 and summary["patients"] >= 4
    assert summary["rejected_by_reason"] == {"corrupt_pixel_data": 1, "inconsistent_matrix": 1,
                                             "missing_slices": 1, "not_ct": 1, "single_slice": 1}


def test_inputs_that_lie_rejected_by_the_stage_with_their_reasons(tmp_path, repo_root):
    """NaN voxels and a slice step that changes half way, through the flow: each input leaves
    as a rejected row with its own reason and detail, beside a good volume that converts."""
    from flows._stage import run_stage
    from flows.ct_convert import ct_convert_flow
    from tests.helpers.dicom_series import write_series

    source = tmp_path / "input"
    source.mkdir()
    good = np.full((16, 16, 8), -1000.0, np.float32)
    good[4:12, 4:12] = 40.0
    nib.save(nib.Nifti1Image(good, np.eye(4)), str(source / "good.nii.gz"))
    holes = good.copy()
    holes[8, 8, 2:4] = np.nan
    nib.save(nib.Nifti1Image(holes, np.eye(4)), str(source / "holes.nii.gz"))
    z = [4.0 * k for k in range(6)] + [20.0 + 7.0 * k for k in range(1, 6)]
    write_series(source / "uneven", [(0, 0, v) for v in z], uid="1.2.3.9.9")
    params = stage_params(repo_root, **{"ct_convert.source": str(source),
                                        "ct_convert.output_dir": str(tmp_path / "ct_convert")})
    summary = run_stage(ct_convert_flow, params)
    assert (summary["items_in"], summary["items_out"], summary["rejected"]) == (3, 1, 2)
    rejected = pd.read_parquet(tmp_path / "ct_convert" / "rejected.parquet")
    by_reason = dict(zip(rejected.reason, rejected.detail))
    assert by_reason["non_finite_voxels"] == "2 of 2048 voxels are NaN or infinite"
    assert by_reason["uneven_spacing"].startswith("steps 4.0 mm x5, 7.0 mm x5")
