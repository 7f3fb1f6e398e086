"""Near-duplicate images across articles, vectorised: what tasks.figures.images.near_duplicates
finds, at a cost an update can afford over a whole corpus (it runs on every figure, every run).

Candidates share one of the perceptual hash's 8 bytes (two 64-bit hashes within 7 bits
agree on at least one); each bucket's pairs are compared as whole arrays, in row blocks so
that a bucket of thousands of equal hashes stays within memory.
"""
from __future__ import annotations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_CELLS = 1 << 22  # pairs compared at once per block


def _buckets(values: np.ndarray, band: int, bands: int) -> list[np.ndarray]:
    if bands == 1:
        return [np.arange(len(values))]
    byte = (values >> np.uint64(56 - 8 * band)) & np.uint64(0xFF)
    order = np.argsort(byte, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(byte[order])) + 1)


def near_duplicates(items: list[tuple[str, str, str]], max_distance: int) -> dict[str, str]:
    """items: (key, group, 16-hex-digit phash), group = the article. Returns key -> the
    smallest key of another article whose hash is within max_distance bits."""
    if max_distance < 0 or not items:
        return {}
    n = len(items)
    keys = [key for key, _, _ in items]
    by_key = sorted(range(n), key=keys.__getitem__)
    rank = np.empty(n, dtype=np.int64)
    rank[by_key] = np.arange(n)
    group_ids: dict[str, int] = {}
    groups = np.array([group_ids.setdefault(group, len(group_ids)) for _, group, _ in items], dtype=np.int64)
    values = np.array([int(value, 16) for _, _, value in items], dtype=np.uint64)
    best = np.full(n, n, dtype=np.int64)  # rank of the smallest near-duplicate key; n: none
    bands = 8 if max_distance <= 7 else 1
    for band in range(bands):
        for members in _buckets(values, band, bands):
            if len(members) < 2:
                continue
            v, g, r = values[members], groups[members], rank[members]
            block = max(1, _CELLS // len(members))
            for start in range(0, len(members), block):
                rows = slice(start, start + block)
                xor = v[rows, None] ^ v[None, :]
                distance = _POPCOUNT[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(axis=-1, dtype=np.int64)
                near = (distance <= max_distance) & (g[rows, None] != g[None, :])
                found = np.where(near, r[None, :], n).min(axis=1)
                best[members[rows]] = np.minimum(best[members[rows]], found)
    return {keys[i]: keys[by_key[best[i]]] for i in range(n) if best[i] < n}
