"""RRF reading/writing, MeSH conversion, QuickUMLS index build, the sample vocabulary."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tasks.common.params import load_params
from tasks.sample import catalogue, vocabulary
from tasks.umls import mesh, rrf
from tasks.umls.index import build_index
from tests.conftest import REPO_ROOT

PARAMS = load_params(REPO_ROOT / "params.yaml")
UMLS_INDEX = PARAMS["umls_index"]


def _sample(root) -> dict:
    """Params for the sample's generators, writing under root."""
    return {"sample": {**PARAMS["sample"], "output_dir": str(root)}}


def test_rrf_reader_on_real_umls_rows(shared_data):
    meta = shared_data / "umls" / "scispacy_fixtures" / "umls_META"
    bad = []
    rows = list(rrf.read_mrconso(meta / "MRCONSO.RRF", bad=bad))
    assert not bad
    first = rows[0]
    assert first["CUI"] == "C0000005" and first["SAB"] == "MSH" and first["TTY"] == "PEP"
    assert first["STR"] == "(131)I-Macroaggregated Albumin" and first["ISPREF"] == "Y"
    assert all(r["LAT"] == "ENG" for r in rows)
    stys = rrf.read_mrsty(meta / "MRSTY.RRF")
    assert stys["C0000039"] == [("T109", "Organic Chemical"), ("T121", "Pharmacologic Substance")]
    # Every concept of the excerpt has a semantic type.
    assert {r["CUI"] for r in rows} <= set(stys)


def test_rrf_reader_reports_malformed_rows(tmp_path):
    path = tmp_path / "MRCONSO.RRF"
    good = rrf.format_row(["C1", "ENG", "P", "L1", "PF", "S1", "Y", "A1", "", "", "", "SAB", "PT", "x",
                           "Lung", "0", "N", ""])
    path.write_text(good + "C2|ENG|short|\n" + good.replace("ENG", "FRE"), encoding="utf-8")
    bad = []
    rows = list(rrf.read_mrconso(path, bad=bad))
    assert [r["STR"] for r in rows] == ["Lung"]
    assert [(b.line, b.reason) for b in bad] == [(2, "malformed_row")]
    with pytest.raises(ValueError):
        rrf.format_row(["a|b"])


def test_mesh_tree_types_match_semantic_network(shared_data):
    net = shared_data / "umls" / "semantic_network"
    groups = rrf.read_semgroups(net / "SemGroups.txt")
    names = {}
    for line in (net / "SRDEF").read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if fields[0] == "STY":
            names[fields[1]] = fields[2]
    for prefix, (tui, name, group) in mesh.TREE_TYPES.items():
        assert names.get(tui) == name, prefix
        assert groups[tui][0] == group, prefix


def test_mesh_conversion_and_uninverted_terms(tmp_path):
    tree = tmp_path / "tree.txt"
    tree.write_text("\ufeffTree Number\tDesc Ui\tTerm\n"
                    "C05.550.114.154\tD001172\tArthritis, Rheumatoid\n"
                    "C20.111.199\tD001172\tArthritis, Rheumatoid\n"
                    "D02.092.063\tD000082\tAcetaminophen\n"
                    "broken line\n", encoding="utf-8")
    counts = mesh.mesh_to_rrf(tree, tmp_path / "META", True)
    assert counts["descriptors"] == 2 and counts["bad_lines"] == 1
    rows = list(rrf.read_mrconso(tmp_path / "META" / "MRCONSO.RRF"))
    assert {r["STR"] for r in rows if r["CUI"] == "D001172"} == {"Arthritis, Rheumatoid", "Rheumatoid Arthritis"}
    stys = rrf.read_mrsty(tmp_path / "META" / "MRSTY.RRF")
    assert stys["D001172"] == [("T047", "Disease or Syndrome")]
    assert stys["D000082"] == [("T109", "Organic Chemical")]
    assert mesh.uninvert("1,2-Dipalmitoylphosphatidylcholine") is None


