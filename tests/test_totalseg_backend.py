"""The `totalsegmentator` backend through TotalSegmentator's real Python API.

A tiny random-weight nnU-Net (tests/tiny_totalseg.py) stands in for the weights, in
a temporary TOTALSEG_HOME_DIR; the masks mean nothing, so the checks are the code
path (the API called with our arguments, both the 6 mm crop model and the 3 mm model
loaded), label map shape, dtype, ids and geometry, and usage statistics off.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.tiny_totalseg import build_tiny_totalseg_home


@pytest.fixture()
def ts_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "ts_home"))
    return tmp_path / "ts_home"


def test_missing_weights_error_names_download_command(ts_home):
    from tasks.ct.totalseg_backend import TotalSegWeightsMissing, check_weights, configure_home
    configure_home(str(ts_home))
    with pytest.raises(TotalSegWeightsMissing, match=r"totalseg_download_weights -t total_fast"):
        check_weights("total", True, ["liver"])
    config = json.loads((ts_home / "config.json").read_text())
    assert config["send_usage_stats"] is False


def test_real_api_end_to_end_with_tiny_model(ts_home, tmp_path, monkeypatch):
    import totalsegmentator.python_api as api
    from tasks.ct.segment_stage import segment_series
    from tasks.ct.anatomy import build_groups
    from tasks.ct.nifti_io import write_nifti
    from tasks.ct.totalseg_backend import configure_home
    from tasks.schema.ct import SegmentParams

    build_tiny_totalseg_home(ts_home)
    configure_home(str(ts_home))
    calls, loaded = [], []
    real = api.totalsegmentator

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "totalsegmentator", spy)
    import nnunetv2.inference.predict_from_raw_data as pfr
    real_init = pfr.nnUNetPredictor.initialize_from_trained_model_folder

    def init_spy(self, folder, *a, **k):
        loaded.append(str(folder))
        return real_init(self, folder, *a, **k)

    monkeypatch.setattr(pfr.nnUNetPredictor, "initialize_from_trained_model_folder", init_spy)

    rng = np.random.default_rng(0)
    hu = rng.normal(40, 30, (20, 18, 12)).astype(np.int16)
    hu[:, :, :3] = -900
    affine = np.array([[5.5, 0, 0, -50], [0, 6.0, 0, -40], [0, 0, 7.0, -300], [0, 0, 0, 1]])
    in_dir = tmp_path / "ct_convert"
    write_nifti(hu, affine, in_dir / "volumes" / "se-x.nii.gz")
    anatomies = {"liver": ["liver"], "lung": ["lung_*"], "heart": ["heart"]}
    groups = build_groups(anatomies)
    cfg = SegmentParams.model_validate({
        "anatomies": anatomies, "backend": "totalsegmentator", "overlays": True,
        "totalsegmentator": {"task": "total", "fast": True, "device": "cpu", "roi_subset": "auto"}}).model_dump()
    row = {"series_id": "se-x", "study_id": "st-x", "patient_id": "pt-x", "volume": "volumes/se-x.nii.gz"}
    result = segment_series(row, cfg, groups, str(in_dir), str(tmp_path / "seg"), None)

    assert len(calls) == 1 and calls[0]["task"] == "total" and calls[0]["fast"] is True
    assert sorted(calls[0]["roi_subset"]) == sorted(groups.class_names()) and calls[0]["device"] == "cpu"
    assert any("Dataset298" in f for f in loaded) and any("Dataset297" in f for f in loaded)
    labels = nib.load(tmp_path / "seg" / "labels" / "se-x.nii.gz")
    assert labels.shape == hu.shape and labels.get_data_dtype() == np.uint8
    assert np.abs(labels.affine - affine).max() < 1e-3
    ids = set(np.unique(np.asanyarray(labels.dataobj)).tolist()) - {0}
    assert ids <= set(groups.label_ids())  # roi_subset keeps only the requested classes
    for r in result["rows"]:
        assert set(r["label_ids"]) <= set(groups.ids[r["anatomy"]])
    assert (tmp_path / "seg" / "overlays" / "se-x.png").is_file()
    config = json.loads((ts_home / "config.json").read_text())
    assert config["send_usage_stats"] is False and config["prediction_counter"] >= 1
