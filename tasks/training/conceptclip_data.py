"""ConceptCLIP data: figure images from the WebDataset shards, captions, and concept spans.

Images are read from the figure shards by member offset, one seek and one read per
image (no extraction, no whole-shard reads); each process opens its own handles, so
DataLoader workers never share a file offset. With `cache_images` the decoded images
are kept in memory; without it memory holds only a small per-figure index (shard,
offset, size, caption tokens). Captions and concept spans come from the records
(tasks.training.conceptclip_records).
"""
from __future__ import annotations

import io
import os
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.training.conceptclip_records import FigureRecord

MEAN, STD = 0.5, 0.5
MAX_OPEN_SHARDS = 32   # per process: a corpus of thousands of shards stays under the open-file limit
_ENCODE_CHUNK = 4096   # captions tokenised at a time: the padded [B, L] batch stays small
_BLOCK = tarfile.BLOCKSIZE


class FigureImageError(RuntimeError):
    """A figure's image cannot be read back from its shard as the index found it."""


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


def base_square(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] -> letterboxed uint8 [3, S, S], S = min(side, 2 x the model's size):
    what the model's images are cropped from (training) or resized from (evaluate, predict)."""
    arr = letterbox(rgb)
    side = min(arr.shape[-1], 2 * size)
    return F.interpolate(arr[None].float(), size=(side, side), mode="bilinear", antialias=True,
                         align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)


def model_input(img: torch.Tensor, size: int) -> torch.Tensor:
    """float [3, h, w] in [0, 1] -> the model's normalised [3, size, size]."""
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return ((img.clamp(0, 1) - MEAN) / STD).contiguous()


def unaugmented_input(base: torch.Tensor, size: int) -> torch.Tensor:
    """A base square's model input without augmentation (what evaluate and predict score)."""
    return model_input(base.float() / 255.0, size)


class _TokenRows:
    """Indexable like the padded [N, L] token tensor, without holding it: rows are padded on access."""

    def __init__(self, dataset: "FigureDataset", part: int):
        self.dataset, self.part = dataset, part

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.dataset.tokens(range(len(self.dataset))[index])[self.part]
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return self.dataset.tokens([int(index)])[self.part][0]
        return self.dataset.tokens(index)[self.part]


class FigureDataset:
    """get(i, epoch) -> sample dict; epoch < 0: no augmentation.

    Holds per figure only its key, where its image member lies (shard number, data
    offset, size) and its caption tokens; with cache_images also the decoded image.
    """

    def __init__(self, records: list[FigureRecord], image_index: dict, tokenizer, concept_ids: dict[str, int],
                 image_size: int, augment: dict | None = None, seed: int = 0, cache_images: bool = True):
        from models.text_encoder import char_span_to_tokens

        self.size, self.augment, self.seed = int(image_size), dict(augment or {}), int(seed)
        self.cache_images = bool(cache_images)
        self.keys = [r.key for r in records]
        missing = [k for k in self.keys if k not in image_index]
        if missing:
            raise ValueError(f"{len(missing)} figure(s) have no image member in the shard index, "
                             f"first {missing[0]!r} (load_records rejects these as image_missing)")
        members = [image_index[k] for k in self.keys]
        self.shards = sorted({m[0] for m in members})
        shard_number = {s: n for n, s in enumerate(self.shards)}
        self._shard_of = np.array([shard_number[m[0]] for m in members], dtype=np.int32)
        self._offset = np.array([m[1] for m in members], dtype=np.int64)
        self._size = np.array([m[2] for m in members], dtype=np.int64)
        self._cache: dict[int, torch.Tensor] = {}
        self._handles: OrderedDict = OrderedDict()
        self._pid = os.getpid()

        self.context_length, self.pad_id = int(tokenizer.context_length), int(tokenizer.pad_id)
        token_parts, lengths = [], []
        self.spans: list[list[tuple[int, int, int]]] = []
        self.spans_dropped = 0
        for first in range(0, len(records), _ENCODE_CHUNK):
            chunk = records[first : first + _ENCODE_CHUNK]
            enc = tokenizer.encode([r.caption for r in chunk])
            real = enc["attention_mask"].bool()
            token_parts.append(enc["input_ids"][real].to(torch.int32).numpy())
            lengths.append(real.sum(1).numpy())
            for r, offsets in zip(chunk, enc["offsets"]):
                kept = []
                for start, end, cui in r.spans:
                    tok = char_span_to_tokens(offsets, start, end)
                    if tok is None or cui not in concept_ids:
                        self.spans_dropped += 1
                        continue
                    kept.append((tok[0], tok[1], concept_ids[cui]))
                self.spans.append(sorted(set(kept)))
        # caption tokens without padding: figure i's are _tokens[_token_start[i]:_token_start[i + 1]]
        self._tokens = np.concatenate(token_parts) if token_parts else np.zeros(0, dtype=np.int32)
        self._token_start = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64) \
            if lengths else np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self):
        # a worker opens its own handles; decoded images are a per-process memo, never shipped
        state = dict(self.__dict__)
        state.update(_handles=OrderedDict(), _pid=None, _cache={})
        return state

    def tokens(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask [len(indices), context_length] of these figures' captions."""
        n = len(self)
        indices = [int(i) + n if int(i) < 0 else int(i) for i in indices]
        if any(not 0 <= i < n for i in indices):
            raise IndexError(f"figure index out of range for {n} figures")
        ids = torch.full((len(indices), self.context_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), self.context_length), dtype=torch.long)
        for row, i in enumerate(indices):
            a, b = int(self._token_start[i]), int(self._token_start[i + 1])
            ids[row, : b - a] = torch.from_numpy(self._tokens[a:b].astype(np.int64))
            mask[row, : b - a] = 1
        return ids, mask

    @property
    def ids(self) -> "_TokenRows":
        """ids[i] or ids[batch]: input_ids rows built for those figures only."""
        return _TokenRows(self, 0)

    @property
    def mask(self) -> "_TokenRows":
        return _TokenRows(self, 1)

    def _handle(self, path: str):
        if self._pid != os.getpid():
            # a forked worker: handles inherited from the parent share its file offsets
            self._handles, self._pid = OrderedDict(), os.getpid()
        handle = self._handles.get(path)
        if handle is not None:
            self._handles.move_to_end(path)
            return handle
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise FigureImageError(f"figure shard {path} cannot be opened ({exc}); it was indexed when "
                                   "training started: re-run the figures stage") from exc
        self._handles[path] = handle
        if len(self._handles) > MAX_OPEN_SHARDS:
            self._handles.popitem(last=False)[1].close()
        return handle

    def close(self) -> None:
        """Close this process's shard handles (they reopen on the next read)."""
        while self._handles:
            self._handles.popitem()[1].close()

    def member_bytes(self, i: int) -> bytes:
        """Figure i's image bytes: one seek and one read of its tar header block and data.

        The header is checked (checksum, name, size) so a shard rewritten since it was
        indexed fails here, naming the figure, instead of feeding other bytes to training.
        """
        key, path = self.keys[i], self.shards[self._shard_of[i]]
        offset, size = int(self._offset[i]), int(self._size[i])
        where = f"figure {key!r}: member at byte {offset} of {path}"
        handle = self._handle(path)
        handle.seek(offset - _BLOCK)
        raw = handle.read(_BLOCK + size)
        if len(raw) < _BLOCK + size:
            raise FigureImageError(f"{where}: shard ends {_BLOCK + size - len(raw)} bytes early "
                                   "(truncated or rewritten since it was indexed): re-run the figures stage")
        try:
            header = tarfile.TarInfo.frombuf(raw[:_BLOCK], "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise FigureImageError(f"{where}: no valid tar header before the data ({exc}); the shard changed "
                                   "since it was indexed: re-run the figures stage") from exc
        # a long name is cut to the header's 100 characters: then the header holds a prefix of it
        named = header.name.startswith(key + ".") or (len(header.name) >= 99 and key.startswith(header.name))
        if not named or header.size != size:
            raise FigureImageError(f"{where}: the header there is {header.name!r} of {header.size} bytes, "
                                   f"expected {key}.* of {size}; the shard changed since it was indexed: "
                                   "re-run the figures stage")
        return raw[_BLOCK:]

    def base_image(self, i: int) -> torch.Tensor:
        """Decoded, letterboxed, resized to 2x the training size: uint8 [3, S, S]."""
        if i in self._cache:
            return self._cache[i]
        from PIL import Image

        data = self.member_bytes(i)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                arr = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for bytes that are no image
            raise FigureImageError(f"figure {self.keys[i]!r}: its {len(data)} bytes in "
                                   f"{self.shards[self._shard_of[i]]} do not decode as an image ({exc})") from exc
        arr = base_square(arr, self.size)
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
        return model_input(img, self.size)

    def get(self, i: int, epoch: int) -> dict:
        ids, mask = self.tokens([i])
        return {"image": self.image(i, epoch), "ids": ids[0], "mask": mask[0], "spans": self.spans[i]}


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


