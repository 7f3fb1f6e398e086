"""ct_convert and segment on real CT files (../shared/data via MEDCONCEPT_TEST_DATA)."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tasks.common.tables import Rejection
from tasks.schema.ct import CtConvertParams

pytestmark = pytest.mark.realdata

KEY = "test-key"
CFG = {**CtConvertParams().model_dump(), "source_paths": "hashed"}  # the schema's defaults


@pytest.fixture(scope="module")
def ts_dir(shared_data):
    return shared_data / "ct" / "totalsegmentator"


def _label_ids(ts_dir, *names):
    label_map = json.loads((ts_dir / "label_map.json").read_text())
    return [int(i) for i, n in label_map.items() if any(n.startswith(x) for x in names)]


def test_example_dicom_matches_totalsegmentator_mask_grid(ts_dir, tmp_path):
    from tasks.ct.convert import convert_dicom_series, discover
    from tasks.ct.dicom_series import group_series, scan_files
    from tasks.ct.nifti_io import same_grid

    root = str(ts_dir / "example_ct_dicom")
    files, nifti = discover(root)
    headers, problems = scan_files(files, root=root)
    assert not problems and not nifti
    series = group_series(headers)
    assert len(series) == 1 and len(series[0].frames) == 20
    assert series[0].first.transfer_syntax == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    row = convert_dicom_series(series[0], CFG, KEY, tmp_path, root)
    assert not isinstance(row, Rejection), row
    vol = nib.load(tmp_path / row["volume"])
    mask = nib.as_closest_canonical(nib.load(ts_dir / "example_seg_dicom.nii.gz"))
    assert vol.shape == mask.shape == (512, 512, 20)
    assert np.abs(vol.affine - mask.affine).max() < 1e-3
    assert same_grid(vol.shape, vol.affine, mask.shape, mask.affine, 1e-3) is None
    hu, lab = np.asanyarray(vol.dataobj), np.asanyarray(mask.dataobj)
    assert 0 < np.median(hu[lab == 5]) < 150  # liver
    lungs = np.isin(lab, _label_ids(ts_dir, "lung_"))
    if lungs.sum() > 100:
        assert np.median(hu[lungs]) < -500
    assert np.median(hu[np.isin(lab, _label_ids(ts_dir, "vertebrae_"))]) > 150  # bone


def test_example_ct_sm_passes_through_and_provided_anatomy_volumes(ts_dir, tmp_path):
    from tasks.ct.anatomy import build_groups, measure
    from tasks.ct.convert import convert_nifti
    from tasks.ct.provided_backend import index_masks, load_mask
    from tasks.common.params import load_params
    from tests.conftest import REPO_ROOT

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ts_dir / "example_ct_sm.nii.gz", src / "example_ct_sm.nii.gz")
    row = convert_nifti(str(src / "example_ct_sm.nii.gz"), CFG, KEY, tmp_path / "out", str(src))
    assert not isinstance(row, Rejection), row
    original = nib.load(ts_dir / "example_ct_sm.nii.gz")
    vol = nib.load(tmp_path / "out" / row["volume"])
    assert vol.shape == original.shape
    assert np.allclose(vol.affine, original.affine, atol=1e-4)
    assert np.array_equal(np.asanyarray(vol.dataobj), np.asanyarray(original.dataobj).clip(-1024))

    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(ts_dir / "example_seg.nii.gz", masks / "example_ct_sm.nii.gz")  # named like the volume
    index = index_masks(masks, KEY)
    assert row["series_id"] in index
    groups = build_groups(load_params(REPO_ROOT / "params.yaml")["segment"]["anatomies"])
    labels = load_mask(index[row["series_id"]], vol.shape, vol.affine, set(groups.names))
    rows = {r["anatomy"]: r for r in measure(labels, vol.affine, groups)}
    seg = np.asanyarray(nib.load(ts_dir / "example_seg.nii.gz").dataobj)
    voxel_ml = float(np.prod(original.header.get_zooms()[:3])) / 1000
    assert {"lung", "liver", "spleen", "kidney", "vertebrae"} <= set(rows)
    for anatomy, ids in groups.ids.items():
        direct = int(np.isin(seg, ids).sum())
        if direct:
            assert rows[anatomy]["voxels"] == direct
            assert rows[anatomy]["volume_ml"] == pytest.approx(direct * voxel_ml, rel=1e-4)
        else:
            assert anatomy not in rows
    hu = np.asanyarray(vol.dataobj)
    assert np.median(hu[np.isin(labels, groups.ids["lung"])]) < -500
    assert 0 < np.median(hu[labels == 5]) < 150


def test_ct_small_rejected_as_single_slice(shared_data, tmp_path):
    from tasks.ct.convert import convert_dicom_series
    from tasks.ct.dicom_series import group_series, scan_files

    root = str(shared_data / "ct" / "pydicom")
    headers, problems = scan_files([str(shared_data / "ct" / "pydicom" / "CT_small.dcm")], root=root)
    assert not problems
    (series,) = group_series(headers)
    result = convert_dicom_series(series, CFG, KEY, tmp_path, root)
    assert isinstance(result, Rejection)
    assert result.reason == "single_slice" and "one-slice" in result.detail
    assert not (tmp_path / "volumes").exists()


def test_real_dicom_identifiers_not_in_outputs(ts_dir, tmp_path):
    """Station, serial, dates and UIDs of the real series stay out of every output."""
    import pydicom
    from tasks.ct.convert import convert_dicom_series, discover
    from tasks.ct.dicom_series import group_series, scan_files
    from tasks.common.tables import write_rows
    from tasks.ct.convert import STUDIES_SCHEMA

    root = str(ts_dir / "example_ct_dicom")
    files, _ = discover(root)
    headers, _ = scan_files(files, root=root)
    row = convert_dicom_series(group_series(headers)[0], CFG, KEY, tmp_path, root)
    write_rows([row], STUDIES_SCHEMA, tmp_path / "studies.parquet")
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    originals = {str(ds.DeviceSerialNumber), str(ds.StationName), str(ds.StudyDate),
                 str(ds.file_meta.MediaStorageSOPInstanceUID), "Petersgraben", "FDG_TK_KM"}
    table = pd.read_parquet(tmp_path / "studies.parquet").to_csv()
    for original in originals:
        assert original not in table
    header = nib.load(tmp_path / row["volume"]).header.binaryblock
    for original in originals:
        assert original.encode() not in header
