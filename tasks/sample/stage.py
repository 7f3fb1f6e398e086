"""The sample stage as plain functions for the stage runner (flows/_runner.py).

Each part (literature, vocabulary, ct, reports) is a generator module exposing
`OUTPUT_SUBDIR`, `plan(params) -> list[shard]`, `generate_shard(params, shard) -> counts`
and optionally `finalize(params, shard_results) -> counts`; `params` is {"sample": cfg}.
Items in are the planned shards (`<part>/<n>`); items out are what the generators made.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from tasks.common.sharding import Merged, Plan, ShardResult, add_counts

PARTS = {
    "literature": "tasks.sample.literature",
    "vocabulary": "tasks.sample.vocabulary",
    "ct": "tasks.sample.ct_phantoms",
    "reports": "tasks.sample.reports",
}


def _params(cfg: dict, out: str | Path) -> dict:
    return {"sample": {**cfg, "output_dir": str(out)}}


def plan(cfg: dict, out: Path) -> Plan:
    shards = []
    for part in cfg["parts"]:
        module = importlib.import_module(PARTS[part])
        shards += [(f"{part}/{n}", part, shard) for n, shard in enumerate(module.plan(_params(cfg, out)))]
    return Plan(items=[item for item, _, _ in shards], shards=shards)


def generate(shard: tuple, cfg: dict, out: str) -> ShardResult:
    item, part, payload = shard
    counts = importlib.import_module(PARTS[part]).generate_shard(_params(cfg, out), payload)
    return ShardResult(value=(item, part, counts))


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    by_part: dict[str, list[dict]] = {}
    for result in results:
        by_part.setdefault(result.value[1], []).append(result.value[2])
    counts, items_out = {}, 0
    for part in cfg["parts"]:
        module = importlib.import_module(PARTS[part])
        part_results = by_part.get(part, [])
        part_counts = module.finalize(_params(cfg, out), part_results) if hasattr(module, "finalize") else {}
        for result in part_results:
            add_counts(part_counts, result)
        items_out += int(part_counts.get("items", 0))
        counts[part] = dict(sorted(part_counts.items()))
    return Merged(items_out=items_out, accounted={r.value[0] for r in results}, counts=counts)