def test_sample_vocabulary_covers_catalogue(tmp_path):
    counts = vocabulary.generate_shard(_sample(tmp_path), "vocabulary")
    meta = tmp_path / "umls" / "META"
    lines = (meta / "MRCONSO.RRF").read_text(encoding="utf-8").splitlines()
    assert all(len(line.split("|")) == 19 for line in lines[:-1])  # 18 fields + trailing pipe
    bad = []
    rows = list(rrf.read_mrconso(meta / "MRCONSO.RRF", bad=bad))
    assert len(bad) == 1 and counts["vocabulary_broken_rows"] == 2
    terms = {(r["CUI"], r["STR"]) for r in rows}
    stys = rrf.read_mrsty(meta / "MRSTY.RRF")
    for concept in catalogue.all_concepts():
        assert (concept.cui, concept.name) in terms
        for synonym in concept.synonyms:
            assert (concept.cui, synonym) in terms
        if concept.abbreviation:
            assert (concept.cui, concept.abbreviation) in terms
        assert stys[concept.cui][0][0] == concept.tui


def test_index_build_from_sample_vocabulary(tmp_path):
    vocabulary.generate_shard(_sample(tmp_path), "vocabulary")
    result = build_index(tmp_path / "umls" / "META", tmp_path / "index", UMLS_INDEX,
                         semantic_groups_file=tmp_path / "umls" / "SemGroups.txt")
    assert result["reasons"] == {"malformed_row": 1, "no_semantic_type": 1}
    table = pq.read_table(tmp_path / "index" / "concepts.parquet").to_pylist()
    by_cui = {row["cui"]: row for row in table}
    assert len(by_cui) == len(catalogue.all_concepts())
    ggo = by_cui["C3544344"]
    assert ggo["preferred_name"] == "Ground glass opacity" and ggo["semantic_group"] == "DISO"
    assert by_cui["C0040405"]["semantic_type_names"] == ["Diagnostic Procedure"]
    assert (tmp_path / "index" / "quickumls" / "umls-simstring.db").is_dir()
    assert '"GGO"' in (tmp_path / "index" / "quickumls" / "acronyms.json").read_text()
    # Semantic type filter: only anatomy left, the rest rejected with a reason.
    result = build_index(tmp_path / "umls" / "META", tmp_path / "index2",
                         {**UMLS_INDEX, "semantic_types": ["T023", "T029"]},
                         semantic_groups_file=tmp_path / "umls" / "SemGroups.txt")
    assert result["counts"]["concepts"] == len(catalogue.ANATOMY)
    # one rejected row per term row of a concept whose types are not kept, its detail naming the concept
    terms, _ = vocabulary.vocabulary_rows()
    not_anatomy = {c.cui for c in catalogue.all_concepts()} - {c.cui for c in catalogue.ANATOMY.values()}
    assert len(not_anatomy) == len(catalogue.FINDINGS) + len(catalogue.MODALITIES)
    assert result["reasons"]["semantic_type_not_kept"] == sum(1 for t in terms if t["CUI"] in not_anatomy)
    not_kept = [r for r in result["rejected"] if r["reason"] == "semantic_type_not_kept"]
    assert {r["detail"].split(":")[0] for r in not_kept} == not_anatomy
    assert len({r["item"] for r in result["rejected"]}) == len(result["rejected"])


