"""`sample` stage: generate the embedded default inputs from `sample.seed`.

Each part (literature, vocabulary, ct, reports, ...) is a generator module in
tasks/sample/ exposing `plan(params) -> list[shard]` and
`generate_shard(params, shard) -> dict of counts`, plus an optional
`finalize(params, shard_results) -> dict of counts`.
"""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from prefect import flow, task

from flows._stage import gather, run_stage_cli
from tasks.common.summary import StageSummary

# part name -> module in tasks/sample/
PARTS = {
    "literature": "tasks.sample.literature",
    "vocabulary": "tasks.sample.vocabulary",
    "ct": "tasks.sample.ct_phantoms",
    "reports": "tasks.sample.reports",
}


@task(name="sample-shard")
def generate_shard(part: str, params: dict, shard) -> dict:
    return importlib.import_module(PARTS[part]).generate_shard(params, shard)


@flow(name="sample")
def sample_flow(params: dict) -> dict:
    sample_params = params["sample"]
    out_dir = Path(sample_params["output_dir"])
    summary = StageSummary("sample", unit="items")
    for part in sample_params["parts"]:
        if part not in PARTS:
            raise ValueError(f"sample.parts names unknown part {part!r}; known: {sorted(PARTS)}")
        module = importlib.import_module(PARTS[part])
        part_dir = out_dir / module.OUTPUT_SUBDIR
        if part_dir.exists():
            shutil.rmtree(part_dir)  # outputs are rewritten completely
        shards = module.plan(params)
        futures = [generate_shard.submit(part, params, shard) for shard in shards]
        results = gather(futures, summary)
        counts = module.finalize(params, results) if hasattr(module, "finalize") else {}
        for result in results:
            for key, value in result.items():
                counts[key] = counts.get(key, 0) + value if isinstance(value, int) else value
        summary.items_out += int(counts.get("items", 0))
        summary.extra[part] = {k: v for k, v in sorted(counts.items())}
    summary.items_in = summary.items_out
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(sample_flow)
