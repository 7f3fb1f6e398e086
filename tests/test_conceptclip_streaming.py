"""ConceptCLIP images streamed from the figure shards: the same tensors as the in-memory
cache, DataLoader workers with their own handles, a small pickled dataset, clear errors
for shards that changed, and `cache_images` as a preset key."""
from __future__ import annotations

import io
import multiprocessing
import pickle
from pathlib import Path

import pytest
import torch

from models.text_encoder import TextTokenizer
from tasks.figures.shards import write_shard
from tasks.training import conceptclip_data as cd
from tasks.training.conceptclip_records import FigureRecord

CAPTIONS = ["Axial CT of the chest shows a right pleural effusion.",
            "Chest radiograph with a nodule in the left lower lobe.",
            "MRI of the brain: no mass.", "Ultrasound of the liver shows a cyst."]


def _image(color, size, fmt="JPEG") -> bytes:
    from PIL import Image

    im = Image.new("RGB", size, color)
    im.paste((255 - color[0], color[1], 255 - color[2]), (0, 0, size[0] // 2, size[1] // 3))  # not flat
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _figures(folder: Path, n: int, shards: int = 2) -> tuple[list[FigureRecord], dict]:
    """n figures over `shards` shards written as the figures stage writes them; records and index."""
    samples = [[] for _ in range(shards)]
    for i in range(n):
        size = [(40, 20), (20, 30), (24, 24)][i % 3]
        samples[i % shards].append((f"PMC{i}_fig1", _image((30 * i % 256, 90, 200), size), {"i": i}))
    for s, items in enumerate(samples):
        write_shard(folder / f"figures-{s:06d}.tar", items)
    index = cd.index_shards(folder)
    records = [FigureRecord(key=f"PMC{i}_fig1", pmcid=f"PMC{i}", shard=index[f"PMC{i}_fig1"][0],
                               caption=CAPTIONS[i % len(CAPTIONS)], cuis=["C1"], spans=[(0, 5, "C1")])
               for i in range(n)]
    return records, index


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(CAPTIONS, 80, 128)  # the base context: dense padded tokens would not pickle small


def _dataset(records, index, tokenizer, cache: bool) -> cd.FigureDataset:
    augment = {"crop_scale": [0.6, 1.0], "brightness": 0.2, "contrast": 0.2}
    return cd.FigureDataset(records, index, tokenizer, {"C1": 0}, 16, augment, seed=3, cache_images=cache)


def test_streamed_reads_give_the_cached_tensors(tmp_path, tokenizer):
    records, index = _figures(tmp_path, 7)
    cached, streamed = _dataset(records, index, tokenizer, True), _dataset(records, index, tokenizer, False)
    for epoch in (-1, 0, 2, 0):  # the second epoch 0 comes from the cache
        for i in range(len(records)):
            a, b = cached.get(i, epoch), streamed.get(i, epoch)
            assert torch.equal(a["image"], b["image"]), (i, epoch)
            assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["mask"], b["mask"])
            assert a["spans"] == b["spans"]
    assert len(cached._cache) == len(records) and streamed._cache == {}
    # the token rows are those the tokenizer gives, padded to its context length
    enc = tokenizer.encode([r.caption for r in records])
    assert torch.equal(streamed.ids[[2, 0]], enc["input_ids"][[2, 0]])
    assert torch.equal(streamed.mask[1], enc["attention_mask"][1])
    assert torch.equal(streamed.tokens([3])[0], enc["input_ids"][[3]])


def test_loader_workers_give_the_batches_of_the_main_process(tmp_path, tokenizer):
    from tasks.training.loop import _Items

    records, index = _figures(tmp_path, 8)
    dataset = _dataset(records, index, tokenizer, False)
    dataset.get(0, 0)  # the parent holds an open handle before the workers fork
    plan = [[(i, epoch) for i in range(start, start + 4)] for epoch in (0, 1) for start in (0, 4)]

    def batches(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(_Items(dataset), batch_sampler=plan, collate_fn=cd.collate,
                                             num_workers=workers)
        return list(loader)

    for main, worker in zip(batches(0), batches(2), strict=True):
        assert main.keys() == worker.keys()
        for key in main:
            assert torch.equal(main[key], worker[key]), key


def _read_in_child(dataset, parent_handle_id, queue):
    data = dataset.member_bytes(1)
    queue.put((id(dataset._handles[dataset.shards[dataset._shard_of[1]]]) != parent_handle_id, data))


def test_a_forked_process_opens_its_own_handle(tmp_path, tokenizer):
    records, index = _figures(tmp_path, 4, shards=1)
    dataset = _dataset(records, index, tokenizer, False)
    expected = dataset.member_bytes(1)
    parent_handle = dataset._handles[dataset.shards[0]]
    parent_handle.seek(3)  # a shared file offset would be moved by the other process
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(dataset, id(parent_handle), queue))
    child.start()
    own_handle, data = queue.get(timeout=60)
    child.join(60)
    assert own_handle and data == expected
    assert parent_handle.tell() == 3  # the child never moved the parent's offset


def test_the_dataset_pickles_small_and_reads_after_unpickling(tmp_path, tokenizer):
    records, index = _figures(tmp_path, 1000, shards=3)
    dataset = _dataset(records, index, tokenizer, True)
    first = dataset.get(5, -1)["image"]  # fills the cache and opens a handle: neither is shipped
    blob = pickle.dumps(dataset)
    assert len(blob) < 1_000_000, len(blob)
    copy = pickle.loads(blob)
    assert copy._cache == {} and not copy._handles
    assert torch.equal(copy.get(5, -1)["image"], first)


def test_open_handles_stay_bounded(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(cd, "MAX_OPEN_SHARDS", 2)
    records, index = _figures(tmp_path, 9, shards=4)
    streamed, reference = _dataset(records, index, tokenizer, False), _dataset(records, index, tokenizer, True)
    for i in list(range(9)) * 2:
        assert torch.equal(streamed.get(i, -1)["image"], reference.get(i, -1)["image"])
        assert len(streamed._handles) <= 2
    streamed.close()
    assert not streamed._handles


def _changed_shard(tmp_path, tokenizer, change):
    records, index = _figures(tmp_path, 4, shards=1)
    dataset = _dataset(records, index, tokenizer, False)
    shard = Path(dataset.shards[0])
    change(shard, index)
    return dataset


def test_a_truncated_shard_names_the_figure(tmp_path, tokenizer):
    def truncate(shard, index):
        with open(shard, "r+b") as handle:
            handle.truncate(index["PMC2_fig1"][1] + 10)

    dataset = _changed_shard(tmp_path, tokenizer, truncate)
    with pytest.raises(cd.FigureImageError, match=r"'PMC2_fig1'.*ends \d+ bytes early"):
        dataset.get(2, -1)


def test_a_corrupt_member_names_the_figure(tmp_path, tokenizer):
    def scramble(shard, index):
        _, offset, size = index["PMC1_fig1"]
        with open(shard, "r+b") as handle:
            handle.seek(offset)
            handle.write(b"\x00" * size)

    dataset = _changed_shard(tmp_path, tokenizer, scramble)
    with pytest.raises(cd.FigureImageError, match=r"'PMC1_fig1'.*do not decode as an image"):
        dataset.get(1, -1)
    assert dataset.get(0, -1)["image"].shape == (3, 16, 16)  # the others still read


def test_a_rewritten_shard_is_not_read_as_the_indexed_one(tmp_path, tokenizer):
    def rewrite(shard, index):  # other figures in the same file: the offsets now land elsewhere
        write_shard(shard, [("PMC0_fig1", _image((1, 2, 3), (64, 64), "PNG"), {})])

    dataset = _changed_shard(tmp_path, tokenizer, rewrite)
    with pytest.raises(cd.FigureImageError, match=r"'PMC0_fig1'.*(header there is|no valid tar header|ends)"):
        dataset.get(0, -1)


def test_a_missing_shard_and_a_missing_member(tmp_path, tokenizer):
    dataset = _changed_shard(tmp_path, tokenizer, lambda shard, index: shard.unlink())
    with pytest.raises(cd.FigureImageError, match=r"figures-000000\.tar cannot be opened"):
        dataset.get(0, -1)
    (tmp_path / "again").mkdir()
    records, index = _figures(tmp_path / "again", 2)
    del index["PMC1_fig1"]  # load_records rejects these as image_missing; the dataset refuses them
    with pytest.raises(ValueError, match="no image member.*'PMC1_fig1'"):
        _dataset(records, index, tokenizer, False)


@pytest.mark.parametrize("overrides, preset, expected", [
    ([], "tiny", True),
    ([], "base", False),
    (["train_conceptclip.cache_images=false"], "tiny", False),
    (["train_conceptclip.presets.base.cache_images=true"], "base", True),
])
def test_cache_images_is_a_preset_key(repo_root, overrides, preset, expected):
    from tasks.common.params import load_params
    from tasks.schema import resolve_training_preset

    params = load_params(repo_root / "params.yaml", [f"train_conceptclip.preset={preset}", *overrides])
    assert resolve_training_preset(params["train_conceptclip"])["cache_images"] is expected


def test_a_preset_without_cache_images_is_an_error_naming_the_key(repo_root):
    from tasks.common.params import ParamsError, load_params, load_raw_params
    from tasks.schema import validate_params

    raw = load_raw_params(repo_root / "params.yaml")
    del raw["train_conceptclip"]["presets"]["base"]["cache_images"]
    with pytest.raises(ParamsError, match=r"train_conceptclip\.presets\.base\.cache_images"):
        validate_params(raw)
    with pytest.raises(ParamsError, match=r"train_conceptclip\.presets\.tiny\.cache_images"):
        load_params(repo_root / "params.yaml", ["train_conceptclip.presets.tiny.cache_images=sometimes"])