def test_stage_plan_lists_every_selected_row_and_unreadable_line(tmp_path):
    """umls_index items are vocabulary rows, counted from the files; rows a filter leaves out are a count."""
    from tasks.umls import stage

    vocabulary.generate_shard(_sample(tmp_path), "vocabulary")
    terms, _ = vocabulary.vocabulary_rows()
    cfg = {**UMLS_INDEX, "meta_dir": str(tmp_path / "umls" / "META"),
           "semantic_groups": str(tmp_path / "umls" / "SemGroups.txt"), "run_root": str(tmp_path)}
    plan = stage.plan(cfg, tmp_path / "out")
    # the terms, the orphan concept's row, the malformed row (last line), as int codes
    assert list(plan.items) == [stage.item_code(f"MRCONSO.RRF:{n}") for n in range(1, len(terms) + 3)]
    assert plan.counts == {"rows_not_selected": 0} and len(plan.shards) == 1
    plan = stage.plan({**cfg, "sources": ["NO_SUCH_SOURCE"]}, tmp_path / "out")
    assert list(plan.items) == [stage.item_code(f"MRCONSO.RRF:{len(terms) + 2}")]
    assert plan.counts == {"rows_not_selected": len(terms) + 1}
    codes = {stage.item_code(item) for item in ("MRCONSO.RRF:7", "MRSTY.RRF:7", "tree.txt:7", "MRCONSO.RRF:8")}
    assert len(codes) == 4 and stage.item_code("MRCONSO.RRF:7") == 7  # one code per file and line



WRITE_DATABASES = """
import sys
from pathlib import Path
from types import SimpleNamespace
from quickumls import install
from tasks.umls.databases import write_databases
meta, out = Path(sys.argv[1]), Path(sys.argv[2])
options = SimpleNamespace(language="ENG", lowercase=True, normalize_unicode=True)
out.mkdir(parents=True)
write_databases(install.extract_from_mrconso(str(meta / "MRCONSO.RRF"), str(meta / "MRSTY.RRF"), options),
                out, "unqlite")
"""


def _sample_meta(tmp_path):
    """The sample vocabulary without its broken rows (QuickUMLS's extractor would fail on them)."""
    vocabulary.generate_shard({"sample": {"output_dir": str(tmp_path), "vocabulary": {"broken_rows": False}}},
                              "vocabulary")
    return tmp_path / "umls" / "META"


def _write_databases(meta, out, hash_seed: str, repo_root):
    import os
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", WRITE_DATABASES, str(meta), str(out)], cwd=repo_root,
                   env=dict(os.environ, PYTHONHASHSEED=hash_seed), check=True, timeout=300,
                   stdout=subprocess.DEVNULL)


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_index_databases_do_not_depend_on_the_process(tmp_path, repo_root):
    """Set iteration (PYTHONHASHSEED) and unqlite's creation-time stamp no longer reach the files."""
    from tasks.umls.databases import UNQLITE_FIXED_TIME, UNQLITE_SIGNATURE

    meta = _sample_meta(tmp_path)
    for seed in ("1", "2"):
        _write_databases(meta, tmp_path / f"db{seed}", seed, repo_root)
    first, second = _tree_bytes(tmp_path / "db1"), _tree_bytes(tmp_path / "db2")
    assert "cui-semtypes.db/cui.unqlite" in first and "umls-simstring.db/umls-terms.simstring" in first
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    header = first["cui-semtypes.db/cui.unqlite"][:len(UNQLITE_SIGNATURE) + 4]
    assert header[len(UNQLITE_SIGNATURE):] == UNQLITE_FIXED_TIME.to_bytes(4, "big")


def test_index_databases_hold_what_quickumls_builder_stores(tmp_path, repo_root):
    import pickle

    import unqlite
    from quickumls import install

    meta = _sample_meta(tmp_path)
    _write_databases(meta, tmp_path / "ours", "1", repo_root)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    options = type("Options", (), {"language": "ENG", "lowercase": True, "normalize_unicode": True})
    install.parse_and_encode_ngrams(
        install.extract_from_mrconso(str(meta / "MRCONSO.RRF"), str(meta / "MRSTY.RRF"), options),
        str(theirs / "umls-simstring.db"), str(theirs / "cui-semtypes.db"), database_backend="unqlite")
    for name in ("cui.unqlite", "semtypes.unqlite"):
        decoded = []
        for root in (tmp_path / "ours", theirs):
            db = unqlite.UnQLite(str(root / "cui-semtypes.db" / name))
            decoded.append({key: pickle.loads(value) for key, value in db})
            db.close()
        assert decoded[0] and decoded[0] == decoded[1], name
