"""The one stage runner under every data flow.

A stage declares three plain functions (in tasks/<stage>/) and the runner owns the rest:

    plan(cfg, out)                  -> Plan: every item that enters (counted from the inputs)
                                       and one argument per Prefect task; with
                                       `plan_fans_out`, plan(cfg, out, fan_out) (a parallel
                                       pass to find the items, e.g. ct_convert's header scan)
    work(shard, cfg, out)           -> ShardResult, on a Dask worker
    merge(cfg, out, plan, results, fan_out) -> Merged: the stage's tables, written under out

The runner submits one Prefect task per shard, gathers them in order with progress lines,
writes rejected.parquet, checks that every item that entered left as an output row or a
rejected row (items in are counted by `plan`, never derived from what came out), and
writes summary.json / timing.json. The output folder `out` is the temporary sibling that
`flows._stage.run_stage` swaps into place when the flow returns.

A run in which every item was rejected because its source could not be opened (the stage's
`open_failures` reasons: a path the Dask workers cannot see, a wrong location) raises
StageConfigError naming the source params, instead of ending with 0 outputs. Reasons about
an item's content never count: a stage may legitimately reject everything for those.
"""
from __future__ import annotations

import shutil
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows._stage import gather
from tasks.common.sharding import (Merged, Plan, ShardResult, StageConfigError,  # noqa: F401  (vocabulary)
                                   add_counts, fan_out_unless_cached)
from tasks.common.summary import StageSummary
from tasks.common.tables import write_rejected


@dataclass(frozen=True)
class ShardedStage:
    name: str
    unit: str                        # what Plan.items are
    plan: Callable[..., Plan]
    work: Callable[[Any, dict, str], ShardResult]
    merge: Callable[..., Merged]
    out_unit: str | None = None      # what the main table's rows are, when not `unit`
    # the input item a rejected row belongs to (figures reject "PMC1/F2" of article PMC1)
    item_of: Callable[[dict], str] = lambda row: row["item"]
    plan_fans_out: bool = False      # plan is called as plan(cfg, out, fan_out)
    # shard -> whether its result is in the stage's cache: such a shard runs in the flow
    # process (a small read, cheaper than a task), the rest as tasks
    cached: Callable[[Any], bool] | None = None
    # reasons that mean "the item's source could not be opened at all", never "its content is
    # bad", and the cfg keys (dotted below the section) naming where the sources live
    open_failures: tuple[str, ...] = ()
    source_params: tuple[str, ...] = ()


class FanOut:
    """Submits a plain function as one Prefect task per shard and gathers the results.

    No Prefect retries: a worker lost mid-task (a node gone, a SIGKILL) is recovered by Dask's
    scheduler, which reschedules the tasks it was running and recomputes results held only
    there (up to distributed.scheduler.allowed-failures deaths per task); Prefect retries
    rerun a task whose function raised, and a killed worker raises nothing. Shard functions
    are deterministic and rewrite their own part files, so a rerun gives the same bytes
    (tests/test_dask_cluster.py).
    """

    def __init__(self, stage: str, summary: StageSummary):
        self.stage, self.summary = stage, summary

    def __call__(self, fn: Callable, shards: Sequence[Any], *shared: Any, name: str | None = None) -> list:
        shard_task = task(_on_opaque(fn), name=name or f"{self.stage}-{fn.__name__}", cache_policy=NO_CACHE)
        shared_arg = Opaque(shared)
        return gather([shard_task.submit(Opaque(shard), shared_arg) for shard in shards], self.summary)


class Opaque:
    """A task's argument as one object that Prefect does not walk (looking for futures in
    every nested list and dict) and Dask does not hash item by item: with shards of hundreds
    of rows, those walks cost more than the task itself (0.25 s a submit)."""

    __slots__ = ("value", "token")

    def __init__(self, value: Any):
        self.value, self.token = value, uuid.uuid4().hex

    def __dask_tokenize__(self) -> str:
        return self.token


def _on_opaque(fn: Callable) -> Callable:
    def run_shard(shard: Opaque, shared: Opaque) -> Any:
        return fn(shard.value, *shared.value)

    run_shard.__name__ = run_shard.__qualname__ = fn.__name__  # what Dask names its keys after
    return run_shard


def check_accounting(stage: ShardedStage, plan: Plan, merged: Merged, rejected: list[dict]) -> None:
    """Every item in left as an output row or a rejected row with a reason: nothing is lost."""
    without_reason = [r for r in rejected if not r.get("reason")]
    if without_reason:
        raise RuntimeError(f"{stage.name}: rejected rows without a reason: {without_reason[:3]}")
    if isinstance(plan.items, (array, np.ndarray)):
        unknown, lost = _unaccounted_codes(stage, plan, merged, rejected)
    else:
        entered = set(plan.items)
        if len(entered) != len(plan.items):
            raise RuntimeError(f"{stage.name}: plan lists an item twice")
        rejected_items = {stage.item_of(r) for r in rejected}
        unknown = sorted((set(merged.accounted) | rejected_items) - entered)
        lost = sorted(entered - set(merged.accounted) - rejected_items)
    if len(unknown):
        raise RuntimeError(f"{stage.name}: outputs name items that never entered: {list(unknown[:5])}")
    if len(lost):
        raise RuntimeError(f"{stage.name} lost {len(lost)} {stage.unit} without a reason: {list(lost[:5])}")


