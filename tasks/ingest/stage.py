"""The ingest stage as plain functions for the stage runner (flows/_runner.py).

plan: list the packages (a folder, an fsspec URL or an OA file list), in chunks whose
boundaries the source names set. A chunk whose every package is local and unchanged (size,
mtime, inode) since a run that cached the chunk's result is read back in the flow process
(chunks_cached); the others go to tasks of about `packages_per_task` packages.
inspect_chunks (pass 1, on a worker), for each chunk: hash each package (a file whose size, mtime and inode
are unchanged keeps its remembered hash); a package seen before (same bytes, name, params and
code: tasks/incremental/store.py) is not read again, its cached result is used; a new one is
read once, validated, its metadata extracted and its kept members written to its cache entry
(a staging tar).
merge: one version per PMCID, resolved in Arrow over five narrow columns of the rows parts
(tasks/ingest/versions.py: duplicates, newer versions, retractions), then (pass 2, one task per
output shard, given a spec: its packages, their parts and versions, never the rows) copy the
current articles, ordered by PMCID, from the staging tars into shards whose boundaries the
PMCIDs set (tasks/incremental/layout.py), and write articles.parquet with every version's row.
What a task returns stays small (parts, keys as one bytes array), since the flow holds all of it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.common.hashing import sha256_stream
from tasks.common.locations import UNREADABLE_SOURCE, is_url
from tasks.common.rejection import Rejected
from tasks.common.sharding import Merged, Plan, ShardResult, fan_out_unless_cached
from tasks.common.tables import concat_parts, rows_to_table, write_table
from tasks.incremental.layout import content_groups
from tasks.incremental.store import (ItemCache, SortedKeys, cache_dir_for, code_version, item_key, params_for_key,
                                     run_record)
from tasks.ingest import versions
from tasks.ingest.package import Policy, inspect_package
from tasks.ingest.shards import StagingWriter, assemble_shard, shard_name
from tasks.ingest.sources import PackageSource, is_oa_list, list_folder, read_oa_list

STAGE = "ingest"
ARTICLES_SCHEMA = pa.schema([
    ("pmcid", pa.string()), ("pmid", pa.string()), ("doi", pa.string()), ("title", pa.string()),
    ("journal", pa.string()), ("year", pa.int32()), ("licence", pa.string()), ("licence_url", pa.string()),
    ("commercial_use_ok", pa.bool_()), ("package_sha256", pa.string()), ("shard", pa.string()),
    ("members", pa.list_(pa.string())), ("dropped_members", pa.list_(pa.string())), ("nxml", pa.string()),
    ("members_sha256", pa.string()),      # names, sizes and bytes of the kept members
    ("version", pa.int32()),              # 1 = the oldest package of this PMCID
    ("version_date", pa.string()),        # the OA list's Last Updated (null for a folder)
    ("status", pa.string()),              # current (in the shards) | superseded | retracted
    ("superseded_by", pa.string()),       # package_sha256 of the next version
    ("source", pa.string()), ("stage", pa.string()),
])
STAGING_SCHEMA = ARTICLES_SCHEMA.append(pa.field("staging", pa.string())) \
    .append(pa.field("member_offsets", pa.list_(pa.int64()))) \
    .append(pa.field("member_sizes", pa.list_(pa.int64())))
# ingest params that place or group packages, never change one package's result
# fsspec info fields that change with a remote object's content (S3, GCS, HTTP, Azure)
VERSION_TAGS = ("ETag", "etag", "LastModified", "last_modified", "Last-Modified", "mtime", "md5Hash", "generation",
                "version_id")
SHARD_SUFFIX = ".shard.tar"
CHUNK_ROWS, CHUNK_RESULT = ".rows.parquet", ".chunk.json"   # a chunk's staging rows, and its result
CANDIDATE_COLUMNS = ["pmcid", "source", "package_sha256", "version_date", "staging"]
SPEC_COLUMNS = ["source", "staging", "version_date", "version", "status", "superseded_by"]
PACKAGES_PER_CHUNK = 25   # packages whose results are cached as one (at most packages_per_task)
LAYOUT_KEYS = ("source", "base_url", "updated_after", "updated_before", "output_dir", "shard_size",
               "packages_per_task", "retracted", "incremental")


def _reject(source: PackageSource, error: Rejected) -> dict:
    return error.as_rejection(item=source.name, source=source.name, stage=STAGE).as_row()


def discover(cfg: dict) -> tuple[list[PackageSource], int]:
    """The packages to ingest, and how many rows the OA file list's date window skipped."""
    source = cfg["source"]
    if is_oa_list(source):
        return read_oa_list(source, cfg["base_url"], cfg["updated_after"], cfg["updated_before"])
    return list_folder(source), 0


