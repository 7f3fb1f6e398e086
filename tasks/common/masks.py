"""Binary masks as run lengths: compact, exact and deterministic in JSON (the sample's truth)."""
from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> dict:
    """{"size": [h, w], "counts": [...]}: alternating runs of 0 and 1 over the rows, in
    reading order, starting with a (possibly empty) run of 0."""
    flat = np.asarray(mask, dtype=bool).ravel()
    edges = np.flatnonzero(np.diff(np.concatenate([[False], flat, [False]]).astype(np.int8)))
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds)
    if counts.size and counts[-1] == 0:
        counts = counts[:-1]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() > h * w:
        raise ValueError(f"run lengths cover {int(counts.sum())} pixels, the mask has {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return np.pad(flat, (0, h * w - flat.size)).reshape(h, w)


def box_of(mask: np.ndarray) -> list[int] | None:
    """[x0, y0, x1, y1] (x1, y1 exclusive) around the mask's pixels; None when it is empty."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