def _unaccounted_codes(stage: ShardedStage, plan: Plan, merged: Merged,
                       rejected: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """check_accounting for items that are int64 codes (millions of vocabulary rows): sorted
    arrays instead of Python sets, which would cost about 60 bytes an item, several times over."""
    entered = np.sort(np.asarray(plan.items, dtype=np.int64))
    if entered.size > 1 and bool((entered[1:] == entered[:-1]).any()):
        raise RuntimeError(f"{stage.name}: plan lists an item twice")
    accounted = np.asarray(merged.accounted if isinstance(merged.accounted, np.ndarray) else list(merged.accounted),
                           dtype=np.int64)
    out = np.union1d(accounted, np.asarray([stage.item_of(r) for r in rejected], dtype=np.int64))
    return (np.setdiff1d(out, entered, assume_unique=True).tolist(),
            np.setdiff1d(entered, out, assume_unique=True))


def _param(cfg: dict, dotted: str) -> Any:
    value = cfg
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_sources_opened(stage: ShardedStage, cfg: dict, plan: Plan, merged: Merged, rejected: list[dict]) -> None:
    """Raise StageConfigError when items entered but every one failed to open its source."""
    if not stage.open_failures or not len(plan.items) or len(merged.accounted) or not rejected:
        return
    if any(row["reason"] not in stage.open_failures for row in rejected):
        return  # at least one item was opened (and kept or rejected for its content)
    where = " or ".join(f"{stage.name}.{key} = {_param(cfg, key)!r}" for key in stage.source_params
                        if _param(cfg, key) is not None) or f"the {stage.name} inputs"
    reasons = ", ".join(sorted({row["reason"] for row in rejected}))
    first = "; ".join(f"{row['item']}: {row.get('detail') or ''}" for row in rejected[:3])
    raise StageConfigError(
        f"{stage.name}: none of the {len(plan.items)} {stage.unit} could be opened ({reasons}): check {where}; "
        f"every Dask worker must read it at that path (on a cluster: a shared filesystem or an fsspec URL). "
        f"First errors: {first}")


def run_sharded(stage: ShardedStage, cfg: dict, out: str | Path) -> dict:
    """plan -> one task per shard -> merge, with the stage's accounting and summary."""
    out = Path(out)
    if not out.is_absolute():  # workers may run in other folders: see flows._stage.run_stage
        raise ValueError(f"{stage.name}: output folder {out} is relative; run the flow through "
                         "flows._stage.run_stage, which makes every location absolute")
    out.mkdir(parents=True, exist_ok=True)
    # where the run started: outputs record locations relative to it (tasks.common.locations)
    cfg = {**cfg, "run_root": str(Path.cwd())}
    summary = StageSummary(stage.name, unit=stage.unit, out_unit=stage.out_unit)
    fan_out = FanOut(stage.name, summary)
    plan = stage.plan(cfg, out, fan_out) if stage.plan_fans_out else stage.plan(cfg, out)
    summary.items_in = len(plan.items)
    print(f"[{stage.name}] {len(plan.items)} {stage.unit} in {len(plan.shards)} tasks", flush=True)
    if stage.cached is None:
        results = fan_out(stage.work, plan.shards, cfg, str(out), name=f"{stage.name}-shard")
    else:
        results = fan_out_unless_cached(fan_out, stage.work, plan.shards, stage.cached, cfg, str(out),
                                        name=f"{stage.name}-shard")
    merged = stage.merge(cfg, out, plan, results, fan_out)
    rejected = [row for result in results for row in result.rejected] + merged.rejected
    rejected = [dict(row, stage=row.get("stage") or stage.name) for row in rejected]
    check_accounting(stage, plan, merged, rejected)
    check_sources_opened(stage, cfg, plan, merged, rejected)
    write_rejected(rejected, out / "rejected.parquet")
    summary.items_out = merged.items_out
    summary.add_rejections(row["reason"] for row in rejected)
    counts = dict(plan.counts)
    for result in results:
        add_counts(counts, result.counts)
    add_counts(counts, merged.counts)
    summary.extra.update(sorted(counts.items()))
    shutil.rmtree(out / "_parts", ignore_errors=True)
    summary.write(out)
    print(summary.report(), flush=True)
    return summary.as_dict()
