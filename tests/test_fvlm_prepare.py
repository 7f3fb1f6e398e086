"""fvlm_prepare: per-series fVLM tensors at the model grid (tasks.training.fvlm_tensors,
tasks.training.fvlm_prepare_stage, flows.fvlm_prepare), on tiny NIfTIs the tests write."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from tasks.training import fvlm_tensors
from tests.conftest import stage_params

HU_WINDOWS = [(-1000.0, 1000.0), (-1350.0, 150.0), (-160.0, 240.0)]
ANATOMY_LABELS = {"lung": [1, 2], "heart": [5], "liver": [], "aorta": [7, 300]}
ANATOMIES = ["lung", "heart", "liver", "aorta", "spleen"]   # liver: no ids; spleen: no row


def _write_case(folder: Path, shape=(16, 16, 8), seed=0, label_dtype=np.uint8) -> tuple[Path, Path]:
    """A HU volume and a label map, NIfTI (x, y, z): random HU, small blobs of labels 1..7."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(-1100, 1300, size=shape).astype(np.int16)
    labels = np.zeros(shape, dtype=label_dtype)
    for label in range(1, 8):
        x, y, z = (int(rng.integers(0, s - 2)) for s in shape)
        labels[x:x + 3, y:y + 2, z:z + 2] = label
    folder.mkdir(parents=True, exist_ok=True)
    volume_path, labels_path = folder / f"v{seed}.nii.gz", folder / f"l{seed}.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), volume_path)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), labels_path)
    return volume_path, labels_path


def _reference(volume_path, labels_path, anatomy_labels, anatomies, size, hu_windows):
    """The pre-fvlm_prepare computation (fvlm_data.preprocess as it was), written out in full."""
    def load(path):
        img = nib.load(str(path))
        return torch.from_numpy(img.get_fdata(dtype="float32") if img.get_data_dtype().kind == "f"
                                else np.asarray(img.dataobj))

    vol = load(volume_path).float().permute(2, 1, 0).contiguous()
    lab = load(labels_path).long().permute(2, 1, 0).contiguous()
    vol = torch.stack([(vol.clamp(lo, hi) - lo) / (hi - lo) * 2 - 1 for lo, hi in hu_windows])
    vol = F.interpolate(vol[None], size=size, mode="trilinear", align_corners=False)[0]
    masks = torch.zeros((len(anatomies), *size), dtype=torch.bool)
    for a, name in enumerate(anatomies):
        ids = anatomy_labels.get(name)
        if ids:
            m = torch.isin(lab, torch.tensor(ids)).float()[None, None]
            masks[a] = F.adaptive_max_pool3d(m, size)[0, 0] > 0 if tuple(m.shape[2:]) != tuple(size) else m[0, 0] > 0
    return vol, masks


