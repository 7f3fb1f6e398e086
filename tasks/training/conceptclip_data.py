"""ConceptCLIP data: figure images from the WebDataset shards, captions, and concept spans.

Images are read from the figure shards by member offset (no extraction, one open file
per shard and worker); captions and concept spans come from the tables. Mentions in
subcaptions are moved into caption coordinates where the subcaption text occurs in
the caption. Loaders read only the columns they need, so added columns are harmless.
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from tasks.training.splits import HELDOUT, TRAIN, split_of

MEAN, STD = 0.5, 0.5


@dataclass
class FigureRecord:
    key: str
    pmcid: str
    shard: str
    caption: str
    cuis: list[str]
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # caption chars [start, end), cui
    split: str = TRAIN


def _read(path: Path, columns: list[str]) -> list[dict]:
    schema = pq.read_schema(path)
    have = [c for c in columns if c in schema.names]
    return pq.read_table(path, columns=have).to_pylist()


def index_shards(shards_dir: str | Path) -> dict[str, tuple[str, int, int]]:
    """key -> (shard path, data offset, size) of each image member."""
    index = {}
    for shard in sorted(Path(shards_dir).glob("*.tar")):
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, ext = member.name.rpartition(".")
                if ext.lower() in ("jpg", "jpeg", "png") and stem not in index:
                    index[stem] = (str(shard), member.offset_data, member.size)
    return index


def load_records(figures: str | Path, caption_concepts: str | Path | None, mentions: str | Path | None,
                 image_index: dict, heldout_fraction: float, salt: str,
                 exclude_uncertain: bool = True) -> tuple[list[FigureRecord], list[dict]]:
    """Figure records with affirmed concepts and their caption spans; and rejections."""
    rows = _read(Path(figures), ["key", "pmcid", "caption", "subcaptions", "sha256"])
    concepts = {}
    if caption_concepts and Path(caption_concepts).is_file():
        concepts = {r["key"]: list(r.get("cuis") or []) for r in _read(Path(caption_concepts), ["key", "cuis"])}
    by_key: dict[str, list[dict]] = {}
    if mentions and Path(mentions).is_file():
        for m in _read(Path(mentions), ["key", "text_field", "start", "end", "cui", "negated", "uncertain"]):
            by_key.setdefault(m["key"], []).append(m)
    records, rejected, seen_sha = [], [], {}
    for row in sorted(rows, key=lambda r: r["key"]):
        key, caption = row["key"], (row.get("caption") or "").strip()
        def reject(reason, detail):
            rejected.append({"item": key, "source": row.get("pmcid") or "", "reason": reason, "detail": detail})
        if not caption:
            reject("empty_caption", "figure has no caption text"); continue
        if key not in image_index:
            reject("image_missing", "no image member for this key in the figure shards"); continue
        sha = row.get("sha256")
        if sha and sha in seen_sha:
            reject("duplicate_image", f"same image bytes as {seen_sha[sha]}"); continue
        if sha:
            seen_sha[sha] = key
        affirmed = list(dict.fromkeys(concepts.get(key, [])))
        subs = {f"subcaption:{s['panel']}": s["text"] for s in (row.get("subcaptions") or []) if s and s.get("text")}
        spans = []
        for m in sorted(by_key.get(key, []), key=lambda m: (m["text_field"], m["start"], m["end"], m["cui"])):
            if m.get("negated") or (exclude_uncertain and m.get("uncertain")) or m["cui"] not in affirmed:
                continue
            shift = 0
            if m["text_field"] != "caption":
                sub = subs.get(m["text_field"])
                pos = caption.find(sub) if sub else -1
                if pos < 0:
                    continue  # subcaption text not found verbatim in the caption
                shift = pos
            start, end = int(m["start"]) + shift, int(m["end"]) + shift
            if 0 <= start < end <= len(caption):
                spans.append((start, end, m["cui"]))
        spans = sorted(set(spans))
        records.append(FigureRecord(key=key, pmcid=row.get("pmcid") or key, shard=image_index[key][0],
                                    caption=caption, cuis=affirmed, spans=spans,
                                    split=split_of(row.get("pmcid") or key, heldout_fraction, salt)))
    return records, rejected


def letterbox(img: torch.Tensor) -> torch.Tensor:
    """Pad [C, H, W] to a square with the border's mean (compound figures keep their aspect)."""
    c, h, w = img.shape
    s = max(h, w)
    if h == w:
        return img
    fill = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], 1).float().mean(1)
    out = fill.view(c, 1, 1).expand(c, s, s).clone().to(img.dtype)
    y, x = (s - h) // 2, (s - w) // 2
    out[:, y : y + h, x : x + w] = img
    return out


