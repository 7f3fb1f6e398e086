"""Unit tests of the CT domain logic on small hand-made series and arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import nibabel as nib
import pydicom
import pytest

from tasks.common.rejection import Rejected
from tasks.common.tables import Rejection
from tasks.schema.ct import CtConvertParams
from tests.helpers.dicom_series import write_series

CONVERT_CFG = {**CtConvertParams().model_dump(), "source_paths": "hashed"}  # the schema's defaults


def series_of(folder):
    from tasks.ct.dicom_series import group_series, scan_files
    headers, problems = scan_files(sorted(str(p) for p in folder.iterdir()), root=str(folder))
    assert not problems
    (series,) = group_series(headers)
    return series


def plan(folder, **policy):
    from tasks.ct.dicom_geometry import Policy, plan_geometry
    return plan_geometry(series_of(folder), Policy.from_params({**CONVERT_CFG, **policy}))


def test_slices_sorted_by_position_not_by_file_name(tmp_path):
    from tasks.ct.dicom_pixels import decode_series
    folder = write_series(tmp_path / "s", [(0, 0, z) for z in (6, 0, 4, 2)], values=[300, 0, 200, 100])
    geometry = plan(folder)
    volume = decode_series(series_of(folder), geometry)
    assert volume.shape == (8, 8, 4)
    assert volume[0, 0, :].tolist() == [0, 100, 200, 300]  # inferior to superior
    assert geometry.canonical_affine[2, 2] == pytest.approx(2.0)


def test_affine_from_dicom_geometry(tmp_path):
    # columns along +x (patient left), rows along +y (posterior): RAS flips both
    folder = write_series(tmp_path / "s", [(10, 20, z) for z in (0, 3, 6)], spacing=(0.5, 0.7))
    g = plan(folder)
    expected = np.array([[0.7, 0, 0, -(10 + 0.7 * 7)], [0, 0.5, 0, -(20 + 0.5 * 7)], [0, 0, 3, 0], [0, 0, 0, 1]])
    assert np.allclose(g.canonical_affine, expected)


def test_missing_slice_rejected_or_interpolated(tmp_path):
    from tasks.ct.dicom_pixels import decode_series
    folder = write_series(tmp_path / "s", [(0, 0, z) for z in (0, 2, 6, 8)], values=[0, 100, 300, 400])
    with pytest.raises(Rejected) as err:
        plan(folder)
    assert err.value.reason == "missing_slices"
    g = plan(folder, uneven_spacing="resample")
    volume = decode_series(series_of(folder), g)
    assert volume[0, 0, :].tolist() == [0, 100, 200, 300, 400]
    assert "resampled" in g.notes[0]


def test_uneven_spacing_and_duplicates(tmp_path):
    uneven = write_series(tmp_path / "u", [(0, 0, z) for z in (0, 2, 4.6, 6, 8)])
    with pytest.raises(Rejected) as err:
        plan(uneven)
    assert err.value.reason == "uneven_spacing"
    dup = write_series(tmp_path / "d", [(0, 0, z) for z in (0, 2, 2, 4)])
    with pytest.raises(Rejected) as err:
        plan(dup)
    assert err.value.reason == "duplicate_positions"
    g = plan(dup, duplicate_positions="drop")
    assert len(g.frames) == 3


def test_gantry_tilt_reject_policy_and_resample(tmp_path):
    from tasks.ct.dicom_pixels import decode_series
    folder = write_series(tmp_path / "t", [(0, 0.5 * k, 2.0 * k) for k in range(4)])
    with pytest.raises(Rejected) as err:
        plan(folder, gantry_tilt="reject")
    assert err.value.reason == "gantry_tilt"
    g = plan(folder)
    assert g.resample == "tilt" and g.tilt_shift[1] == pytest.approx(0.25)
    assert decode_series(series_of(folder), g).shape == (8, 8, 4)


def test_a_changing_slice_step_is_uneven_spacing_not_missing_slices(tmp_path):
    from tasks.ct.dicom_pixels import decode_series
    # 4 mm for the first half of the series, 7 mm after: no slice is missing
    z = [4.0 * k for k in range(16)] + [60.0 + 7.0 * k for k in range(1, 15)]
    folder = write_series(tmp_path / "s", [(0, 0, v) for v in z], rows=4, cols=4, values=[-500 + v for v in z])
    with pytest.raises(Rejected) as err:
        plan(folder)
    assert err.value.reason == "uneven_spacing"
    assert "steps 4.0 mm x15, 7.0 mm x14" in err.value.detail
    g = plan(folder, uneven_spacing="resample")
    assert g.resample == "uneven" and g.slice_step == pytest.approx(4.0)
    assert len(g.target_positions) == 40 and g.target_positions[-1] <= z[-1]  # 156 mm of 158: no extrapolation
    volume = decode_series(series_of(folder), g)
    # HU grow linearly with z, so linear interpolation onto the 4 mm grid gives -500 + z exactly
    assert volume[0, 0, :].tolist() == [-500 + 4 * k for k in range(40)]
    assert g.canonical_affine[2, 2] == pytest.approx(4.0)
    # a real gap (two slices left out of an even 2 mm series) stays missing_slices ...
    gap = write_series(tmp_path / "g", [(0, 0, v) for v in (0, 2, 4, 10, 12, 14)], rows=4, cols=4)
    with pytest.raises(Rejected) as err:
        plan(gap)
    assert err.value.reason == "missing_slices" and err.value.detail.startswith("2 slice(s) missing")
    # ... but a gap that is no whole number of steps beside it makes the series uneven
    mixed = write_series(tmp_path / "m", [(0, 0, v) for v in (0, 2, 4, 10, 12, 17, 19)], rows=4, cols=4)
    with pytest.raises(Rejected) as err:
        plan(mixed)
    assert err.value.reason == "uneven_spacing" and "2.0 mm x4, 6.0 mm x1, 5.0 mm x1" in err.value.detail


def test_gantry_tilt_with_uneven_spacing_resamples_both(tmp_path):
    from tasks.ct.dicom_pixels import decode_series
    # Steps of 4 then 6 mm; the slice origin moves 0.5 mm posterior per mm along z (tilt 26.6 deg).
    # A plane fixed in the patient at y = 20 mm is row 20 - 0.5 z of each acquired slice.
    z = [0, 4, 8, 12, 18, 24, 30]
    slices = []
    for v in z:
        pixels = np.full((32, 32), -1000.0)
        pixels[int(20 - 0.5 * v), :] = 500
        slices.append(pixels)
    folder = write_series(tmp_path / "t", [(0, 0.5 * v, v) for v in z], rows=32, cols=32, values=slices,
                          spacing=(1.0, 1.0))
    with pytest.raises(Rejected) as err:
        plan(folder, uneven_spacing="resample", gantry_tilt="reject")
    assert err.value.reason == "gantry_tilt"
    g = plan(folder, uneven_spacing="resample")
    assert g.resample == "uneven" and g.tilt_shift == pytest.approx((0.0, 2.0))  # rows per 4 mm output step
    assert any("gantry tilt 26.57 degrees" in note for note in g.notes)
    volume = decode_series(series_of(folder), g)
    assert volume.shape == (32, 32, 8)  # 0 to 28 mm in 4 mm steps
    # RAS flips the row axis: row 20 of the untilted grid is j = 31 - 20 in every output slice
    assert (volume[:, 11, :] == 500).all()
    assert (np.delete(volume, 11, axis=1) <= -1000).all()


def test_float_dicom_pixels_with_nan_rejected_or_set_to_air(tmp_path):
    from tasks.ct.convert import convert_dicom_series
    from tasks.ct.dicom_pixels import decode_series
    slices = [np.full((4, 4), -1000.0 if k % 2 else 40.0) for k in range(3)]
    slices[0][0, :2] = np.nan  # slices 0 and 2 are tissue, 1 is air
    slices[2][3, 3] = np.inf
    folder = write_series(tmp_path / "f", [(0, 0, 2.0 * k) for k in range(3)], rows=4, cols=4, values=slices,
                          float_pixels=True)
    with pytest.raises(Rejected) as err:
        decode_series(series_of(folder), plan(folder))
    assert err.value.reason == "non_finite_voxels" and err.value.detail.startswith("3 of 48 voxels")
    row = convert_dicom_series(series_of(folder), {**CONVERT_CFG, "non_finite_voxels": "air"}, "k",
                               tmp_path / "o", str(tmp_path))
    assert isinstance(row, dict), row
    assert "3 non-finite voxels (NaN or infinite) set to air (-1000 HU)" in row["notes"]
    volume = np.asanyarray(nib.load(tmp_path / "o" / row["volume"]).dataobj)
    assert (volume == -1000).sum() == 16 + 3 and (volume == 40).sum() == 48 - 19


def test_inconsistent_orientation_and_not_ct(tmp_path):
    folder = write_series(tmp_path / "o", [(0, 0, 0), (0, 0, 2)])
    ds = pydicom.dcmread(folder / "f001.dcm")
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0.9", "0.43589"]
    ds.save_as(folder / "f001.dcm")
    with pytest.raises(Rejected) as err:
        plan(folder)
    assert err.value.reason == "inconsistent_orientation"
    mr = write_series(tmp_path / "m", [(0, 0, 0), (0, 0, 2)], modality="MR")
    with pytest.raises(Rejected) as err:
        plan(mr)
    assert err.value.reason == "not_ct"


def test_not_dicom_file_is_a_file_problem(tmp_path):
    from tasks.ct.dicom_series import scan_files
    (tmp_path / "notes.txt").write_text("hello")
    headers, problems = scan_files([str(tmp_path / "notes.txt")])
    assert not headers and problems[0].reason == "not_dicom"


def test_deid_env_key_wins_and_missing_key_errors(monkeypatch):
    from tasks.ct.deid import DeidKeyError, deid_key, pseudonym
    params = {"deid": {"key": "params-key", "key_env": "MC_TEST_KEY"}}
    monkeypatch.delenv("MC_TEST_KEY", raising=False)
    assert deid_key(params) == "params-key"
    monkeypatch.setenv("MC_TEST_KEY", "env-key")
    assert deid_key(params) == "env-key"
    monkeypatch.delenv("MC_TEST_KEY")
    with pytest.raises(DeidKeyError):
        deid_key({"deid": {"key": None, "key_env": "MC_TEST_KEY"}})
    a, b = pseudonym("patient", "123", "k1"), pseudonym("patient", "123", "k2")
    assert a != b and a.startswith("pt-") and "123" not in a
    assert pseudonym("study", "123", "k1") != pseudonym("series", "123", "k1").replace("se-", "st-")


def test_nifti_checks(tmp_path):
    from tasks.ct.convert import convert_nifti
    cfg = CONVERT_CFG
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), tmp_path / "four_d.nii.gz")
    rng = np.random.default_rng(0)
    mr_like = rng.integers(0, 1500, (8, 8, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(mr_like, np.eye(4)), tmp_path / "mr_like.nii.gz")
    reasons = {name: convert_nifti(str(tmp_path / f"{name}.nii.gz"), cfg, "k", tmp_path / "o", str(tmp_path))
               for name in ("four_d", "mr_like")}
    assert isinstance(reasons["four_d"], Rejection) and reasons["four_d"].reason == "not_3d"
    assert isinstance(reasons["mr_like"], Rejection) and reasons["mr_like"].reason == "implausible_hu"


def test_nifti_with_non_finite_voxels_rejected_or_set_to_air(tmp_path):
    from tasks.ct.convert import convert_nifti
    data = np.full((8, 8, 8), 40.0, np.float32)
    data[:4] = -1000.0
    data[5, 5, 5], data[6, 6, 6], data[7, 7, 7] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "holes.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), tmp_path / "all_nan.nii.gz")

    def convert(name, policy):
        return convert_nifti(str(tmp_path / f"{name}.nii.gz"), {**CONVERT_CFG, "non_finite_voxels": policy}, "k",
                             tmp_path / policy, str(tmp_path))

    assert CONVERT_CFG["non_finite_voxels"] == "reject"
    refused = convert("holes", "reject")
    assert isinstance(refused, Rejection) and refused.reason == "non_finite_voxels"
    assert refused.detail == "3 of 512 voxels are NaN or infinite"
    row = convert("holes", "air")
    assert isinstance(row, dict) and row["notes"] == "3 non-finite voxels (NaN or infinite) set to air (-1000 HU)"
    volume = np.asanyarray(nib.load(tmp_path / "air" / row["volume"]).dataobj)
    assert volume[5, 5, 5] == volume[6, 6, 6] == volume[7, 7, 7] == -1000 and (volume == 40).sum() == 256 - 3
    for policy in ("reject", "air"):  # no finite voxel: nothing to keep, whatever the policy
        refused = convert("all_nan", policy)
        assert isinstance(refused, Rejection) and refused.reason == "non_finite_voxels", policy
        assert refused.detail.startswith("512 of 512 voxels")


def test_nifti_reoriented_to_canonical(tmp_path):
    from tasks.ct.convert import convert_nifti
    data = np.full((4, 5, 6), -1000, np.int16)
    data[0, 0, 0] = 500
    lps = np.diag([-2.0, -2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(data, lps), tmp_path / "x.nii.gz")
    row = convert_nifti(str(tmp_path / "x.nii.gz"), CONVERT_CFG, "k", tmp_path / "o", str(tmp_path))
    out = nib.load(tmp_path / "o" / row["volume"])
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S") and row["orientation_source"] == "LPS"
    hot = np.argwhere(np.asanyarray(out.dataobj) == 500)[0]
    assert np.allclose(out.affine @ [*hot, 1], lps @ [0, 0, 0, 1])  # same voxel, same world position


def test_anatomy_groups_validated_against_totalsegmentator():
    from tasks.ct.anatomy import AnatomyConfigError, build_groups
    groups = build_groups({"lung": ["lung_*"], "kidney": ["kidney_left", "kidney_right"],
                           "pa": ["heartchambers_highres:pulmonary_artery"]})
    assert groups.ids["lung"] == (10, 11, 12, 13, 14) and groups.ids["kidney"] == (2, 3)
    assert "pa" in groups.other_task and "pa" not in groups.ids
    with pytest.raises(AnatomyConfigError, match="pulmonary_artery"):
        build_groups({"pa": ["pulmonary_artery"]})  # not a class of v2 `total`
    with pytest.raises(AnatomyConfigError, match="both"):
        build_groups({"a": ["liver"], "b": ["liver"]})


def test_params_anatomies_cover_the_issue_list(repo_root):
    from tasks.common.params import load_params
    from tasks.ct.anatomy import build_groups
    groups = build_groups(load_params(repo_root / "params.yaml")["segment"]["anatomies"])
    needed = {"lung", "trachea_bronchi", "heart", "aorta", "esophagus", "thyroid", "liver", "gallbladder",
              "pancreas", "spleen", "kidney", "adrenal_gland", "stomach", "small_bowel", "colon",
              "urinary_bladder", "prostate", "vertebrae", "ribs"}
    assert needed <= set(groups.ids)
    assert "pulmonary_artery" in groups.other_task
    assert len(groups.ids["vertebrae"]) == 26 and len(groups.ids["ribs"]) == 24


def test_measure_bbox_volume_and_fov_edges():
    from tasks.ct.anatomy import build_groups, measure
    labels = np.zeros((10, 12, 8), np.uint8)
    labels[2:5, 3:7, 1:4] = 5  # liver inside
    labels[0:3, 0:2, 6:8] = 2  # a kidney touching x-, y-, z+
    labels[7:9, 5:6, 2:3] = 3
    groups = build_groups({"liver": ["liver"], "kidney": ["kidney_left", "kidney_right"], "spleen": ["spleen"]})
    rows = {r["anatomy"]: r for r in measure(labels, np.diag([2.0, 2.0, 2.5, 1.0]), groups)}
    assert set(rows) == {"liver", "kidney"}
    liver = rows["liver"]
    assert liver["voxels"] == 36 and liver["volume_ml"] == pytest.approx(36 * 10 / 1000)
    assert (liver["bbox_x0"], liver["bbox_y0"], liver["bbox_z0"], liver["bbox_x1"], liver["bbox_y1"],
            liver["bbox_z1"]) == (2, 3, 1, 5, 7, 4)
    assert not liver["touches_fov_edge"]
    kidney = rows["kidney"]
    assert kidney["voxels"] == 12 + 2 and kidney["label_ids"] == [2, 3]
    assert (kidney["bbox_x0"], kidney["bbox_x1"], kidney["bbox_z1"]) == (0, 9, 8)
    assert kidney["touches_fov_edge"] and kidney["edge_faces"] == "x-;y-;z+"


def test_provided_mask_geometry_checked(tmp_path):
    from tasks.ct.provided_backend import load_mask
    mask = np.zeros((6, 6, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 5
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "m.nii.gz")
    assert load_mask(str(tmp_path / "m.nii.gz"), (6, 6, 4), affine, {5}).sum() == 8 * 5
    shifted = affine.copy()
    shifted[0, 3] = 0.5
    with pytest.raises(Rejected) as err:
        load_mask(str(tmp_path / "m.nii.gz"), (6, 6, 4), shifted, {5})
    assert err.value.reason == "mask_geometry_mismatch"
    with pytest.raises(Rejected) as err:
        load_mask(str(tmp_path / "m.nii.gz"), (6, 6, 4), affine, {1})
    assert err.value.reason == "unknown_label_ids"


def test_nifti_writes_are_byte_identical(tmp_path):
    from tasks.ct.nifti_io import write_nifti
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    a = write_nifti(data, np.eye(4), tmp_path / "a.nii.gz").read_bytes()
    b = write_nifti(data, np.eye(4), tmp_path / "b.nii.gz").read_bytes()
    assert a == b
    back = nib.load(tmp_path / "a.nii.gz")
    assert np.array_equal(np.asanyarray(back.dataobj), data) and back.header["sform_code"] == 1


def test_sample_ct_specs_are_varied_and_balanced():
    from tasks.sample.ct_phantoms import FINDINGS_BY_ANATOMY, study_specs
    from tasks.sample.catalogue import FINDINGS
    params = {"sample": {"seed": 20261125, "ct": {}}}
    specs = [s for s in study_specs(params) if s["expected"] == "ok"]
    assert specs == [s for s in study_specs(params) if s["expected"] == "ok"]  # deterministic
    assert len(specs) == 120 and len({s["PatientID"] for s in specs}) == 80
    for anatomy in FINDINGS_BY_ANATOMY:
        normal = sum(not any(f["anatomy"] == anatomy for f in s["findings"]) for s in specs) / len(specs)
        assert 0.2 <= normal <= 0.6, (anatomy, normal)
    drawn = {f["finding"] for s in specs for f in s["findings"]}
    assert len(drawn) >= 10 and all(FINDINGS[k].anatomy for k in drawn)
    for anatomy, keys in FINDINGS_BY_ANATOMY.items():  # dealt from decks: shares stay even
        counts = [sum(f["finding"] == k for s in specs for f in s["findings"]) for k in keys]
        assert max(counts) - min(counts) <= 2, (anatomy, counts)
    formats = {s["format"] for s in specs}
    assert {"dicom", "dicom-j2k", "dicom-enhanced", "dicom-tilt", "nifti"} <= formats


def test_jpeg_lossless_series_decodes_like_uncompressed(tmp_path):
    """JPEG Lossless (process 14) slices, transcoded with GDCM from pydicom's CT_small."""
    import gdcm
    from pydicom.data import get_testdata_file
    from tasks.ct.dicom_pixels import decode_series

    src = get_testdata_file("CT_small.dcm")
    plain, jpeg = tmp_path / "plain", tmp_path / "jpeg"
    plain.mkdir(), jpeg.mkdir()
    for k in range(3):
        ds = pydicom.dcmread(src)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                   float(ds.ImagePositionPatient[2]) + 5.0 * k]
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
        ds.save_as(plain / f"{k}.dcm")
        reader = gdcm.ImageReader()
        reader.SetFileName(str(plain / f"{k}.dcm"))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(jpeg / f"{k}.dcm"))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
    assert pydicom.dcmread(jpeg / "0.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    a = decode_series(series_of(plain), plan(plain))
    b = decode_series(series_of(jpeg), plan(jpeg))
    assert a.shape == (128, 128, 3) and np.array_equal(a, b) and a.min() < -500


def test_fsspec_source_is_staged(tmp_path):
    import fsspec
    from tasks.ct.convert import discover, stage_source

    folder = write_series(tmp_path / "s", [(0, 0, z) for z in (0, 2, 4)])
    fs = fsspec.filesystem("memory")
    for path in folder.iterdir():
        fs.pipe(f"/ctbench/study/{path.name}", path.read_bytes())
    local = stage_source("memory://ctbench", tmp_path / "staged")
    files, nifti = discover(local)
    assert len(files) == 3 and not nifti
    assert len(plan(Path(local) / "study").frames) == 3


def test_fsspec_source_copy_lasts_while_the_stage_runs(tmp_path):
    import fsspec
    from tasks.ct.convert import discover, local_source

    folder = write_series(tmp_path / "s", [(0, 0, z) for z in (0, 2, 4)])
    fs = fsspec.filesystem("memory")
    for path in folder.iterdir():
        fs.pipe(f"/ctstage/study/{path.name}", path.read_bytes())
    with local_source("memory://ctstage") as root:
        assert len(discover(root)[0]) == 3
    assert not Path(root).exists()
    with local_source(str(folder)) as root:
        assert root == str(folder)
    assert folder.is_dir()  # a local source is read in place, never removed


def _serial_fan_out(fn, shards, *shared, name=None):
    return [fn(shard, *shared) for shard in shards]


def test_convert_plan_counts_every_input_and_rejects_a_taken_series_id(tmp_path):
    from tasks.ct.convert_stage import plan as convert_plan
    from tasks.ct.deid import pseudonym

    write_series(tmp_path / "in" / "dicom", [(0, 0, z) for z in (0, 2, 4)], uid="1.2.3.9")
    volume = nib.Nifti1Image(np.full((4, 4, 4), -1000, np.int16), np.eye(4))
    for folder in ("a", "b"):  # two files named alike: one series id
        (tmp_path / "in" / folder).mkdir()
        nib.save(volume, tmp_path / "in" / folder / "chest.nii.gz")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    cfg = {**CONVERT_CFG, "root": str(tmp_path / "in"), "deid_key": "k", "files_per_task": 2, "series_per_task": 1}
    planned = convert_plan(cfg, tmp_path / "out", _serial_fan_out)
    dicom_id, nifti_id = pseudonym("series", "1.2.3.9", "k"), pseudonym("series", "chest", "k")
    assert planned.counts == {"files": 6}
    assert sorted(r["reason"] for r in planned.rejected) == ["duplicate_series", "not_dicom"]
    assert sorted(planned.items) == sorted([dicom_id, nifti_id, *(r["item"] for r in planned.rejected)])
    assert [[kind for kind, _ in shard] for _, shard in planned.shards] == [["dicom"], ["nifti"]]
    assert planned.shards[1][1][0][1].endswith("a/chest.nii.gz")  # the first by path wins
