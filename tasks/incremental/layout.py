"""Shard layouts set by the items themselves, so an update rewrites only the shards it touches.

Fixed-size chunks of a sorted list move every boundary after an insertion: one new article
near the front would change every shard after it (and DVC would store each again). Here a
group starts at an item whose hash falls in 1/target of the hash space, so a boundary
depends only on the item there: adding or removing an item changes the group it falls in
(or splits or joins that group), nothing else. The layout is a function of the set of items,
never of the order they arrived in, so an update and a from-scratch run agree.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

MAX_FACTOR = 4  # a group longer than this many times the target is cut into equal runs


def starts_group(item: str, target: int) -> bool:
    digest = hashlib.sha256(item.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % target == 0


def content_groups(items: Sequence[str], target: int) -> list[list[str]]:
    """Consecutive groups of `items` (already sorted), about `target` long on average and
    at most MAX_FACTOR * target."""
    if target < 1:
        raise ValueError(f"group size must be >= 1, got {target}")
    groups: list[list[str]] = []
    for item in items:
        if not groups or starts_group(item, target):
            groups.append([item])
        else:
            groups[-1].append(item)
    cap = MAX_FACTOR * target
    out = []
    for group in groups:
        pieces = -(-len(group) // cap)
        size = -(-len(group) // pieces)
        out.extend(group[i: i + size] for i in range(0, len(group), size))
    return out
