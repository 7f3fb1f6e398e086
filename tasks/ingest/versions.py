"""Which package is the article: exact duplicates, newer versions, retractions.

Valid packages of one PMCID are first told apart by package hash: the same bytes under
another name are a duplicate (`duplicate_pmcid`; the first by source name stays). Distinct
packages are versions, ordered by the OA list's Last Updated, then by source name (a folder
has no dates: a later name is a later version). The last version is the article; each
earlier one is `superseded` by the one after it. Every version of a PMCID listed in
`ingest.retracted` is `retracted`. Superseded and retracted versions stay in articles.parquet
as history rows (status, version, superseded_by) and are rejected rows too, so what no
later stage sees is said once, with its reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.common.rejection import Rejected

CURRENT, SUPERSEDED, RETRACTED = "current", "superseded", "retracted"


@dataclass(frozen=True)
class Candidate:
    pmcid: str
    source: str           # the package's source name (the stage's item)
    package_sha256: str
    updated: str | None   # the OA list's Last Updated, when the source is a list
    part: str             # the rows part that holds its row


@dataclass(frozen=True)
class Version:
    version: int          # 1 = the oldest package of its PMCID
    status: str           # current | superseded | retracted
    superseded_by: str | None   # package_sha256 of the next version


@dataclass
class Decision:
    current: dict[str, Candidate] = field(default_factory=dict)   # pmcid -> the article's package
    versions: dict[str, Version] = field(default_factory=dict)    # source -> its place in the history
    history: list[Candidate] = field(default_factory=list)        # superseded and retracted versions
    rejected: list[dict] = field(default_factory=list)


def _reject(candidate: Candidate, reason: str, detail: str, stage: str) -> dict:
    return Rejected(reason, detail).as_rejection(item=candidate.source, source=candidate.source,
                                                 stage=stage).as_row()


def resolve(candidates: list[Candidate], retracted: set[str], stage: str) -> Decision:
    decision = Decision()
    by_pmcid: dict[str, list[Candidate]] = {}
    for candidate in sorted(candidates, key=lambda c: c.source):
        by_pmcid.setdefault(candidate.pmcid, []).append(candidate)
    for pmcid in sorted(by_pmcid):
        distinct: dict[str, Candidate] = {}
        for candidate in by_pmcid[pmcid]:
            first = distinct.setdefault(candidate.package_sha256, candidate)
            if first is not candidate:
                decision.rejected.append(_reject(candidate, "duplicate_pmcid",
                                                 f"{pmcid} already ingested from {first.source}", stage))
        versions = sorted(distinct.values(), key=lambda c: (c.updated or "", c.source))
        for number, candidate in enumerate(versions, start=1):
            newer = versions[number] if number < len(versions) else None
            status = RETRACTED if pmcid in retracted else (SUPERSEDED if newer else CURRENT)
            decision.versions[candidate.source] = Version(number, status, newer.package_sha256 if newer else None)
            if status == CURRENT:
                decision.current[pmcid] = candidate
                continue
            decision.history.append(candidate)
            if status == RETRACTED:
                decision.rejected.append(_reject(candidate, "retracted", f"{pmcid} is listed in ingest.retracted",
                                                 stage))
            else:
                when = f" (Last Updated {newer.updated})" if newer.updated else ""
                decision.rejected.append(_reject(
                    candidate, "superseded",
                    f"{pmcid} version {number} of {len(versions)}: replaced by {newer.source}{when}", stage))
    return decision


def resolve_table(candidates: pa.Table, retracted: set[str], stage: str) -> tuple[pa.Table, list[dict]]:
    """resolve() in Arrow, for a corpus: `candidates` has pmcid, source, package_sha256 and
    version_date (other columns are carried along); returns its distinct packages, ordered by
    (pmcid, version), with version, status and superseded_by, and the rejected rows. Only
    rejected rows become Python objects (a Candidate per package costs ~0.5 kB)."""
    rejected: list[dict] = []
    table = candidates.sort_by([("pmcid", "ascending"), ("package_sha256", "ascending"), ("source", "ascending")])
    same = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows > 1:
        same[1:] = _equal_next(table["pmcid"]) & _equal_next(table["package_sha256"])
    if same.any():
        first = _run_starts(~same)
        pmcids, sources = table["pmcid"], table["source"]
        for i in np.flatnonzero(same).tolist():
            rejected.append(_row(sources[i].as_py(), "duplicate_pmcid",
                                 f"{pmcids[i].as_py()} already ingested from {sources[first[i]].as_py()}", stage))
        table = table.filter(pa.array(~same))
    table = table.append_column("_updated", pc.fill_null(table["version_date"], ""))
    table = table.sort_by([("pmcid", "ascending"), ("_updated", "ascending"), ("source", "ascending")])
    table = table.drop_columns(["_updated"])
    n = table.num_rows
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = ~_equal_next(table["pmcid"])
    index = np.arange(n, dtype=np.int64)
    version = index - _run_starts(starts) + 1
    group = np.cumsum(starts) - 1
    count = np.bincount(group)[group] if n else np.zeros(0, dtype=np.int64)
    newer = version < count
    gone = pc.is_in(table["pmcid"], value_set=pa.array(sorted(retracted), pa.string())).to_numpy(zero_copy_only=False)
    codes = np.where(gone, 2, np.where(newer, 1, 0)).astype(np.int8)
    names = pa.array([CURRENT, SUPERSEDED, RETRACTED])
    status = pa.DictionaryArray.from_arrays(pa.array(codes), names).cast(pa.string())
    next_row = pa.array(np.minimum(index + 1, max(n - 1, 0)), mask=~newer)
    superseded_by = table["package_sha256"].take(next_row) if n else pa.array([], pa.string())
    pmcids, sources, dates = table["pmcid"], table["source"], table["version_date"]
    for i in np.flatnonzero(codes > 0).tolist():
        pmcid = pmcids[i].as_py()
        if codes[i] == 2:
            rejected.append(_row(sources[i].as_py(), "retracted", f"{pmcid} is listed in ingest.retracted", stage))
            continue
        when = f" (Last Updated {dates[i + 1].as_py()})" if dates[i + 1].as_py() else ""
        rejected.append(_row(sources[i].as_py(), "superseded", f"{pmcid} version {version[i]} of {count[i]}: "
                             f"replaced by {sources[i + 1].as_py()}{when}", stage))
    table = table.append_column("version", pa.array(version, pa.int32())).append_column("status", status) \
        .append_column("superseded_by", superseded_by)
    return table, rejected


def _equal_next(column: pa.ChunkedArray) -> np.ndarray:
    """Whether each value but the first equals the one before it."""
    return pc.fill_null(pc.equal(column[1:], column[:-1]), False).to_numpy(zero_copy_only=False)


def _run_starts(starts: np.ndarray) -> np.ndarray:
    """For each position, the index where its run (a True in `starts` opens one) begins."""
    return np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))


def _row(source: str, reason: str, detail: str, stage: str) -> dict:
    return Rejected(reason, detail).as_rejection(item=source, source=source, stage=stage).as_row()
