"""Training loaders on small hand-made inputs: figure shards + tables, prepared CT tensors + tables."""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models.text_encoder import TextTokenizer
from tasks.training import conceptclip_data as cd
from tasks.training import conceptclip_records as records_of
from tasks.training import fvlm_data as fd
from tasks.training.splits import SplitSpec

ALL_TRAIN = SplitSpec("pmcid", 0.0, 0.0, "s")  # every record on the train side

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
    recs, rejected = records_of.load_records(figure_inputs / "figures.parquet", figure_inputs / "cc.parquet",
                                     figure_inputs / "mentions.parquet", index, ALL_TRAIN)
    assert {r["item"]: r["reason"] for r in rejected} == {
        "PMC3_fig1": "duplicate_image", "PMC4_fig1": "image_missing", "PMC5_fig1": "empty_caption"}
    first = recs[0]
    # subcaption mentions moved into caption coordinates; uncertain and negated ones dropped
    assert [CAPTION[s:e] for s, e, _ in first.spans] == ["pleural effusion", "lung nodule"]
    assert recs[1].spans == [] and recs[1].cuis == []


def test_figure_dataset_tokens_images_and_determinism(figure_inputs):
    index = cd.index_shards(figure_inputs / "shards")
    recs, _ = records_of.load_records(figure_inputs / "figures.parquet", figure_inputs / "cc.parquet",
                              figure_inputs / "mentions.parquet", index, ALL_TRAIN)
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


ANATOMIES = ["lung", "liver", "heart"]
GRID = (8, 8, 8)
WINDOWS = [(-1000.0, 1000.0), (-160.0, 240.0)]


