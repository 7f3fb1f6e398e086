"""`ingest` stage: PMC OA packages -> article shards, articles.parquet, rejected.parquet.

Pass 1 (one Prefect task per chunk of packages, on Dask): read each package once,
validate it, extract metadata and append its members to a staging tar. The flow
then drops duplicate PMCIDs deterministically (first by source name wins).
Pass 2 (one task per output shard): copy accepted articles, ordered by PMCID, from
the staging tars into the final shards by offset. Every input package ends in
exactly one of articles.parquet and rejected.parquet.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.rejection import Rejected
from tasks.common.summary import StageSummary
from tasks.common.tables import Rejection, concat_parts, rows_to_table, write_rejected, write_table
from tasks.ingest.package import Policy, inspect_package
from tasks.ingest.shards import StagingWriter, assemble_shard, shard_name
from tasks.ingest.sources import PackageSource, is_oa_list, list_folder, read_oa_list

STAGE = "ingest"
ARTICLES_SCHEMA = pa.schema([
    ("pmcid", pa.string()), ("pmid", pa.string()), ("doi", pa.string()), ("title", pa.string()),
    ("journal", pa.string()), ("year", pa.int32()), ("licence", pa.string()), ("licence_url", pa.string()),
    ("commercial_use_ok", pa.bool_()), ("package_sha256", pa.string()), ("shard", pa.string()),
    ("members", pa.list_(pa.string())), ("dropped_members", pa.list_(pa.string())), ("nxml", pa.string()),
    ("source", pa.string()), ("stage", pa.string()),
])
STAGING_SCHEMA = ARTICLES_SCHEMA.append(pa.field("staging", pa.string())) \
    .append(pa.field("member_offsets", pa.list_(pa.int64()))) \
    .append(pa.field("member_sizes", pa.list_(pa.int64())))


def _reject(source: PackageSource, error: Rejected) -> dict:
    return Rejection(item=source.name, source=source.name, reason=error.reason,
                     detail=error.detail, stage=STAGE).as_row()


@task(name="ingest-inspect")
def inspect_chunk(index: int, sources: list[PackageSource], ingest: dict, staging_dir: str):
    """Validate one chunk of packages; returns [(pmcid, source name)], rejected rows, rows part."""
    policy = Policy.from_params(ingest)
    staging = Path(staging_dir) / f"chunk-{index:06d}.tar"
    writer = StagingWriter(staging)
    valid, rejected, rows = [], [], []
    try:
        for source in sources:
            try:
                row, members = inspect_package(source, policy)
            except Rejected as error:
                rejected.append(_reject(source, error))
                continue
            except OSError as error:
                rejected.append(_reject(source, Rejected("unreadable_source", str(error))))
                continue
            placed = writer.add(row["pmcid"], members)
            row.update(
                members=[name for name, _, _ in placed], member_offsets=[o for _, o, _ in placed],
                member_sizes=[s for _, _, s in placed], staging=str(staging), stage=STAGE,
            )
            rows.append(row)
            valid.append((row["pmcid"], source.name))
    finally:
        writer.close()
    part = Path(staging_dir) / f"rows-{index:06d}.parquet"
    write_table(rows_to_table(rows, STAGING_SCHEMA), part)
    return valid, rejected, str(part)


@task(name="ingest-write-shard")
def write_shard(index: int, picks: list[tuple[str, str]], out_dir: str) -> tuple[str, int]:
    """Assemble output shard `index` from (source name, rows part) picks sorted by PMCID."""
    wanted_by_part: dict[str, list[str]] = {}
    for source_name, part in picks:
        wanted_by_part.setdefault(part, []).append(source_name)
    tables = []
    for part, names in wanted_by_part.items():
        table = pq.read_table(part, schema=STAGING_SCHEMA)
        tables.append(table.filter(pc.is_in(table["source"], value_set=pa.array(names))))
    table = pa.concat_tables(tables).sort_by([("pmcid", "ascending")])
    name = shard_name(index)
    assemble_shard(
        Path(out_dir) / "shards" / name,
        [(r["staging"], list(zip(r["members"], r["member_offsets"], r["member_sizes"])))
         for r in table.select(["staging", "members", "member_offsets", "member_sizes"]).to_pylist()],
    )
    table = table.set_column(table.schema.get_field_index("shard"), "shard",
                             pa.array([name] * table.num_rows, pa.string()))
    out = Path(out_dir) / "_parts" / f"articles-{index:06d}.parquet"
    write_table(table.select(ARTICLES_SCHEMA.names).cast(ARTICLES_SCHEMA), out)
    return str(out), table.num_rows


def discover(ingest: dict) -> tuple[list[PackageSource], int]:
    source = str(ingest["source"])
    if is_oa_list(source):
        return read_oa_list(source, ingest.get("base_url"), ingest.get("updated_after"), ingest.get("updated_before"))
    return list_folder(source), 0


def split_duplicates(valid: list[tuple[str, str, str]], by_name: dict[str, PackageSource]):
    """valid: (pmcid, source name, rows part). The first package per PMCID by source name wins."""
    kept: dict[str, tuple[str, str]] = {}
    rejected = []
    for pmcid, name, part in sorted(valid, key=lambda v: v[1]):
        if pmcid in kept:
            rejected.append(_reject(by_name[name], Rejected(
                "duplicate_pmcid", f"{pmcid} already ingested from {kept[pmcid][0]}")))
        else:
            kept[pmcid] = (name, part)
    return kept, rejected


@flow(name="ingest")
def ingest_flow(params: dict) -> dict:
    ingest = params["ingest"]
    out_dir = Path(ingest["output_dir"])
    staging_dir = out_dir / "_staging"
    for stale in ("shards", "_parts", "_staging"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    summary = StageSummary(STAGE, unit="packages")
    sources, skipped = discover(ingest)
    summary.items_in = len(sources)
    summary.extra["skipped_by_oa_list_filter"] = skipped
    print(f"[{STAGE}] {len(sources)} packages from {ingest['source']}", flush=True)
    by_name = {s.name: s for s in sources}
    if len(by_name) != len(sources):
        raise ValueError("two packages share one source name; source names must be unique")

    chunks = plan_shards(sources, int(ingest["packages_per_task"]))
    inspected = gather([inspect_chunk.submit(i, chunk, ingest, str(staging_dir)) for i, chunk in enumerate(chunks)],
                       summary)
    valid = [(pmcid, name, part) for chunk_valid, _, part in inspected for pmcid, name in chunk_valid]
    rejected = [r for _, chunk_rejected, _ in inspected for r in chunk_rejected]
    kept, duplicates = split_duplicates(valid, by_name)
    rejected += duplicates

    ordered = [kept[pmcid] for pmcid in sorted(kept)]
    written = gather([write_shard.submit(i, picks, str(out_dir))
                      for i, picks in enumerate(plan_shards(ordered, int(ingest["shard_size"])))], summary)
    summary.items_out = concat_parts([part for part, _ in written], ARTICLES_SCHEMA, out_dir / "articles.parquet")
    for stale in ("_parts", "_staging"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.add_rejections(r["reason"] for r in rejected)
    summary.extra["shards"] = len(written)
    if summary.items_out + summary.rejected != summary.items_in:
        raise RuntimeError(f"ingest lost packages: {summary.items_in} in, {summary.items_out} out, "
                           f"{summary.rejected} rejected")
    summary.write(out_dir)
    print(summary.report(), flush=True)
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(ingest_flow)
