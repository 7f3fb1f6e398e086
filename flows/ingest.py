"""`ingest` stage: PMC OA packages -> article shards, articles.parquet, rejected.parquet.

Two passes over the packages, both sharded on Dask: `inspect` validates every
package and reads its metadata (no bytes kept), the flow drops duplicate PMCIDs
deterministically, then `write` re-reads the accepted packages into output shards
ordered by PMCID. Every input package ends in exactly one of the two tables.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.summary import StageSummary
from tasks.common.tables import Rejection, concat_parts, write_rejected, write_rows
from tasks.ingest.package import Policy, inspect_package
from tasks.ingest.safe_tar import PackageRejected
from tasks.ingest.shards import shard_name, write_article_shard
from tasks.ingest.sources import PackageSource, is_oa_list, list_folder, read_oa_list

STAGE = "ingest"
ARTICLES_SCHEMA = pa.schema([
    ("pmcid", pa.string()), ("pmid", pa.string()), ("doi", pa.string()), ("title", pa.string()),
    ("journal", pa.string()), ("year", pa.int32()), ("licence", pa.string()), ("licence_url", pa.string()),
    ("commercial_use_ok", pa.bool_()), ("package_sha256", pa.string()), ("shard", pa.string()),
    ("members", pa.list_(pa.string())), ("nxml", pa.string()), ("source", pa.string()), ("stage", pa.string()),
])


def _reject(source: PackageSource, error: PackageRejected, item: str | None = None) -> dict:
    return Rejection(item=item or source.name, source=source.name, reason=error.reason,
                     detail=error.detail, stage=STAGE).as_row()


@task(name="ingest-inspect")
def inspect_shard(sources: list[PackageSource], ingest: dict) -> tuple[list[tuple[str, str]], list[dict]]:
    """(pmcid, source name) of valid packages, and rejected rows."""
    policy = Policy.from_params(ingest)
    valid, rejected = [], []
    for source in sources:
        try:
            row, _ = inspect_package(source, policy)
        except PackageRejected as error:
            rejected.append(_reject(source, error))
            continue
        except (FileNotFoundError, PermissionError, OSError) as error:
            rejected.append(_reject(source, PackageRejected("unreadable_source", str(error))))
            continue
        valid.append((row["pmcid"], source.name))
    return valid, rejected


@task(name="ingest-write")
def write_shard(index: int, sources: list[PackageSource], ingest: dict, out_dir: str) -> tuple[str, int, list[dict]]:
    """Write one output shard; returns its part table path, article count and late rejections."""
    policy = Policy.from_params(ingest)
    name = shard_name(index)
    rows, articles, rejected = [], [], []
    for source in sources:
        try:
            row, members = inspect_package(source, policy)
        except (PackageRejected, OSError) as error:
            # The package changed or vanished between the two passes.
            err = error if isinstance(error, PackageRejected) else PackageRejected("unreadable_source", str(error))
            rejected.append(_reject(source, err))
            continue
        articles.append((row["pmcid"], members))
        rows.append(row)
    member_names = write_article_shard(Path(out_dir) / "shards" / name, sorted(articles, key=lambda a: a[0]))
    for row in rows:
        row.update(shard=name, members=member_names[row["pmcid"]], stage=STAGE)
    part = Path(out_dir) / "_parts" / f"articles-{index:06d}.parquet"
    write_rows(rows, ARTICLES_SCHEMA, part, sort_by=("pmcid",))
    return str(part), len(rows), rejected


def discover(ingest: dict) -> tuple[list[PackageSource], int]:
    source = str(ingest["source"])
    if is_oa_list(source):
        return read_oa_list(source, ingest.get("base_url"), ingest.get("updated_after"), ingest.get("updated_before"))
    return list_folder(source), 0


def split_duplicates(valid: list[tuple[str, str]], by_name: dict[str, PackageSource]):
    """Keep the first package per PMCID in source-name order; the rest are rejected."""
    kept: dict[str, PackageSource] = {}
    rejected = []
    for pmcid, name in sorted(valid, key=lambda v: v[1]):
        if pmcid in kept:
            rejected.append(_reject(by_name[name], PackageRejected(
                "duplicate_pmcid", f"{pmcid} already ingested from {kept[pmcid].name}")))
        else:
            kept[pmcid] = by_name[name]
    return kept, rejected


@flow(name="ingest")
def ingest_flow(params: dict) -> dict:
    ingest = params["ingest"]
    out_dir = Path(ingest["output_dir"])
    for stale in ("shards", "_parts"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    summary = StageSummary(STAGE, unit="packages")
    sources, skipped = discover(ingest)
    summary.items_in = len(sources)
    summary.extra["skipped_by_oa_list_filter"] = skipped
    print(f"[{STAGE}] {len(sources)} packages from {ingest['source']}", flush=True)
    by_name = {s.name: s for s in sources}
    if len(by_name) != len(sources):
        raise ValueError("two packages share one source name; source names must be unique")

    inspected = gather(
        [inspect_shard.submit(chunk, ingest) for chunk in plan_shards(sources, int(ingest["packages_per_task"]))],
        summary,
    )
    valid = [v for chunk_valid, _ in inspected for v in chunk_valid]
    rejected = [r for _, chunk_rejected in inspected for r in chunk_rejected]
    kept, duplicates = split_duplicates(valid, by_name)
    rejected += duplicates

    ordered = [kept[pmcid] for pmcid in sorted(kept)]
    written = gather(
        [write_shard.submit(i, chunk, ingest, str(out_dir))
         for i, chunk in enumerate(plan_shards(ordered, int(ingest["shard_size"])))],
        summary,
    )
    parts = [part for part, _, _ in written]
    rejected += [r for _, _, late in written for r in late]
    summary.items_out = concat_parts(parts, ARTICLES_SCHEMA, out_dir / "articles.parquet")
    shutil.rmtree(out_dir / "_parts", ignore_errors=True)
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.add_rejections(r["reason"] for r in rejected)
    summary.extra["shards"] = len(parts)
    if summary.items_out + summary.rejected != summary.items_in:
        raise RuntimeError(f"ingest lost packages: {summary.items_in} in, {summary.items_out} out, "
                           f"{summary.rejected} rejected")
    summary.write(out_dir)
    print(summary.report(), flush=True)
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(ingest_flow)