def _study_tensors(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Two HU-window channels and masks [lung, liver, heart] on the 8x8x8 grid; heart empty."""
    volume = np.full((2, *GRID), -1.0, dtype=np.float16)
    masks = np.zeros((3, *GRID), dtype=bool)
    masks[0, 1:4, 1:4, 1:4] = True
    masks[1, 6, 6, 6 - i % 2] = True
    volume[:, masks.any(0)] = np.float16(0.01 * (i + 1))
    return volume, masks


def _write_corpus(root: Path, n: int, report_key=lambda i: f"st-{i}", accession=lambda i: None,
                  reports: list[str] | None = None) -> Path:
    """studies/anatomy/texts tables and an fvlm_prepare folder (tensors written directly)."""
    from tasks.training.fvlm_tensors import write_study_tensors

    prepared = root / "prepared"
    (prepared / "tensors").mkdir(parents=True)
    studies, anat, texts, tensors = [], [], [], []
    for i in range(n):
        sid, series = f"st-{i}", f"se-{i}"
        write_study_tensors(prepared / "tensors" / f"{series}.zip", *_study_tensors(i))
        studies.append({"patient_id": f"pt-{i // 2}", "study_id": sid, "series_id": series,
                        "accession_id": accession(i), "volume": f"volumes/{series}.nii.gz", "added": "x"})
        tensors.append({"series_id": series, "study_id": sid, "patient_id": f"pt-{i // 2}",
                        "tensors": f"tensors/{series}.zip", "anatomies": ANATOMIES, "sha256": "x"})
        anat += [{"series_id": series, "anatomy": "lung", "label_ids": [10], "voxels": 48, "touches_fov_edge": False},
                 {"series_id": series, "anatomy": "liver", "label_ids": [5], "voxels": 1, "touches_fov_edge": i == 1}]
        texts += [{"study_id": report_key(i), "anatomy": "lung", "description": "Lung nodule." if i % 2 else "Normal lung.",
                   "is_normal": not i % 2, "finding_cuis": ["C1"] if i % 2 else [], "finding_keys": ["nodule"] if i % 2 else []},
                  {"study_id": report_key(i), "anatomy": "liver", "description": "Normal liver.", "is_normal": True,
                   "finding_cuis": [], "finding_keys": []}]
    for key in reports or []:  # reports of studies that have no volume
        texts.append({"study_id": key, "anatomy": "lung", "description": "Normal lung.", "is_normal": True,
                      "finding_cuis": [], "finding_keys": []})
    pq.write_table(pa.Table.from_pylist(studies), root / "studies.parquet")
    pq.write_table(pa.Table.from_pylist(anat), root / "anatomy.parquet")
    pq.write_table(pa.Table.from_pylist(texts), root / "texts.parquet")
    pq.write_table(pa.Table.from_pylist(tensors), prepared / "tensors.parquet")
    (prepared / "prepared.json").write_text(json.dumps({
        "grid": list(GRID), "hu_windows": [list(w) for w in WINDOWS], "anatomies": ANATOMIES,
        "axes": "zyx", "mask_pooling": "any"}))
    return root


def _load(root: Path, labels: Path | None = None) -> fd.StudyTable:
    return fd.load_records(root / "studies.parquet", root / "anatomy.parquet", root / "texts.parquet",
                           fd.read_prepared(root / "prepared"), ANATOMIES, ALL_TRAIN, "finding_keys", True, 1, (),
                           labels)


def _tokenizer():
    return TextTokenizer.train(["Lung nodule.", "Normal lung.", "Normal liver."], 40, 12)


def _dataset(records, **kw):
    return fd.StudyDataset(records, ANATOMIES, {"nodule": 0}, _tokenizer(), GRID, WINDOWS, **kw)


@pytest.fixture()
def ct_inputs(tmp_path):
    """Six studies; se-0b a second series of st-0, se-3 not prepared, se-4's file gone, st-5
    without a report; a report and a label row for a study with no volume."""
    root = _write_corpus(tmp_path, 6, reports=["st-ghost"])
    studies = pq.read_table(root / "studies.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist(studies + [dict(studies[0], series_id="se-0b")]), root / "studies.parquet")
    tensors = [r for r in pq.read_table(root / "prepared" / "tensors.parquet").to_pylist() if r["series_id"] != "se-3"]
    pq.write_table(pa.Table.from_pylist(tensors), root / "prepared" / "tensors.parquet")
    (root / "prepared" / "tensors" / "se-4.zip").unlink()
    texts = [r for r in pq.read_table(root / "texts.parquet").to_pylist() if r["study_id"] != "st-5"]
    pq.write_table(pa.Table.from_pylist(texts), root / "texts.parquet")
    pq.write_table(pa.Table.from_pylist([{"study_id": k, "Emphysema": 1} for k in ("st-0", "st-2", "st-lost")]),
                   root / "labels.parquet")
    return root


def test_ct_records_accounting_and_pairing_counts(ct_inputs):
    table = _load(ct_inputs, ct_inputs / "labels.parquet")
    assert {r["item"]: r["reason"] for r in table.rejected} == {
        "se-0b": "extra_series", "se-3": "not_prepared", "se-4": "tensors_missing", "se-5": "no_descriptions",
        "st-ghost": "report_without_volume", "st-lost": "label_without_volume"}
    assert [r.study_id for r in table.records] == ["st-0", "st-1", "st-2"]
    assert table.records[1].usable == {"lung": True, "liver": False}  # cut by the field of view
    assert table.records[0].mask_index == {"lung": 0, "liver": 1}
    # every series, and every report or label key that reaches no volume
    assert table.counts["items_in"] == 7 + 1 + 1 == len(table.records) + len(table.rejected)
    assert (table.counts["studies_with_volume"], table.counts["studies_with_report"],
            table.counts["studies_paired"]) == (6, 6, 5)


def test_ct_dataset_reads_tensors_from_disk(ct_inputs):
    records = _load(ct_inputs).records
    ds = _dataset(records, augment={"intensity_scale": 0.1, "noise": 0.01}, seed=0)
    s = ds.get(1, -1)
    volume, masks = _study_tensors(1)
    assert s["volume"].dtype == torch.float32 and s["volume"].shape == (2, *GRID)
    assert torch.equal(s["volume"], torch.from_numpy(volume).float())
    assert torch.equal(s["masks"][:2], torch.from_numpy(masks[:2])) and not s["masks"][2].any()
    assert not torch.equal(ds.get(1, 0)["volume"], s["volume"])  # augmented in epoch 0
    batch = fd.collate([ds.get(i, 0) for i in range(3)])
    # study 1's liver is unusable: no text row for it
    assert batch["text_index"].tolist() == [0, 1, 3, 6, 7]
    # "Normal lung." and "Normal liver." repeat: three distinct texts for five pairs
    assert batch["text_ids"].shape[0] == 3 and batch["text_rows"].tolist() == [0, 1, 2, 0, 1]
    assert batch["findings"][1, 0, 0] and not batch["findings"][0, 0, 0]
    assert batch["normal"][:, 0].tolist() == [True, False, True]
    assert len(ds.text_ids) == 3, "each distinct description is tokenized once"
    # every anatomy segmented, in the file's order: the stored masks as they are
    full = [dataclasses.replace(r, mask_index={"lung": 0, "liver": 1, "heart": 2}) for r in records]
    assert torch.equal(_dataset(full).get(1, -1)["masks"], torch.from_numpy(masks))
    # the model's anatomies in another order than the file's
    reordered = fd.StudyDataset(records, ["liver", "lung"], {}, _tokenizer(), GRID, WINDOWS).get(1, -1)["masks"]
    assert torch.equal(reordered, torch.from_numpy(masks[[1, 0]]))


def test_ct_dataset_cache_gives_the_disk_sample(ct_inputs):
    records = _load(ct_inputs).records
    augment = {"noise": 0.02, "max_shift": 2}
    disk, cached = _dataset(records, augment=augment, seed=3), _dataset(records, augment=augment, seed=3,
                                                                          cache_in_memory=True)
    first = [cached.get(i, 2) for i in range(len(records))]
    for path in (r.tensors for r in records):
        path.rename(path.with_suffix(".moved"))
    again = [cached.get(i, 2) for i in range(len(records))]  # from memory now: the files are gone
    for path in (r.tensors for r in records):
        path.with_suffix(".moved").rename(path)
    for i in range(len(records)):
        expected = disk.get(i, 2)
        for got in (first[i], again[i]):
            assert torch.equal(got["volume"], expected["volume"]) and torch.equal(got["masks"], expected["masks"])
    records[0].tensors.unlink()
    with pytest.raises(FileNotFoundError):  # without the cache every get reads the file
        _dataset(records).get(0, -1)


def test_ct_dataset_pickles_small(tmp_path):
    root = _write_corpus(tmp_path, 100)
    ds = _dataset(_load(root).records, cache_in_memory=True)
    for i in range(len(ds)):
        ds.get(i, -1)  # fill the cache: pickling must drop it
    size = len(pickle.dumps(ds))
    assert size < 1_000_000, size
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy.get(5, 1)["volume"], ds.get(5, 1)["volume"])


def test_ct_dataloader_workers_give_the_same_batches(tmp_path):
    from tasks.training.loop import _Items

    root = _write_corpus(tmp_path, 12)
    ds = _dataset(_load(root).records, augment={"noise": 0.02, "max_shift": 1}, seed=1)
    plan = [[(i, epoch) for i in range(k, k + 4)] for epoch in (0, 1) for k in (0, 4, 8)]

    def batches(workers):
        loader = torch.utils.data.DataLoader(_Items(ds), batch_sampler=plan, collate_fn=fd.collate,
                                             num_workers=workers)
        return list(loader)

    for a, b in zip(batches(0), batches(2), strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_study_key_map_joins_study_and_accession_keys(tmp_path):
    rows = [{"study_id": "st-a", "accession_id": "ac-1"}, {"study_id": "st-b", "accession_id": None},
            {"study_id": "st-c", "accession_id": "ac-2"}, {"study_id": "st-d", "accession_id": "ac-2"}]
    # an accession shared by two studies names neither
    assert fd.study_key_map(rows) == {"st-a": "st-a", "st-b": "st-b", "st-c": "st-c", "st-d": "st-d", "ac-1": "st-a"}
    root = _write_corpus(tmp_path, 4, report_key=lambda i: f"ac-{i}", accession=lambda i: f"ac-{i}" if i else None)
    table = _load(root)
    assert [r.study_id for r in table.records] == ["st-1", "st-2", "st-3"]
    assert {r["item"]: r["reason"] for r in table.rejected} == {"se-0": "no_descriptions",
                                                                "ac-0": "report_without_volume"}
    assert table.records[0].texts["lung"]["description"] == "Lung nodule."
    assert table.counts["studies_paired"] == 3


def test_zero_pairs_is_an_error_naming_the_key_kinds(tmp_path):
    root = _write_corpus(tmp_path, 3, report_key=lambda i: f"ac-{i}")
    with pytest.raises(ValueError) as err:
        _load(root)
    message = str(err.value)
    assert "3 accession" in message and "study_id 3 study" in message and "accession_id none" in message
    assert "split_reports.study_key_kind=study" in message


def test_prepared_tensors_must_match_the_model(tmp_path):
    meta = json.loads((_write_corpus(tmp_path, 1) / "prepared" / "prepared.json").read_text())
    fd.check_prepared(meta, GRID, WINDOWS, ["lung", "heart"])
    with pytest.raises(ValueError, match=r"fvlm_prepare\.grid"):
        fd.check_prepared(meta, (16, 8, 8), WINDOWS, ANATOMIES)
    with pytest.raises(ValueError, match=r"train_fvlm\.hu_windows"):
        fd.check_prepared(meta, GRID, WINDOWS[:1], ANATOMIES)
    with pytest.raises(ValueError, match=r"\['kidney'\] of train_fvlm\.anatomies"):
        fd.check_prepared(meta, GRID, WINDOWS, ["lung", "kidney"])
    # a file whose grid is not the model's is named when read
    with pytest.raises(ValueError, match="se-0.zip"):
        fd.StudyDataset(_load(tmp_path).records, ANATOMIES, {}, _tokenizer(), (8, 8, 4), WINDOWS).get(0, -1)


def test_ct_hu_windows_of():
    assert fd.hu_windows_of({"hu_windows": [[-1000, 1000], [-160, 240]]}) == [(-1000.0, 1000.0), (-160.0, 240.0)]
    assert fd.hu_windows_of({}) == [(-1000.0, 1000.0)]
    with pytest.raises(ValueError):
        fd.hu_windows_of({"hu_windows": [[240, -160]]})


def test_roll3_is_torch_roll():
    x = torch.arange(2 * 4 * 5 * 3, dtype=torch.float32).view(2, 4, 5, 3)
    for shifts in ([0, 0, 0], [1, -2, 2], [-3, 4, -1], [5, 0, -7]):
        assert torch.equal(fd.roll3(x, shifts), torch.roll(x, shifts, dims=(1, 2, 3)))
        assert torch.equal(fd.roll3(x > 50, shifts), torch.roll(x > 50, shifts, dims=(1, 2, 3)))
