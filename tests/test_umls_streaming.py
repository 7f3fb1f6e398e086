"""The streamed umls_index build: external sort, streamed concepts table, chunked extraction,
the synthetic release generator, and byte-reproducibility of a whole build across hash seeds."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from operator import itemgetter

import pyarrow as pa
import pytest

from benchmarks.make_umls_release import write_release
from tasks.common.params import load_params
from tasks.common.tables import write_rows
from tasks.umls import concepts, index, rrf, spill
from tasks.umls.index import build_index
from tests.conftest import REPO_ROOT

UMLS_INDEX = load_params(REPO_ROOT / "params.yaml")["umls_index"]


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("chunk", [3, 1000])
def test_sorted_spill_is_a_stable_sort(tmp_path, chunk):
    rng = random.Random(chunk)
    records = [(rng.choice("abcdefg"), i, "x" * rng.randint(0, 5)) for i in range(500)]
    sorter = spill.SortedSpill(tmp_path, key=itemgetter(0), chunk=chunk)
    for record in records:
        sorter.add(record)
    expected = sorted(records, key=itemgetter(0))  # Python's sort is stable
    assert list(sorter) == expected
    assert list(sorter) == expected  # read again: the runs stay until remove()
    assert [(key, len(rows)) for key, rows in sorter.groups()] == sorted(Counter(r[0] for r in records).items())
    assert len(sorter.runs) == (math.ceil(500 / chunk) if chunk < 500 else 0)
    sorter.remove()
    assert not sorter.folder.exists()


def test_sorted_spill_of_sorted_input_reads_runs_in_turn(tmp_path):
    sorter = spill.SortedSpill(tmp_path, key=itemgetter(0), chunk=4)
    for i in range(10):
        sorter.add((f"{i:02d}", i))
    assert sorter.in_order and len(sorter.runs) == 2
    assert [r[1] for r in sorter] == list(range(10))
    sorter.add(("00", 99))  # out of order from here on: merged, stably
    assert not sorter.in_order
    assert [r[1] for r in sorter] == [0, 99, *range(1, 10)]


SMALL_SCHEMA = pa.schema([("cui", pa.string()), ("n", pa.int32()), ("tags", pa.list_(pa.string()))])


@pytest.mark.parametrize("n", [0, 5, concepts.ROW_GROUP + 3])
def test_streamed_table_writes_what_write_rows_writes(tmp_path, n):
    rows = [{"cui": f"C{i:07d}", "n": i % 7, "tags": ["a"] * (i % 3)} for i in range(n)]
    write_rows(rows, SMALL_SCHEMA, tmp_path / "whole.parquet", sort_by=("cui",))
    table = concepts.StreamedTable(tmp_path / "streamed.parquet", SMALL_SCHEMA)
    for row in rows:
        table.add(row)
    assert table.close() == n
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    if n < 10:  # rows as values in column order: the same table
        table = concepts.StreamedTable(tmp_path / "appended.parquet", SMALL_SCHEMA)
        for row in rows:
            table.append(row["cui"], row["n"], row["tags"])
        assert table.close() == n
        assert (tmp_path / "appended.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_acronyms_file_is_what_json_dumps_writes(tmp_path):
    pairs = spill.SortedSpill(tmp_path, key=itemgetter(0))
    for text, cui in [("GGO", "C2"), ("CT", "C9"), ("GGO", "C1"), ("CT", "C9"), ("ÄB", "C3")]:
        pairs.add((text, cui))
    assert index.write_acronyms(pairs, tmp_path / "a.json") == 3
    expected = {"CT": ["C9"], "GGO": ["C1", "C2"], "ÄB": ["C3"]}
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == json.dumps(expected, indent=0) + "\n"
    assert index.write_acronyms(spill.SortedSpill(tmp_path, key=itemgetter(0)), tmp_path / "b.json") == 0
    assert (tmp_path / "b.json").read_text() == json.dumps({}, indent=0) + "\n"


def _interleave_concepts(src, dst, seed=3):
    """The same rows with concepts interleaved (each concept's rows keep their order)."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    by_cui: dict[str, list[str]] = {}
    for line in lines:
        by_cui.setdefault(line.split("|")[0], []).append(line)
    queues = [list(v) for _, v in sorted(by_cui.items())]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    dst.write_text("".join(out), encoding="utf-8")
    return out != lines


def test_build_does_not_depend_on_chunks_or_on_concepts_being_grouped(tmp_path, monkeypatch):
    """Extraction chunks of a few rows, spill runs of a few records, and an MRCONSO whose
    concepts are interleaved give the same index and concepts table as one pass."""
    write_release(tmp_path / "release", 3000, seed=5)
    meta = tmp_path / "release" / "META"
    groups = tmp_path / "release" / "SemGroups.txt"
    first = build_index(meta, tmp_path / "one", UMLS_INDEX, semantic_groups_file=groups)
    monkeypatch.setattr(index, "CHUNK_ROWS", 7)
    monkeypatch.setattr(spill, "CHUNK", 50)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    assert _interleave_concepts(meta / "MRCONSO.RRF", mixed / "MRCONSO.RRF")
    assert _interleave_concepts(meta / "MRSTY.RRF", mixed / "MRSTY.RRF")
    for source, out in ((meta, "chunked"), (mixed, "interleaved")):
        result = build_index(source, tmp_path / out, UMLS_INDEX, semantic_groups_file=groups)
        assert result["counts"] == first["counts"]
        assert _tree_bytes(tmp_path / out) == _tree_bytes(tmp_path / "one"), out
    assert first["counts"]["terms"] > 1500 and first["counts"]["acronyms"] > 0


def test_sorted_files_are_read_to_the_end(tmp_path):
    """MRSTY lines past the last MRCONSO concept are read too (a broken one is rejected), and a
    suppressed, empty or malformed MRCONSO row is accounted for."""
    write_release(tmp_path / "release", 300, seed=4)
    meta = tmp_path / "release" / "META"
    with open(meta / "MRSTY.RRF", "a", encoding="utf-8") as handle:
        handle.write("C9999999|T047||Disease or Syndrome|||\nbroken line\n")
    n_sty = len((meta / "MRSTY.RRF").read_text(encoding="utf-8").splitlines())
    assert rrf.sorted_by_first_field(meta / "MRSTY.RRF") and rrf.sorted_by_first_field(meta / "MRCONSO.RRF")
    result = build_index(meta, tmp_path / "out", UMLS_INDEX)
    assert [(r["item"], r["reason"]) for r in result["rejected"]] == [(f"MRSTY.RRF:{n_sty}", "malformed_row")]


def test_synthetic_release_layout_and_filters(tmp_path):
    from tasks.umls import stage

    counts = write_release(tmp_path / "a", 2000, seed=1)
    write_release(tmp_path / "b", 2000, seed=1)
    write_release(tmp_path / "c", 2000, seed=2)
    conso, sty = tmp_path / "a" / "META" / "MRCONSO.RRF", tmp_path / "a" / "META" / "MRSTY.RRF"
    assert conso.read_bytes() == (tmp_path / "b" / "META" / "MRCONSO.RRF").read_bytes()
    assert conso.read_bytes() != (tmp_path / "c" / "META" / "MRCONSO.RRF").read_bytes()
    lines = conso.read_text(encoding="utf-8").splitlines()
    assert len(lines) == counts["mrconso_rows"] == 2000
    assert all(line.endswith("|") and line.count("|") == 18 for line in lines)
    assert all(line.endswith("|") and line.count("|") == 6 for line in sty.read_text(encoding="utf-8").splitlines())
    rows = [dict(zip(rrf.MRCONSO_COLUMNS, rrf.split_row(line, 18))) for line in lines]
    cuis = [r["CUI"] for r in rows]
    assert cuis == sorted(cuis) and set(cuis) <= set(rrf.read_mrsty(sty))  # sorted; every concept typed
    for column, at_least in (("LAT", 5), ("SAB", 10), ("TTY", 10), ("SUPPRESS", 3)):
        assert len({r[column] for r in rows}) >= at_least, column
    cfg = {**UMLS_INDEX, "meta_dir": str(tmp_path / "a" / "META"), "semantic_groups": None,
           "run_root": str(tmp_path)}
    plan = stage.plan(cfg, tmp_path / "out")
    eng = sum(r["LAT"] == "ENG" for r in rows)
    assert 0 < plan.counts["rows_not_selected"] < 2000 and len(plan.items) < eng < 2000
    assert {index._is_acronym(r["STR"], 6) for r in rows} == {True, False}


BUILD = """
import sys
from tasks.common.params import load_params
from tasks.umls import index, spill
from tasks.umls.index import build_index
index.CHUNK_ROWS, spill.CHUNK = 11, 40
cfg = load_params("params.yaml")["umls_index"]
build_index(sys.argv[1], sys.argv[2], cfg, semantic_groups_file=sys.argv[3])
"""


def test_whole_build_does_not_depend_on_the_process(tmp_path):
    """Two builds under two hash seeds, in chunks and runs: the same bytes in every file."""
    write_release(tmp_path / "release", 1500, seed=9)
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / "release" / "META"), str(tmp_path / seed),
                        str(tmp_path / "release" / "SemGroups.txt")], cwd=REPO_ROOT, check=True, timeout=300,
                       env=dict(os.environ, PYTHONHASHSEED=seed), stdout=subprocess.DEVNULL)
    first, second = _tree_bytes(tmp_path / "1"), _tree_bytes(tmp_path / "2")
    assert "quickumls/cui-semtypes.db/cui.unqlite" in first and "concepts.parquet" in first
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