class FigureDataset:
    """get(i, epoch) -> sample dict; epoch < 0: no augmentation."""

    def __init__(self, records: list[FigureRecord], image_index: dict, tokenizer, concept_ids: dict[str, int],
                 image_size: int, augment: dict | None = None, seed: int = 0, cache_images: bool = True):
        from models.text_encoder import char_span_to_tokens

        self.records, self.index, self.size = records, image_index, int(image_size)
        self.augment, self.seed, self.cache_images = dict(augment or {}), int(seed), cache_images
        self._cache: dict[int, torch.Tensor] = {}
        self._files: dict[str, object] = {}
        enc = tokenizer.encode([r.caption for r in records]) if records else {"input_ids": torch.zeros(0, 1), "attention_mask": torch.zeros(0, 1), "offsets": []}
        self.ids, self.mask = enc["input_ids"], enc["attention_mask"]
        self.spans: list[list[tuple[int, int, int]]] = []
        self.spans_dropped = 0
        for r, offsets in zip(records, enc["offsets"]):
            kept = []
            for start, end, cui in r.spans:
                tok = char_span_to_tokens(offsets, start, end)
                if tok is None or cui not in concept_ids:
                    self.spans_dropped += 1
                    continue
                kept.append((tok[0], tok[1], concept_ids[cui]))
            self.spans.append(sorted(set(kept)))

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self):  # DataLoader workers open their own file handles
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def _bytes(self, key: str) -> bytes:
        path, offset, size = self.index[key]
        handle = self._files.get(path)
        if handle is None:
            handle = self._files[path] = open(path, "rb")
        handle.seek(offset)
        return handle.read(size)

    def base_image(self, i: int) -> torch.Tensor:
        """Decoded, letterboxed, resized to 2x the training size: uint8 [3, S, S]."""
        if i in self._cache:
            return self._cache[i]
        from PIL import Image

        with Image.open(io.BytesIO(self._bytes(self.records[i].key))) as im:
            im = im.convert("RGB")
            arr = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        arr = letterbox(arr)
        side = min(arr.shape[-1], 2 * self.size)
        arr = F.interpolate(arr[None].float(), size=(side, side), mode="bilinear", antialias=True,
                            align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        if self.cache_images:
            self._cache[i] = arr
        return arr

    def image(self, i: int, epoch: int) -> torch.Tensor:
        img = self.base_image(i).float() / 255.0
        a = self.augment
        if epoch >= 0 and a.get("enabled", True) and a:
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_033 + i) % (2**63 - 1))
            lo, hi = a.get("crop_scale", [0.8, 1.0])
            s = img.shape[-1]
            frac = lo + (hi - lo) * float(torch.rand((), generator=g))
            side = max(8, int(round(s * frac**0.5)))
            y = int(torch.randint(0, s - side + 1, (), generator=g))
            x = int(torch.randint(0, s - side + 1, (), generator=g))
            img = img[:, y : y + side, x : x + side]
            b = a.get("brightness", 0.0)
            c = a.get("contrast", 0.0)
            if b or c:
                fb = 1 + b * (2 * float(torch.rand((), generator=g)) - 1)
                fc = 1 + c * (2 * float(torch.rand((), generator=g)) - 1)
                mean = img.mean()
                img = ((img - mean) * fc + mean) * fb
        img = F.interpolate(img[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                            align_corners=False)[0]
        return ((img.clamp(0, 1) - MEAN) / STD).contiguous()

    def get(self, i: int, epoch: int) -> dict:
        return {"image": self.image(i, epoch), "ids": self.ids[i], "mask": self.mask[i], "spans": self.spans[i]}


def collate(samples: list[dict]) -> dict:
    rows, starts, ends, cids = [], [], [], []
    for r, s in enumerate(samples):
        for a, b, cid in s["spans"]:
            rows.append(r); starts.append(a); ends.append(b); cids.append(cid)
    long = lambda v: torch.tensor(v, dtype=torch.long)
    mask = torch.stack([s["mask"] for s in samples])
    width = max(2, int(mask.sum(1).max()))  # trim shared padding: text cost follows real lengths
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "input_ids": torch.stack([s["ids"] for s in samples])[:, :width],
        "attention_mask": mask[:, :width],
        "concept_row": long(rows), "concept_start": long(starts), "concept_end": long(ends),
        "concept_id": long(cids),
    }


def split_records(records: list[FigureRecord]) -> tuple[list[FigureRecord], list[FigureRecord]]:
    return [r for r in records if r.split == TRAIN], [r for r in records if r.split == HELDOUT]
