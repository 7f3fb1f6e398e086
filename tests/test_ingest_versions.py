"""versions.resolve_table (Arrow, for a corpus) decides exactly what versions.resolve does."""
from __future__ import annotations

import random

import pyarrow as pa

from tasks.ingest.versions import Candidate, resolve, resolve_table


def _table(candidates: list[Candidate]) -> pa.Table:
    columns = {"pmcid": [c.pmcid for c in candidates], "source": [c.source for c in candidates],
               "package_sha256": [c.package_sha256 for c in candidates],
               "version_date": [c.updated for c in candidates], "part": [c.part for c in candidates]}
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def _both(candidates: list[Candidate], retracted: set[str]):
    decision = resolve(candidates, retracted, "ingest")
    table, rejected = resolve_table(_table(candidates), retracted, "ingest")
    return decision, table, rejected


def _check(candidates: list[Candidate], retracted: set[str]) -> pa.Table:
    decision, table, rejected = _both(candidates, retracted)
    rows = table.to_pylist()
    assert {r["source"]: (r["version"], r["status"], r["superseded_by"]) for r in rows} == {
        s: (v.version, v.status, v.superseded_by) for s, v in decision.versions.items()}
    assert {r["pmcid"]: r["source"] for r in rows if r["status"] == "current"} == {
        p: c.source for p, c in decision.current.items()}
    assert sorted(map(sorted, map(dict.items, rejected))) == sorted(map(sorted, map(dict.items, decision.rejected)))
    assert [(r["pmcid"], r["version"]) for r in rows] == sorted((r["pmcid"], r["version"]) for r in rows)
    assert all(r["part"] == f"part-{r['source']}" for r in rows)  # other columns travel with their row
    return table


def _c(pmcid, source, sha, updated=None):
    return Candidate(pmcid, source, sha, updated, f"part-{source}")


def test_ties_newer_versions_duplicates_and_retractions():
    table = _check([_c("PMC1", "b", "h2", "2025-01-01"), _c("PMC1", "a", "h1", "2024-01-01"),
                    _c("PMC1", "c", "h1", "2026-01-01"), _c("PMC1", "d", "h3", "2025-01-01"),  # tie: name decides
                    _c("PMC2", "z", "h4"), _c("PMC2", "y", "h5"), _c("PMC3", "x", "h6"),
                    _c("PMC4", "w", "h7", "2020-01-01"), _c("PMC4", "v", "h8")], {"PMC2"})
    assert [(r["source"], r["status"]) for r in table.to_pylist()] == [
        ("a", "superseded"), ("b", "superseded"), ("d", "current"), ("y", "retracted"), ("z", "retracted"),
        ("x", "current"), ("v", "superseded"), ("w", "current")]


def test_random_tables_agree_with_the_python_resolution():
    draw = random.Random(7)
    for _ in range(40):
        candidates, names = [], iter(range(10**6))
        for _ in range(draw.randint(0, 60)):
            candidates.append(_c(f"PMC{draw.randint(1, 12)}", f"s{next(names):04d}", f"h{draw.randint(1, 15)}",
                                 draw.choice([None, "2024-01-01", "2024-06-01", "2025-01-01"])))
        _check(candidates, {f"PMC{draw.randint(1, 12)}"} if draw.random() < 0.5 else set())


def test_an_empty_table():
    table, rejected = resolve_table(_table([]), {"PMC1"}, "ingest")
    assert table.num_rows == 0 and rejected == [] and "status" in table.column_names
