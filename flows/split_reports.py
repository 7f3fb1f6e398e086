"""`split_reports` stage: radiology reports -> clauses with anatomy and findings,
one description per (study, anatomy), the 18 CT-RATE labels per report.

    python -m flows.split_reports [-S split_reports.reports=path.csv ...]
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.summary import StageSummary
from tasks.common.tables import concat_parts, write_rejected, write_rows
from tasks.reports import stage as rs


@task(name="split-reports-shard")
def split_shard(index: int, reports: list[dict], cfg: dict, link_params: dict, source: str,
                source_sha256: str, parts_dir: str) -> dict:
    out = rs.process_shard(reports, cfg, link_params, source, source_sha256)
    parts = Path(parts_dir)
    write_rows(out["sentences"], rs.SENTENCES_SCHEMA, parts / f"sentences-{index:06d}.parquet")
    write_rows(out["anatomy"], rs.ANATOMY_SCHEMA, parts / f"anatomy-{index:06d}.parquet")
    write_rows(out["labels"], rs.labels_schema(cfg["labels"]), parts / f"labels-{index:06d}.parquet")
    return {"rejected": out["rejected"], "counts": out["counts"], "linker": out["linker"],
            "positives": {n: sum(r[n] for r in out["labels"]) for n in cfg["labels"]},
            "anatomy_rows": len(out["anatomy"]), "defaulted": sum(r["defaulted"] for r in out["anatomy"]),
            "abnormal_anatomy": sum(not r["is_normal"] for r in out["anatomy"]), "reports_out": len(out["labels"])}


@flow(name="split_reports")
def split_reports_flow(params: dict) -> dict:
    cfg = rs.resolve_config(params)
    out_dir = Path(cfg["output_dir"])
    summary = StageSummary(rs.STAGE, unit="reports")
    frame = rs.read_reports(cfg)
    source = str(cfg["reports"])
    source_sha = rs.source_hash(source)
    reports, rejected = rs.build_inputs(frame, cfg, params, source)
    summary.items_in = len(frame)

    parts_dir = out_dir / "_parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(reports, int(cfg.get("reports_per_task") or 200))
    link_params = dict(params.get("link_concepts") or {})
    futures = [split_shard.submit(i, shard, cfg, link_params, source, source_sha, str(parts_dir))
               for i, shard in enumerate(shards)]
    results = gather(futures, summary)

    counts, positives, linkers = Counter(), Counter(), set()
    for r in results:
        rejected.extend(r["rejected"])
        counts.update(r["counts"])
        positives.update(r["positives"])
        linkers.add(r["linker"])
        counts.update({k: r[k] for k in ("anatomy_rows", "defaulted", "abnormal_anatomy", "reports_out")})
    n = len(shards)
    concat_parts([parts_dir / f"sentences-{i:06d}.parquet" for i in range(n)], rs.SENTENCES_SCHEMA,
                 out_dir / "sentences.parquet", sort_by=("study_id", "sentence_index", "clause_index"))
    concat_parts([parts_dir / f"anatomy-{i:06d}.parquet" for i in range(n)], rs.ANATOMY_SCHEMA,
                 out_dir / "anatomy_texts.parquet", sort_by=("study_id", "anatomy"))
    concat_parts([parts_dir / f"labels-{i:06d}.parquet" for i in range(n)], rs.labels_schema(cfg["labels"]),
                 out_dir / "report_labels.parquet", sort_by=("study_id",))
    write_rejected(rejected, out_dir / "rejected.parquet")
    shutil.rmtree(parts_dir, ignore_errors=True)

    summary.items_out = counts["reports_out"]
    summary.add_rejections(r["reason"] for r in rejected)
    summary.extra.update({
        "linker": "+".join(sorted(linkers)) or "none",
        "sentences": counts["sentences"], "clauses": counts["clauses"],
        "anatomy_texts": counts["anatomy_rows"], "anatomy_defaulted": counts["defaulted"],
        "anatomy_abnormal": counts["abnormal_anatomy"],
        "label_positives": {k: positives[k] for k in cfg["labels"]},
    })
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(split_reports_flow)