def test_write_read_round_trip_is_bit_exact_and_bytes_repeat(tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.standard_normal((3, 4, 5, 7)).astype(np.float16)
    masks = rng.random((5, 4, 5, 7)) > 0.6    # W = 7: packing pads the last byte
    fvlm_tensors.write_study_tensors(tmp_path / "a.zip", volume, masks)
    fvlm_tensors.write_study_tensors(tmp_path / "b.zip", volume.copy(), masks.copy())
    read_volume, read_masks = fvlm_tensors.read_study_tensors(tmp_path / "a.zip")
    assert read_volume.dtype == torch.float16 and read_masks.dtype == torch.bool
    assert np.array_equal(read_volume.numpy().view(np.uint16), volume.view(np.uint16))
    assert np.array_equal(read_masks.numpy(), masks)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with pytest.raises(ValueError, match="float16"):
        fvlm_tensors.write_study_tensors(tmp_path / "c.zip", volume.astype(np.float32), masks)


@pytest.mark.parametrize("shape, size, label_dtype", [
    ((16, 16, 8), (4, 8, 8), np.uint8),      # downsampled, even windows
    ((16, 16, 8), (6, 10, 12), np.int16),    # uneven, overlapping pooling windows
    ((16, 16, 8), (8, 16, 16), np.uint8),    # the source grid itself
    ((16, 16, 8), (12, 20, 24), np.float32),  # upsampled; a float label map
])
def test_tensors_for_equals_the_previous_preprocess(tmp_path, shape, size, label_dtype):
    volume_path, labels_path = _write_case(tmp_path, shape, seed=2, label_dtype=label_dtype)
    expected_volume, expected_masks = _reference(volume_path, labels_path, ANATOMY_LABELS, ANATOMIES, size,
                                                 HU_WINDOWS)
    volume, masks = fvlm_tensors.tensors_for(volume_path, labels_path, ANATOMY_LABELS, ANATOMIES, size,
                                             HU_WINDOWS)
    assert volume.shape == (3, *size) and masks.shape == (5, *size)
    assert torch.equal(volume, expected_volume)
    assert torch.equal(masks, expected_masks)
    assert masks[:2].any() and not masks[2].any() and not masks[4].any()


def _stage_inputs(root: Path) -> dict:
    """ct_convert- and segment-shaped inputs: s-good, s-other (good), s-nolabels, s-novolume,
    s-shape (label map on another grid), s-corrupt (a truncated volume)."""
    convert, labels_dir = root / "ct_convert", root / "segment" / "labels"
    (convert / "volumes").mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    cases = {"s-good": 3, "s-other": 4, "s-nolabels": 5, "s-shape": 6, "s-corrupt": 7}
    for series, seed in cases.items():
        volume_path, labels_path = _write_case(root / "raw", seed=seed)
        volume_path.rename(convert / "volumes" / f"{series}.nii.gz")
        if series == "s-corrupt":   # a volume cut short: header fine, data not
            truncated = (convert / "volumes" / f"{series}.nii.gz").read_bytes()
            (convert / "volumes" / f"{series}.nii.gz").write_bytes(truncated[: len(truncated) // 2])
        if series == "s-shape":
            nib.save(nib.Nifti1Image(np.zeros((16, 16, 9), np.uint8), np.eye(4)), labels_dir / f"{series}.nii.gz")
        elif series != "s-nolabels":
            labels_path.rename(labels_dir / f"{series}.nii.gz")
    series = [*cases, "s-novolume"]
    pq.write_table(pa.table({"series_id": series, "study_id": [f"st-{s}" for s in series],
                             "patient_id": [f"pt-{s}" for s in series],
                             "volume": [f"volumes/{s}.nii.gz" for s in series]}), convert / "studies.parquet")
    rows = [(s, a, ids) for s in ("s-good", "s-other", "s-shape") for a, ids in (("lung", [1, 2]), ("heart", [5]))]
    rows.append(("s-good", "colon", [7]))   # not in the anatomy list: ignored
    pq.write_table(pa.table({"series_id": [r[0] for r in rows], "anatomy": [r[1] for r in rows],
                             "label_ids": pa.array([r[2] for r in rows], pa.list_(pa.int32()))}),
                   root / "segment" / "anatomy.parquet")
    return {"fvlm_prepare.studies": str(convert / "studies.parquet"),
            "fvlm_prepare.anatomy": str(root / "segment" / "anatomy.parquet"),
            "fvlm_prepare.labels_dir": str(labels_dir), "train_fvlm.anatomies": "[lung, heart, kidney]"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, repo_root):
    from flows._stage import run_stage
    from flows.fvlm_prepare import fvlm_prepare_flow

    root = tmp_path_factory.mktemp("fvlm_prepare")
    inputs = _stage_inputs(root)
    outs = []
    for run in ("a", "b"):   # the same inputs twice: the determinism check
        params = stage_params(repo_root, **inputs, **{"fvlm_prepare.output_dir": str(root / run),
                                                      "fvlm_prepare.series_per_task": 2})
        summary = run_stage(fvlm_prepare_flow, params)
        outs.append((root / run, summary))
    return {"root": root, "outs": outs}


def test_stage_accounts_for_every_series(prepared):
    out, summary = prepared["outs"][0]
    rows = pq.read_table(out / "tensors.parquet").to_pylist()
    assert [r["series_id"] for r in rows] == ["s-good", "s-other"]
    rejected = {r["item"]: r["reason"] for r in pq.read_table(out / "rejected.parquet").to_pylist()}
    assert rejected == {"s-nolabels": "labels_missing", "s-novolume": "volume_missing",
                        "s-shape": "labels_grid_mismatch", "s-corrupt": "volume_unreadable"}
    assert summary["items_in"] == 6 and summary["items_out"] == 2
    assert not (out / "tensors" / "s-corrupt.zip").exists()
    good = rows[0]
    assert good["anatomies"] == ["lung", "heart", "kidney"] and good["tensors"] == "tensors/s-good.zip"
    volume, masks = fvlm_tensors.read_study_tensors(out / good["tensors"])
    assert good["anatomy_voxels"] == masks.flatten(1).sum(1).tolist()
    assert good["anatomy_voxels"][0] > 0 and good["anatomy_voxels"][2] == 0   # kidney: no label ids
    assert good["channels"] == volume.shape[0] == 3


def test_grid_is_the_model_config_grid_when_null(prepared, repo_root):
    out, _ = prepared["outs"][0]
    model = json.loads((repo_root / "models" / "configs" / "fvlm_tiny.json").read_text())
    grid = model["ct"]["volume_size"]
    record = json.loads((out / "prepared.json").read_text())
    assert record["grid"] == grid and record["axes"] == "zyx" and record["mask_pooling"] == "any"
    assert record["hu_windows"] == [list(w) for w in HU_WINDOWS]
    volume, masks = fvlm_tensors.read_study_tensors(out / "tensors" / "s-other.zip")
    assert list(volume.shape[1:]) == grid == list(masks.shape[1:])
    row = pq.read_table(out / "tensors.parquet").to_pylist()[1]
    assert [row["grid_d"], row["grid_h"], row["grid_w"]] == grid


def test_stage_outputs_repeat_byte_for_byte(prepared):
    (a, _), (b, _) = prepared["outs"]
    for name in ("tensors.parquet", "prepared.json", "rejected.parquet", "tensors/s-good.zip",
                 "tensors/s-other.zip"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_explicit_grid_is_used_as_given(tmp_path):
    from tasks.training import fvlm_prepare_stage as stage

    volume_path, labels_path = _write_case(tmp_path / "in", seed=7)
    cfg = {"studies": str(tmp_path / "studies.parquet"), "labels_dir": str(labels_path.parent),
           "grid": [4, 8, 8], "model_grid": [48, 64, 64], "hu_windows": HU_WINDOWS, "anatomies": ANATOMIES}
    labels_path.rename(labels_path.parent / "s1.nii.gz")
    row = stage.prepare_series({"series_id": "s1", "study_id": "st", "patient_id": "pt",
                                "volume": str(volume_path)}, ANATOMY_LABELS, cfg, tmp_path / "out")
    volume, masks = fvlm_tensors.read_study_tensors(tmp_path / "out" / row["tensors"])
    assert volume.shape == (3, 4, 8, 8) and masks.shape == (5, 4, 8, 8)
    assert stage.prepared_record(cfg)["grid_source"] == "fvlm_prepare.grid"


@pytest.mark.parametrize("value", ["[0, 64, 64]", "[48, 64]", "abc"])
def test_a_wrong_grid_is_an_error_naming_the_key(repo_root, value):
    from tasks.common.params import ParamsError, load_params

    with pytest.raises(ParamsError, match=r"fvlm_prepare\.grid"):
        load_params(repo_root / "params.yaml", [f"fvlm_prepare.grid={value}"])


def test_model_grid_follows_the_preset_and_model_overrides(repo_root):
    from tasks.common.params import load_params
    from tasks.training.fvlm_prepare_stage import model_grid

    def config_grid(name):
        return json.loads((repo_root / "models" / "configs" / name).read_text())["ct"]["volume_size"]

    assert model_grid(load_params(repo_root / "params.yaml")) == config_grid("fvlm_tiny.json")
    assert model_grid(load_params(repo_root / "params.yaml", ["train_fvlm.preset=base"])) == config_grid("fvlm_base.json")
    overridden = load_params(repo_root / "params.yaml", ["train_fvlm.model={ct: {volume_size: [16, 32, 32]}}"])
    assert model_grid(overridden) == [16, 32, 32]
