"""Training loaders on small hand-made inputs: figure shards + tables, CT volumes + tables."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models.text_encoder import TextTokenizer
from tasks.training import conceptclip_data as cd
from tasks.training import fvlm_data as fd

CAPTION = "A, CT shows a pleural effusion. B, CT shows a lung nodule."


def _jpeg(color, size=(40, 20)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))


@pytest.fixture()
def figure_inputs(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _tar(shards / "figures-000000.tar", {
        "PMC1_fig1.jpg": _jpeg((200, 0, 0)), "PMC1_fig1.json": b"{}",
        "PMC2_fig1.jpg": _jpeg((0, 200, 0), (20, 20)), "PMC3_fig1.jpg": _jpeg((0, 200, 0), (20, 20)),
    })
    subs = [{"panel": "A", "text": "CT shows a pleural effusion."}, {"panel": "B", "text": "CT shows a lung nodule."}]
    pq.write_table(pa.Table.from_pylist([
        {"key": "PMC1_fig1", "pmcid": "PMC1", "caption": CAPTION, "subcaptions": subs, "sha256": "a", "extra": 1},
        {"key": "PMC2_fig1", "pmcid": "PMC2", "caption": "No nodule.", "subcaptions": [], "sha256": "b", "extra": 2},
        {"key": "PMC3_fig1", "pmcid": "PMC3", "caption": "Copy.", "subcaptions": [], "sha256": "b", "extra": 3},
        {"key": "PMC4_fig1", "pmcid": "PMC4", "caption": "Lost image.", "subcaptions": [], "sha256": "c", "extra": 4},
        {"key": "PMC5_fig1", "pmcid": "PMC5", "caption": " ", "subcaptions": [], "sha256": "d", "extra": 5},
    ]), tmp_path / "figures.parquet")
    pq.write_table(pa.Table.from_pylist([
        {"key": "PMC1_fig1", "cuis": ["C1", "C2"]}, {"key": "PMC2_fig1", "cuis": []}]), tmp_path / "cc.parquet")
    pq.write_table(pa.Table.from_pylist([
        {"key": "PMC1_fig1", "text_field": "subcaption:A", "start": 11, "end": 27, "cui": "C1", "negated": False, "uncertain": False},
        {"key": "PMC1_fig1", "text_field": "subcaption:B", "start": 11, "end": 22, "cui": "C2", "negated": False, "uncertain": False},
        {"key": "PMC1_fig1", "text_field": "caption", "start": 46, "end": 50, "cui": "C3", "negated": False, "uncertain": True},
        {"key": "PMC2_fig1", "text_field": "caption", "start": 3, "end": 9, "cui": "C2", "negated": True, "uncertain": False},
    ]), tmp_path / "mentions.parquet")
    return tmp_path


def test_figure_records_spans_and_rejections(figure_inputs):
    index = cd.index_shards(figure_inputs / "shards")
    assert set(index) == {"PMC1_fig1", "PMC2_fig1", "PMC3_fig1"}
    recs, rejected = cd.load_records(figure_inputs / "figures.parquet", figure_inputs / "cc.parquet",
                                     figure_inputs / "mentions.parquet", index, 0.0, "s")
    assert {r["item"]: r["reason"] for r in rejected} == {
        "PMC3_fig1": "duplicate_image", "PMC4_fig1": "image_missing", "PMC5_fig1": "empty_caption"}
    first = recs[0]
    # subcaption mentions moved into caption coordinates; uncertain and negated ones dropped
    assert [CAPTION[s:e] for s, e, _ in first.spans] == ["pleural effusion", "lung nodule"]
    assert recs[1].spans == [] and recs[1].cuis == []


def test_figure_dataset_tokens_images_and_determinism(figure_inputs):
    index = cd.index_shards(figure_inputs / "shards")
    recs, _ = cd.load_records(figure_inputs / "figures.parquet", figure_inputs / "cc.parquet",
                              figure_inputs / "mentions.parquet", index, 0.0, "s")
    tok = TextTokenizer.train([r.caption for r in recs], 60, 32)
    ds = cd.FigureDataset(recs, index, tok, {"C1": 0, "C2": 1}, 16, {"crop_scale": [0.5, 1.0], "brightness": 0.2}, seed=1)
    s = ds.get(0, 0)
    assert s["image"].shape == (3, 16, 16)
    ids = s["ids"].tolist()
    assert [tok.tok.decode(ids[a:b]) for a, b, _ in s["spans"]] == ["pleural effusion", "lung nodule"]
    assert torch.equal(ds.get(0, 3)["image"], ds.get(0, 3)["image"])  # seeded per (epoch, sample)
    assert not torch.equal(ds.get(0, 3)["image"], ds.get(0, 4)["image"])
    # letterboxing keeps the 2:1 figure's colour in the middle rows, border fill elsewhere
    plain = ds.get(0, -1)["image"]
    assert plain[0, 8, 8] > plain[1, 8, 8]
    batch = cd.collate([ds.get(0, -1), ds.get(1, -1)])
    assert batch["concept_row"].tolist() == [0, 0] and batch["concept_id"].tolist() == [0, 1]
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))


@pytest.fixture()
def ct_inputs(tmp_path):
    (tmp_path / "volumes").mkdir()
    (tmp_path / "labels").mkdir()
    studies, anat, texts = [], [], []
    for i in range(4):
        vol = np.full((16, 12, 8), -1000, dtype=np.int16)
        lab = np.zeros((16, 12, 8), dtype=np.uint8)
        lab[2:6, 2:6, 1:4] = 10  # lung
        lab[9:10, 8:9, 6:7] = 5  # liver, one voxel: survives down-sampling
        vol[lab > 0] = 40
        _nifti(tmp_path / "volumes" / f"s{i}.nii.gz", vol)
        if i != 3:
            _nifti(tmp_path / "labels" / f"se{i}.nii.gz", lab)
        studies.append({"patient_id": f"p{i // 2}", "study_id": f"st{i}", "series_id": f"se{i}",
                        "volume": f"volumes/s{i}.nii.gz", "added": "x"})
        anat += [{"series_id": f"se{i}", "anatomy": "lung", "label_ids": [10], "voxels": 48, "touches_fov_edge": False},
                 {"series_id": f"se{i}", "anatomy": "liver", "label_ids": [5], "voxels": 1, "touches_fov_edge": i == 1}]
        texts += [{"study_id": f"st{i}", "anatomy": "lung", "description": "Lung nodule." if i % 2 else "Normal lung.",
                   "is_normal": not i % 2, "finding_cuis": ["C1"] if i % 2 else [], "finding_keys": ["nodule"] if i % 2 else []},
                  {"study_id": f"st{i}", "anatomy": "liver", "description": "Normal liver.", "is_normal": True,
                   "finding_cuis": [], "finding_keys": []}]
    studies.append(dict(studies[0], series_id="se0b"))
    pq.write_table(pa.Table.from_pylist(studies), tmp_path / "studies.parquet")
    pq.write_table(pa.Table.from_pylist(anat), tmp_path / "anatomy.parquet")
    pq.write_table(pa.Table.from_pylist(texts), tmp_path / "texts.parquet")
    return tmp_path


def test_ct_records_masks_and_batches(ct_inputs):
    recs, rejected = fd.load_records(ct_inputs / "studies.parquet", ct_inputs / "anatomy.parquet",
                                     ct_inputs / "texts.parquet", ct_inputs / "labels", ["lung", "liver", "heart"],
                                     0.0, "s")
    assert {r["item"]: r["reason"] for r in rejected} == {"se0b": "extra_series", "se3": "labels_missing"}
    assert [r.study_id for r in recs] == ["st0", "st1", "st2"]
    assert recs[1].usable == {"lung": True, "liver": False}  # cut by the field of view
    tok = TextTokenizer.train(["Lung nodule.", "Normal lung.", "Normal liver."], 40, 12)
    ds = fd.StudyDataset(recs, ["lung", "liver", "heart"], {"nodule": 0}, tok, (4, 6, 8),
                         augment={"intensity_scale": 0.1, "noise": 0.01}, seed=0)
    s = ds.get(1, -1)
    assert s["volume"].shape == (1, 4, 6, 8) and s["masks"].shape == (3, 4, 6, 8)
    assert s["masks"][1].sum() >= 1, "a one-voxel anatomy must survive down-sampling"
    assert not s["masks"][2].any()
    # axes: NIfTI x (16) -> W (8); the lung sits at low x, the liver at high x
    assert s["masks"][0][..., :4].any() and not s["masks"][0][..., 5:].any()
    assert s["masks"][1][..., 4:].any()
    batch = fd.collate([ds.get(i, 0) for i in range(3)])
    # study 1's liver is unusable: no text row for it
    assert batch["text_index"].tolist() == [0, 1, 3, 6, 7]
    # "Normal lung." and "Normal liver." repeat: three distinct texts for five pairs
    assert batch["text_ids"].shape[0] == 3 and batch["text_rows"].tolist() == [0, 1, 2, 0, 1]
    assert batch["findings"][1, 0, 0] and not batch["findings"][0, 0, 0]
    assert batch["normal"][:, 0].tolist() == [True, False, True]


def test_ct_hu_windows_are_input_channels(ct_inputs):
    recs, _ = fd.load_records(ct_inputs / "studies.parquet", ct_inputs / "anatomy.parquet",
                              ct_inputs / "texts.parquet", ct_inputs / "labels", ["lung"], 0.0, "s")
    windows = fd.hu_windows_of({"hu_windows": [[-1000, 1000], [-160, 240]]})
    vol, _ = fd.preprocess(recs[0], ["lung"], (8, 12, 16), windows)  # the native grid: no blending
    assert vol.shape == (2, 8, 12, 16)
    # air (-1000 HU) is the bottom of both windows; 40 HU tissue sits mid-wide and mid soft-tissue
    assert vol[:, 0, 0, 0].tolist() == [-1.0, -1.0]
    tissue = vol[:, 2, 3, 3]
    assert abs(float(tissue[0]) - 0.04) < 1e-4 and abs(float(tissue[1]) - 0.0) < 1e-4
    assert fd.hu_windows_of({}) == [(-1000.0, 1000.0)]
    with pytest.raises(ValueError):
        fd.hu_windows_of({"hu_windows": [[240, -160]]})
