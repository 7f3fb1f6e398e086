"""Near-duplicate images across articles, vectorised: what tasks.figures.images.near_duplicates
finds, at a cost an update can afford over a whole corpus (it runs on every figure, every run).

Figures with the same hash are one value: the pairs are searched among distinct hashes only,
and each distinct hash carries the two smallest keys of two different articles, which is all
the answer needs (the smallest key of another article). Up to 7 bits, candidates come from
multi-index hashing over 4 chunks of 16 bits (_probe_pairs); beyond, every pair is compared.
Pairs are compared as whole arrays, in blocks that stay within memory.
"""
from __future__ import annotations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_CELLS = 1 << 22  # pairs compared at once per block
_CHUNKS, _CHUNK_BITS = 4, 16


def _bucket_pairs(values: np.ndarray, max_distance: int) -> tuple[list, list]:
    """Pairs within max_distance, every pair compared (beyond 7 bits no chunk must agree)."""
    found_a, found_b = [], []
    members = np.arange(len(values))
    block = max(1, _CELLS // max(1, len(values)))
    for start in range(0, len(values), block):
        xor = values[start:start + block, None] ^ values[None, :]
        distance = _POPCOUNT[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(axis=-1, dtype=np.int64)
        rows, cols = np.nonzero((distance <= max_distance) & (xor != 0))
        found_a.append(members[start + rows])
        found_b.append(members[cols])
    return found_a, found_b


def _probe_pairs(values: np.ndarray, max_distance: int) -> tuple[list, list]:
    """Pairs within max_distance <= 7 by multi-index hashing: of 4 chunks of 16 bits, one
    differs in at most max_distance // 4 bits, so each hash looks up its chunk values (and
    their 16 one-bit neighbours) in the sorted chunks: about n / 65536 candidates a lookup."""
    n = len(values)
    flips = [0] + ([1 << bit for bit in range(_CHUNK_BITS)] if max_distance >= _CHUNKS else [])
    found_a, found_b = [], []
    for k in range(_CHUNKS):
        chunk = ((values >> np.uint64(64 - _CHUNK_BITS * (k + 1))) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(chunk, kind="stable")
        ordered = chunk[order]
        for flip in flips:
            target = chunk ^ flip
            low = np.searchsorted(ordered, target, "left")
            counts = np.searchsorted(ordered, target, "right") - low
            ends = np.cumsum(counts)
            start = 0
            while start < n:  # items in blocks of about _CELLS candidate pairs
                before = ends[start - 1] if start else 0
                stop = min(n, max(start + 1, int(np.searchsorted(ends, before + _CELLS, "right"))))
                count = counts[start:stop]
                a = np.repeat(np.arange(start, stop), count)
                offset = np.arange(len(a)) - np.repeat(np.cumsum(count) - count, count)
                b = order[np.repeat(low[start:stop], count) + offset]
                xor = values[a] ^ values[b]
                distance = _POPCOUNT[xor.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.int64)
                keep = (distance <= max_distance) & (xor != 0)
                found_a.append(a[keep])
                found_b.append(b[keep])
                start = stop
    return found_a, found_b


def _close_pairs(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) index pairs of `values` (distinct) within max_distance bits, both ways and a == b."""
    search = _probe_pairs if max_distance <= 7 else _bucket_pairs
    found_a, found_b = search(values, max_distance)
    a = np.concatenate([np.arange(len(values)), *found_a])
    b = np.concatenate([np.arange(len(values)), *found_b])
    pair = np.unique(a * len(values) + b)  # a pair close in several chunks is found once per chunk
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
