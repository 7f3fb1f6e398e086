"""Near-duplicate images across articles, vectorised: what tasks.figures.images.near_duplicates
finds, at a cost an update can afford over a whole corpus (it runs on every figure, every run).

Figures with the same hash are one value: the pairs are searched among distinct hashes only,
and each distinct hash carries the two smallest keys of two different articles, which is all
the answer needs (the smallest key of another article). Candidates share one of the hash's 8
bytes (two 64-bit hashes within 7 bits agree on at least one); each bucket's pairs are compared
as whole arrays, in row blocks so that a large bucket stays within memory.
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


def _close_pairs(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) index pairs of `values` (distinct) within max_distance bits, both ways and a == b."""
    found_a, found_b = [np.arange(len(values))], [np.arange(len(values))]
    bands = 8 if max_distance <= 7 else 1
    for band in range(bands):
        for members in _buckets(values, band, bands):
            if len(members) < 2:
                continue
            v = values[members]
            block = max(1, _CELLS // len(members))
            for start in range(0, len(members), block):
                xor = v[start:start + block, None] ^ v[None, :]
                distance = _POPCOUNT[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(axis=-1, dtype=np.int64)
                rows, cols = np.nonzero((distance <= max_distance) & (xor != 0))
                found_a.append(members[start + rows])
                found_b.append(members[cols])
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    pair = np.unique(a * len(values) + b)  # a pair agreeing on several bytes is found once per byte
    return pair // len(values), pair % len(values)


def _two_smallest(owner: np.ndarray, rank: np.ndarray, group: np.ndarray, m: int):
    """Per owner 0..m-1: the smallest rank and its group, and the smallest rank of another
    group and that group (-1 where there is none)."""
    order = np.lexsort((rank, owner))
    owner, rank, group = owner[order], rank[order], group[order]
    first_rank, first_group, second_rank, second_group = (np.full(m, -1, dtype=np.int64) for _ in range(4))
    owners, first = np.unique(owner, return_index=True)
    first_rank[owners], first_group[owners] = rank[first], group[first]
    other = group != first_group[owner]
    owners, first = np.unique(owner[other], return_index=True)
    second_rank[owners], second_group[owners] = rank[other][first], group[other][first]
    return first_rank, first_group, second_rank, second_group


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
    distinct, of_item = np.unique(values, return_inverse=True)
    m = len(distinct)
    first_rank, first_group, second_rank, second_group = _two_smallest(of_item, rank, groups, m)
    a, b = _close_pairs(distinct, max_distance)
    # what each distinct hash finds among its neighbours: their two smallest keys of two articles
    owner = np.concatenate([a, a])
    found_rank = np.concatenate([first_rank[b], second_rank[b]])
    found_group = np.concatenate([first_group[b], second_group[b]])
    keep = found_rank >= 0
    best_rank, best_group, next_rank, _ = _two_smallest(owner[keep], found_rank[keep], found_group[keep], m)
    # group -1 (none found) differs from every article's, and its rank -1 means no answer
    answer = np.where(best_group[of_item] != groups, best_rank[of_item], next_rank[of_item])
    return {keys[i]: keys[by_key[answer[i]]] for i in range(n) if answer[i] >= 0}