def run_context(cfg: dict, out: Path) -> dict:
    """What every task needs to find and name cache entries (plain values, for Dask)."""
    return {"cache": str(cache_dir_for(out)), "read": cfg["incremental"], "code": code_version(__name__),
            "params": params_for_key(cfg, LAYOUT_KEYS)}


def plan(cfg: dict, out: Path) -> Plan:
    sources, skipped = discover(cfg)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError("two packages share one source name; source names must be unique")
    run = run_context(cfg, out)
    by_name = {s.name: s for s in sources}
    # chunk boundaries set by the names (tasks/incremental/layout.py): new packages change the
    # chunks they fall in, and every other chunk keeps its cache entry
    size = min(PACKAGES_PER_CHUNK, cfg["packages_per_task"])
    chunked = [[by_name[name] for name in group] for group in content_groups(sorted(by_name), size)]
    keyed = [(chunk, chunk_key(chunk, run)) for chunk in chunked]  # each package looked at once, here
    return Plan(items=names, shards=_tasks(keyed, run, cfg["packages_per_task"]),
                counts={"skipped_by_oa_list_filter": skipped})


Chunk = tuple[list[PackageSource], str | None]   # a chunk's packages and the key of its cached result


def _tasks(keyed: list[Chunk], run: dict, per_task: int) -> list[tuple]:
    """(index, chunks, run) per task: the chunks already cached in a task of their own (read
    back in the flow process: chunks_cached), the others in tasks of about `per_task` packages."""
    tasks, pending, size = [], [], 0
    is_cached = [chunks_cached((0, [chunk], run)) for chunk in keyed]
    if any(is_cached):
        tasks.append([chunk for chunk, cached in zip(keyed, is_cached) if cached])
    for chunk in (chunk for chunk, cached in zip(keyed, is_cached) if not cached):
        if pending and size + len(chunk[0]) > per_task:
            tasks.append(pending)
            pending, size = [], 0
        pending.append(chunk)
        size += len(chunk[0])
    tasks += [pending] if pending else []
    return [(index, chunks, run) for index, chunks in enumerate(tasks)]


def chunk_key(sources: list[PackageSource], run: dict) -> str | None:
    """The entry of a whole chunk's result, keyed by what says each package is unchanged
    (its listing and file stamp); None when a package is remote or cannot be looked at now,
    so that the chunk goes to a worker (which stats remote objects in parallel)."""
    described = []
    for source in sources:
        if source.rejection is not None or source.uri is None:
            described.append([source.name, source.rejection])
            continue
        if is_url(source.uri.removeprefix("file://")):
            return None
        try:
            stamp = _stamp(source)
        except OSError:
            return None
        described.append([source.name, source.oa_licence, source.accession, source.updated, stamp])
    return item_key(STAGE, "chunk", run["code"], run["params"], described)


def chunks_cached(shard: tuple[int, list[Chunk], dict]) -> bool:
    """Whether every chunk of a task has its result in the cache."""
    _, keyed, run = shard
    return all(key is not None and ItemCache.of(run).has(key, CHUNK_ROWS, CHUNK_RESULT) for _, key in keyed)


