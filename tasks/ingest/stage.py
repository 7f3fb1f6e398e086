"""The ingest stage as plain functions for the stage runner (flows/_runner.py).

plan: list the packages (a folder, an fsspec URL or an OA file list), one task per chunk.
inspect_chunk (pass 1, on a worker): read each package once, validate it, extract its
metadata and append its members to a staging tar.
merge: drop duplicate PMCIDs deterministically (first by source name wins), then
(pass 2, one task per output shard) copy accepted articles, ordered by PMCID, from the
staging tars into the final shards, and concatenate articles.parquet.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.common.rejection import Rejected
from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import concat_parts, rows_to_table, write_table
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
    return error.as_rejection(item=source.name, source=source.name, stage=STAGE).as_row()


def discover(cfg: dict) -> tuple[list[PackageSource], int]:
    """The packages to ingest, and how many rows the OA file list's date window skipped."""
    source = cfg["source"]
    if is_oa_list(source):
        return read_oa_list(source, cfg["base_url"], cfg["updated_after"], cfg["updated_before"])
    return list_folder(source), 0


def plan(cfg: dict, out: Path) -> Plan:
    sources, skipped = discover(cfg)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError("two packages share one source name; source names must be unique")
    work = [(index, chunk) for index, chunk in enumerate(chunks(sources, cfg["packages_per_task"]))]
    return Plan(items=names, shards=work, counts={"skipped_by_oa_list_filter": skipped})


def inspect_chunk(shard: tuple[int, list[PackageSource]], cfg: dict, out: str) -> ShardResult:
    """Validate one chunk of packages into a staging tar; value: ([(pmcid, source name)], rows part)."""
    index, sources = shard
    policy = Policy.from_params(cfg)
    staging_dir = Path(out) / "_parts"
    staging = staging_dir / f"chunk-{index:06d}.tar"
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
    part = staging_dir / f"rows-{index:06d}.parquet"
    write_table(rows_to_table(rows, STAGING_SCHEMA), part)
    return ShardResult(value=(valid, str(part)), rejected=rejected)


def split_duplicates(valid: list[tuple[str, str, str]]) -> tuple[dict, list[dict]]:
    """valid: (pmcid, source name, rows part). The first package per PMCID by source name wins."""
    kept: dict[str, tuple[str, str]] = {}
    rejected = []
    for pmcid, name, part in sorted(valid, key=lambda v: v[1]):
        if pmcid in kept:
            rejected.append(Rejected("duplicate_pmcid", f"{pmcid} already ingested from {kept[pmcid][0]}")
                            .as_rejection(item=name, source=name, stage=STAGE).as_row())
        else:
            kept[pmcid] = (name, part)
    return kept, rejected


def write_shard(shard: tuple[int, list[tuple[str, str]]], out: str) -> str:
    """Assemble output shard `index` from (source name, rows part) picks sorted by PMCID."""
    index, picks = shard
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
        Path(out) / "shards" / name,
        [(r["staging"], list(zip(r["members"], r["member_offsets"], r["member_sizes"])))
         for r in table.select(["staging", "members", "member_offsets", "member_sizes"]).to_pylist()],
    )
    table = table.set_column(table.schema.get_field_index("shard"), "shard",
                             pa.array([name] * table.num_rows, pa.string()))
    part = Path(out) / "_parts" / f"articles-{index:06d}.parquet"
    write_table(table.select(ARTICLES_SCHEMA.names).cast(ARTICLES_SCHEMA), part)
    return str(part)


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    valid = [(pmcid, name, part) for r in results for pmcid, name in r.value[0] for part in [r.value[1]]]
    kept, duplicates = split_duplicates(valid)
    ordered = [kept[pmcid] for pmcid in sorted(kept)]
    shards = list(enumerate(chunks(ordered, cfg["shard_size"])))
    parts = fan_out(write_shard, shards, str(out), name=f"{STAGE}-write-shard")
    items_out = concat_parts(parts, ARTICLES_SCHEMA, out / "articles.parquet")
    accounted = set(pq.read_table(out / "articles.parquet", columns=["source"])["source"].to_pylist())
    return Merged(items_out=items_out, accounted=accounted, rejected=duplicates, counts={"shards": len(shards)})
