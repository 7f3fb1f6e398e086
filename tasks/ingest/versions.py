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