def inspect_chunks(shard: tuple[int, list[Chunk], dict], cfg: dict, out: str) -> ShardResult:
    """A task's chunks of packages (inspect_chunk each); value: the rows parts holding its valid
    packages, the cache entries it used (a compact array: the flow holds every task's value until
    the merge) and what was computed."""
    index, keyed, run = shard
    parts, keys, rejected, packages, processed, reused = [], [], [], 0, 0, 0
    for number, (chunk, whole) in enumerate(keyed):
        result = inspect_chunk((f"{index:06d}-{number:04d}", chunk, whole, run), cfg, out)
        parts += [result.value["part"]] if result.value["valid"] else []
        keys += result.value["keys"] + result.value["stamps"]
        packages += len(result.value["keys"])
        rejected += result.rejected
        processed += result.value["processed"]
        reused += result.value["chunk_reused"]
    return ShardResult(value={"parts": parts, "keys": np.array(keys, dtype="S64"), "packages": packages,
                              "processed": processed, "chunks_reused": reused, "chunks": len(keyed)},
                       rejected=rejected)


def _stamp(source: PackageSource) -> dict | None:
    """What says a package file is unchanged without reading it (as DVC's own state does):
    a local file's size, mtime and inode, a remote object's size and version tags; None
    when the filesystem gives no such tag."""
    uri = source.uri.removeprefix("file://")
    if not is_url(uri):
        stat = os.stat(uri)
        return {"uri": uri, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    fs, path = fsspec.core.url_to_fs(uri)
    info = fs.info(path)
    tags = {k: str(info[k]) for k in VERSION_TAGS if info.get(k)}
    return {"uri": uri, "size": info["size"], **tags} if tags and info.get("size") is not None else None


def _package_sha256(source: PackageSource, cache: ItemCache) -> tuple[str, str | None]:
    """(sha256 of the package file, the key of its remembered hash): read once per version."""
    stamp = _stamp(source)
    key = item_key(STAGE, "package-file", stamp) if stamp else None
    known = cache.read_json(key, ".sha256") if key else None
    if known:
        return known, key
    with fsspec.open(source.uri, "rb") as handle:
        digest = sha256_stream(handle)
    if key:
        cache.write_json(key, ".sha256", digest)
    return digest, key


def _inspect_into(cache: ItemCache, key: str, source: PackageSource, policy: Policy) -> dict:
    """Read and validate one package into its cache entry. An OSError (the source cannot be
    read now, a passing condition) propagates and nothing is cached."""
    try:
        row, members = inspect_package(source, policy)
    except Rejected as error:
        record = {"rejected": _reject(source, error)}
    else:
        staging = cache.temporary(key, ".tar")
        writer = StagingWriter(staging)
        try:
            placed, members_sha256 = writer.add(row["pmcid"], members)
        finally:
            writer.close()
        cache.commit(staging, key, ".tar")
        record = {"row": dict(row, members=[n for n, _, _ in placed], member_offsets=[o for _, o, _ in placed],
                              member_sizes=[s for _, _, s in placed], members_sha256=members_sha256)}
    cache.write_json(key, ".json", record)
    return record


def inspect_chunk(shard: tuple[str, list[PackageSource], str | None, dict], cfg: dict, out: str) -> ShardResult:
    """One chunk of packages (with the key of its whole result, chunk_key): that cached result,
    or each package from the cache or read afresh; value: the valid packages as (pmcid, source
    name, package hash, Last Updated), their rows part and what was computed."""
    label, sources, whole, run = shard
    cache = ItemCache.of(run)
    part = Path(out) / "_parts" / f"rows-{label}.parquet"
    stored = cache.read_json(whole, CHUNK_RESULT) if whole else None
    if stored is not None and cache.has(whole, CHUNK_ROWS):
        cache.place(whole, CHUNK_ROWS, part, build=None)
        return ShardResult(value=dict(stored["value"], part=str(part), processed=0, chunk_reused=True),
                           rejected=stored["rejected"])
    policy = Policy.from_params(cfg)
    valid, rejected, rows, keys, stamps, processed = [], [], [], [], [], 0
    for source in sources:
        if source.rejection is not None or source.uri is None:  # refused while listing: never opened
            rejected.append(_reject(source, Rejected(*(source.rejection or (UNREADABLE_SOURCE, "no location")))))
            continue
        try:
            package_sha256, stamp_key = _package_sha256(source, cache)
            stamps += [stamp_key] if stamp_key else []
            key = item_key(STAGE, run["code"], run["params"], source.name, source.oa_licence, source.accession,
                           package_sha256)
            record = cache.read_json(key, ".json")
            if record is None:
                record = _inspect_into(cache, key, source, policy)
                processed += 1
        except OSError as error:
            rejected.append(_reject(source, Rejected(UNREADABLE_SOURCE, str(error))))
            continue
        keys.append(key)
        if "rejected" in record:
            rejected.append(record["rejected"])
            continue
        row = dict(record["row"], staging=str(cache.path(key, ".tar")), version_date=source.updated, stage=STAGE)
        rows.append(row)
        valid.append((row["pmcid"], source.name, row["package_sha256"], source.updated))
    write_table(rows_to_table(rows, STAGING_SCHEMA), part)
    value = {"valid": valid, "keys": keys, "stamps": stamps + ([whole] if whole else [])}
    if whole and not any(r["reason"] == UNREADABLE_SOURCE for r in rejected):  # that one may pass next time
        cache.place(whole, CHUNK_ROWS, part, build=lambda tmp: shutil.copyfile(part, tmp))
        cache.write_json(whole, CHUNK_RESULT, {"value": value, "rejected": rejected})
    return ShardResult(value=dict(value, part=str(part), processed=processed, chunk_reused=False), rejected=rejected)


def _read_part(path: str, columns: list[str] | None = None) -> pa.Table:
    """One rows part, read without the dataset layer or threads (their buffers and pools stay
    in the process: ~60 MB, and more with every part read that way)."""
    with pq.ParquetFile(path, pre_buffer=False) as handle:
        return handle.read(columns=columns, use_threads=False)


def _candidates(parts: list[str]) -> pa.Table:
    """The columns version resolution and the shard specs need, of every valid package."""
    tables = [pa.table({name: pa.array([], pa.string()) for name in CANDIDATE_COLUMNS}).append_column(
        "part", pa.array([], pa.int32()))]
    for number, part in enumerate(parts):
        table = _read_part(part, CANDIDATE_COLUMNS)
        tables.append(table.append_column("part", pa.array(np.full(table.num_rows, number, np.int32))))
    return pa.concat_tables(tables).combine_chunks()


def _spec(decided: pa.Table, parts: pa.Array) -> pa.Table:
    """What a shard task reads: its packages, their rows parts and their place in the history."""
    return decided.select(SPEC_COLUMNS).append_column("part", parts.take(decided["part"]))


def _rows(spec: pa.Table) -> pa.Table:
    """The staging rows of a spec's packages (read from their parts), with their place in the history."""
    picks = spec.to_pylist()
    by_part: dict[str, list[str]] = {}
    for pick in picks:
        by_part.setdefault(pick["part"], []).append(pick["source"])
    tables = [STAGING_SCHEMA.empty_table()]
    for part, names in sorted(by_part.items()):
        table = _read_part(part).cast(STAGING_SCHEMA)
        tables.append(table.filter(pc.is_in(table["source"], value_set=pa.array(names, pa.string()))))
    table = pa.concat_tables(tables)
    decided = {pick["source"]: pick for pick in picks}
    sources = table["source"].to_pylist()
    for name, kind in (("version", pa.int32()), ("status", pa.string()), ("superseded_by", pa.string())):
        values = pa.array([decided[s][name] for s in sources], kind)
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table.sort_by([("pmcid", "ascending"), ("version", "ascending")])


def shard_key(shard: tuple[str, pa.Table, dict]) -> str:
    """Keyed by its packages' entries (a staging tar names one cache entry, its row) and their
    place in the history, never by where this run's parts lie."""
    name, spec, run = shard
    return item_key(STAGE, "shard", run["code"], name, spec.drop_columns(["part"]).to_pylist())


def shard_cached(shard: tuple[str, pa.Table, dict]) -> bool:
    return ItemCache.of(shard[2]).has(shard_key(shard), SHARD_SUFFIX)


def write_shard(shard: tuple[str, pa.Table, dict], out: str) -> dict:
    """Output shard `name` from its articles' staging rows (read from the parts its spec names): the shard
    is an entry of the cache keyed by those rows, placed as a hard link
    (tasks/incremental/store.py), so an unchanged shard is not copied again; value: its
    articles part and entry key."""
    name, spec, run = shard
    cache = ItemCache.of(run)
    key = shard_key(shard)
    table = _rows(spec)
    articles = [(r["staging"], list(zip(r["members"], r["member_offsets"], r["member_sizes"])))
                for r in table.select(["staging", "members", "member_offsets", "member_sizes"]).to_pylist()]
    reused = cache.place(key, SHARD_SUFFIX, Path(out) / "shards" / name, lambda tmp: assemble_shard(tmp, articles))
    table = table.set_column(table.schema.get_field_index("shard"), "shard",
                             pa.array([name] * table.num_rows, pa.string()))
    part = Path(out) / "_parts" / f"articles-{name}.parquet"
    write_table(table.select(ARTICLES_SCHEMA.names).cast(ARTICLES_SCHEMA), part)
    return {"part": str(part), "key": key, "reused": reused}


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    parts = [part for r in results for part in r.value["parts"]]
    decided, rejected = versions.resolve_table(_candidates(parts), set(cfg["retracted"]), STAGE)
    paths = pa.array(parts, pa.string())
    current = decided.filter(pc.equal(decided["status"], versions.CURRENT))
    # shards get a spec each (their packages and parts), never the rows: the flow holds no wide row
    groups = [len(group) for group in content_groups(current["pmcid"].to_pylist(), cfg["shard_size"])]
    run, shards, start = run_context(cfg, out), [], 0
    for size in groups:
        piece = current.slice(start, size)
        shards.append((shard_name(piece["pmcid"][0].as_py()), _spec(piece, paths), run))
        start += size
    del current
    written = fan_out_unless_cached(fan_out, write_shard, shards, shard_cached, str(out), name=f"{STAGE}-write-shard")
    history = out / "_parts" / "history.parquet"
    table = _rows(_spec(decided.filter(pc.not_equal(decided["status"], versions.CURRENT)), paths))
    write_table(table.select(ARTICLES_SCHEMA.names).cast(ARTICLES_SCHEMA), history)
    del decided, table, shards
    concat_parts([w["part"] for w in written] + [history], ARTICLES_SCHEMA, out / "articles.parquet",
                 sort_by=("pmcid", "version"))
    accounted = set(_read_part(str(out / "articles.parquet"), ["source"])["source"].to_pylist())
    keys = np.concatenate([r.value["keys"] for r in results] + [np.array([w["key"] for w in written], "S64")])
    processed = sum(r.value["processed"] for r in results)
    pruned = ItemCache(cache_dir_for(out)).prune(SortedKeys(keys))
    reused = sum(r.value["packages"] for r in results) - processed
    run_record(out, STAGE, len(plan.items), processed, reused, cfg["incremental"], pruned,
               shards_reused=sum(w["reused"] for w in written),
               chunks_reused=sum(r.value["chunks_reused"] for r in results),
               chunks=sum(r.value["chunks"] for r in results))
    return Merged(items_out=sum(groups), accounted=accounted, rejected=rejected,
                  counts={"shards": len(groups)})
