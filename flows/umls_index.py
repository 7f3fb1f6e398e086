"""`umls_index` stage: a QuickUMLS index and a concepts table from a UMLS META folder (or MeSH).

Reads `umls_index.meta_dir` (MRCONSO.RRF + MRSTY.RRF: a licensed UMLS installation, or
the sample's vocabulary by default), or converts `umls_index.mesh_tree` (a MeSH tree
file) to the same RRF shape first. Writes `<output_dir>/quickumls/`, `concepts.parquet`,
`rejected.parquet`, `summary.json`. One task: QuickUMLS's database is written by one process.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, task

from flows._stage import gather, run_stage_cli
from tasks.common.params import section
from tasks.common.summary import StageSummary
from tasks.common.tables import write_rejected

STAGE = "umls_index"


@task(name="umls-index-build")
def build_task(p: dict) -> dict:
    from tasks.umls.index import build_index
    from tasks.umls.mesh import mesh_to_rrf

    options = dict(
        language=p.get("language", "ENG"), sources=p.get("sources"), term_types=p.get("term_types"),
        semantic_types=p.get("semantic_types"), lowercase=bool(p.get("lowercase", True)),
        normalize_unicode=bool(p.get("normalize_unicode", True)),
        database_backend=p.get("database_backend", "unqlite"),
        acronym_max_len=int(p.get("acronym_max_len", 6)), stage=STAGE,
    )
    if p.get("mesh_tree"):
        with tempfile.TemporaryDirectory(prefix="mesh_meta_") as tmp:
            converted = mesh_to_rrf(p["mesh_tree"], tmp, bool(p.get("mesh_permute_inverted", True)))
            result = build_index(tmp, p["output_dir"], semantic_groups_file=Path(tmp) / "SemGroups.txt", **options)
        result["rejected"] += [{"item": line.split(":", 1)[0], "source": str(p["mesh_tree"]),
                                "reason": "malformed_mesh_line", "detail": line, "stage": STAGE}
                               for line in converted["bad"]]
        result["counts"]["mesh_descriptors"] = converted["descriptors"]
        return result
    groups = p.get("semantic_groups")
    if groups and not Path(groups).is_file():
        raise FileNotFoundError(f"umls_index.semantic_groups: {groups} not found")
    return build_index(p["meta_dir"], p["output_dir"], semantic_groups_file=groups, **options)


@flow(name=STAGE)
def umls_index_flow(params: dict) -> dict:
    p = section(params, STAGE)
    out_dir = Path(p["output_dir"])
    summary = StageSummary(STAGE, unit="concepts")
    (result,) = gather([build_task.submit(p)], summary)
    write_rejected(result["rejected"], out_dir / "rejected.parquet")
    summary.add_rejections(r["reason"] for r in result["rejected"])
    summary.items_out = result["counts"]["concepts"]
    summary.items_in = summary.items_out + summary.rejected
    summary.extra.update(result["counts"])
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(umls_index_flow)
