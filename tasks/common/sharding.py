"""What a stage's plain functions hand the stage runner (flows/_runner.py): a plan of the
items that enter and the shards to run, each shard's result, and the merged outcome."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


class StageConfigError(RuntimeError):
    """A stage's inputs cannot be opened at all (a path its workers cannot see, a wrong
    location): a configuration error, not a run with bad items."""


def add_counts(total: dict, counts: dict) -> dict:
    """Sum numeric counts into `total` (other values, e.g. a nested table, are replaced)."""
    for key, value in counts.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        total[key] = total.get(key, 0) + value if numeric else value
    return total


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """Consecutive chunks of at most `size` items (order kept)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


@dataclass
class Plan:
    items: list[str]                 # the id of every item that enters the stage
    shards: list[Any]                # one argument per Prefect task
    counts: dict = field(default_factory=dict)   # deterministic counts known when planning


@dataclass
class ShardResult:
    value: Any = None                # what merge needs (a part file, rows, ...)
    rejected: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


@dataclass
class Merged:
    items_out: int                   # rows of the stage's main table
    accounted: Any                   # items (as in Plan.items) that reached an output row: a set, or
                                     # an int64 array where Plan.items is an array of codes
    rejected: list[dict] = field(default_factory=list)   # found while merging (duplicates, ...)
    counts: dict = field(default_factory=dict)


def fan_out_unless_cached(fan_out, fn: Callable, shards: list, cached: Callable[[Any], bool], *shared: Any,
                          name: str) -> list:
    """fn over every shard, in order: the shards whose entries exist (`cached`) run here, in
    the flow process (a hard link and a small read, cheaper than a task's own overhead on a
    worker), the rest as tasks through `fan_out`. An update that touches a few output shards
    then submits a few tasks, not one per shard of the corpus."""
    here = [bool(cached(shard)) for shard in shards]
    built = iter(fan_out(fn, [s for s, h in zip(shards, here) if not h], *shared, name=name))
    return [fn(shard, *shared) if h else next(built) for shard, h in zip(shards, here)]
