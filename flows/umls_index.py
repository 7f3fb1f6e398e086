"""`umls_index` stage: a QuickUMLS index and a concepts table from a UMLS META folder (or MeSH).

Reads `umls_index.meta_dir` (MRCONSO.RRF + MRSTY.RRF: a licensed UMLS installation, or
the sample's vocabulary by default), or converts `umls_index.mesh_tree` (a MeSH tree
file) to the same RRF shape first. Writes `<output_dir>/quickumls/`, `concepts.parquet`,
`rejected.parquet`, `summary.json`. Items are vocabulary rows, the main table's rows
concepts. The work is in tasks/umls/stage.py (plan, build, merge): one task, since
QuickUMLS's database is written by one process.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.umls import stage

UMLS_INDEX = ShardedStage(name="umls_index", unit="vocabulary rows", out_unit="concepts", plan=stage.plan,
                          work=stage.build, merge=stage.merge, item_of=lambda row: stage.item_code(row["item"]))


@flow(name="umls_index")
def umls_index_flow(params: dict) -> dict:
    return run_sharded(UMLS_INDEX, params["umls_index"], params["umls_index"]["output_dir"])


if __name__ == "__main__":
    run_stage_cli(umls_index_flow)
