"""The runner's accounting (every item in leaves as an output or a rejected row), for items
given as a list of ids and as an array of int64 codes (umls_index's millions of rows)."""
from array import array

import numpy as np
import pytest

from flows._runner import ShardedStage, check_accounting
from tasks.common.sharding import Merged, Plan

STAGE = ShardedStage(name="probe", unit="rows", plan=None, work=None, merge=None,
                     item_of=lambda row: row["item"])


def _as(kind, items):
    return {"list": list, "array": lambda v: array("q", v), "numpy": lambda v: np.asarray(v, np.int64)}[kind](items)


def _accounted(kind, items):
    return set(items) if kind == "list" else np.asarray(items, np.int64)


@pytest.mark.parametrize("kind", ["list", "array", "numpy"])
def test_every_item_out_or_rejected_passes(kind):
    plan = Plan(items=_as(kind, [5, 1, 9, 3]), shards=[])
    check_accounting(STAGE, plan, Merged(items_out=2, accounted=_accounted(kind, [9, 1])),
                     [{"item": 5, "reason": "bad_row"}, {"item": 3, "reason": "bad_row"}])


@pytest.mark.parametrize("kind", ["list", "array", "numpy"])
def test_an_item_neither_out_nor_rejected_is_named_as_lost(kind):
    plan = Plan(items=_as(kind, [5, 1, 9, 3]), shards=[])
    with pytest.raises(RuntimeError, match=r"lost 2 rows without a reason: \[3, 5\]"):
        check_accounting(STAGE, plan, Merged(items_out=2, accounted=_accounted(kind, [9, 1])), [])


@pytest.mark.parametrize("kind", ["list", "array", "numpy"])
def test_an_output_of_an_item_that_never_entered_is_named(kind):
    plan = Plan(items=_as(kind, [1, 2]), shards=[])
    with pytest.raises(RuntimeError, match=r"never entered: \[7\]"):
        check_accounting(STAGE, plan, Merged(items_out=3, accounted=_accounted(kind, [1, 2, 7])), [])


@pytest.mark.parametrize("kind", ["list", "array", "numpy"])
def test_an_item_planned_twice_is_an_error(kind):
    plan = Plan(items=_as(kind, [4, 2, 4]), shards=[])
    with pytest.raises(RuntimeError, match="plan lists an item twice"):
        check_accounting(STAGE, plan, Merged(items_out=2, accounted=_accounted(kind, [2, 4])), [])


def test_a_rejected_row_without_a_reason_is_an_error():
    plan = Plan(items=array("q", [1]), shards=[])
    with pytest.raises(RuntimeError, match="without a reason"):
        check_accounting(STAGE, plan, Merged(items_out=0, accounted=np.asarray([], np.int64)), [{"item": 1}])
