"""tasks/umls/simstring_writer.py writes the bytes of simstring's C++ writer, and QuickUMLS reads them."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from tasks.linking import quickumls_adapter as qa
from tasks.umls import simstring_writer as sw
from tasks.umls.simstring_writer import SimstringWriter


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _cpp(folder: Path, terms, n: int, be: bool) -> dict[str, bytes]:
    """The C++ writer: QuickUMLS's own toolbox writer for its settings, simstring's otherwise."""
    if (n, be) == (qa.SIMSTRING_NGRAM, qa.SIMSTRING_BEGIN_END):
        writer = qa.simstring_writer(folder)
        for term in terms:
            writer.db.insert(term)  # as given: the toolbox's insert would NFKD-normalise first
        qa.close_simstring(writer)
    else:
        from quickumls_simstring import simstring

        folder.mkdir(parents=True)
        writer = simstring.writer(str(folder / qa.SIMSTRING_FILE), n, be, True)
        for term in terms:
            writer.insert(term)
        writer.close()
    return _files(folder)


def _ours(folder: Path, terms, n: int, be: bool, chunk_terms: int) -> dict[str, bytes]:
    with SimstringWriter(qa.simstring_path(folder), n=n, be=be, chunk_terms=chunk_terms) as writer:
        writer.insert_many(terms)
    assert not [p for p in folder.iterdir() if p.name.startswith(".simstring_spill_")]  # spill removed
    return _files(folder)


def _random_terms(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "aabcdeeilmnorst -é\u00df\u4e2d\U0001d518"
    return sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 45))) for _ in range(count)})


VOCABULARIES = {
    "shorter_than_n": ["", "a", "b", "ab", "é", "\U0001f600"],
    "repeated_ngrams": ["aaaa", "a" * 30, "abab" * 8, "abc" * 12, "abcabc", "xyz" * 11 + "abc" * 3],
    "unicode": ["café", "cafe\u0301", "naïve", "ß", "中文字", "\U0001d518\U0001d52b\U0001d526", "a\U0001f600b"],
    "plain": ["heart", "heart attack", "lung", "lung cancer", "lungs", "myocardial infarction"],
    "duplicates_and_nul": ["lung", "lung", "lu\0ng", "\0"],  # the C++ char* ends at a NUL
    "empty": [],
}


@pytest.mark.parametrize("name", sorted(VOCABULARIES))
@pytest.mark.parametrize("n,be", [(3, False), (3, True), (2, False)])
def test_small_vocabularies_byte_identical(tmp_path, name, n, be):
    terms = VOCABULARIES[name]
    theirs = _cpp(tmp_path / "cpp", terms, n, be)
    for chunk in (1, 4, 1000):
        assert _ours(tmp_path / f"ours{chunk}", terms, n, be, chunk) == theirs, chunk


def test_thousands_of_terms_in_many_chunks_byte_identical(tmp_path):
    terms = _random_terms(4000, seed=7)
    theirs = _cpp(tmp_path / "cpp", terms, 3, False)
    assert len(theirs) > 30  # many n-gram counts, each its CDB file
    assert _ours(tmp_path / "ours", terms, 3, False, chunk_terms=333) == theirs


def test_repeats_of_ten_and_more_sort_as_strings(tmp_path):
    """"aaa10" < "aaa2": the key order of a file with ten and more repeats of one n-gram."""
    terms = ["a" * 14, "a" * 13 + "b"]
    files = _ours(tmp_path / "ours", terms, 3, False, chunk_terms=10)
    data = files[f"{qa.SIMSTRING_FILE}.12.cdb"]
    keys, at = [], sw.CDB_DATA_BEGIN  # records in put order, up to the last key
    while not keys or keys[-1] != "aab":
        ksize = int.from_bytes(data[at:at + 4], "little")
        keys.append(data[at + 4:at + 4 + ksize].decode("utf-32-le"))
        at += 8 + ksize + int.from_bytes(data[at + 4 + ksize:at + 8 + ksize], "little")
    assert keys == ["aaa", "aaa10", "aaa11", "aaa12", "aaa2", "aaa3", "aaa4", "aaa5", "aaa6", "aaa7",
                    "aaa8", "aaa9", "aab"]


def test_quickumls_reader_finds_terms_written_by_ours(tmp_path):
    from quickumls.toolbox import SimstringDBReader

    terms = sorted({*_random_terms(500, seed=3), "lung cancer", "heart attack", "ß"})
    folder = tmp_path / "umls-simstring.db"
    with SimstringWriter(qa.simstring_path(folder), chunk_terms=64) as writer:
        writer.insert_many(map(qa.db_string, terms))
    exact = SimstringDBReader(str(folder), "jaccard", 1.0)
    for term in terms[::25] + ["lung cancer", "ß"]:
        assert qa.db_string(term) in exact.get(term), term
    assert "lung cancer" in SimstringDBReader(str(folder), "jaccard", 0.7).get("lung cancers")
    assert exact.get("no such term here") == ()


def test_index_build_writes_quickumls_writer_bytes(tmp_path):
    """DatabaseWriter's simstring folder is what QuickUMLS's writer writes for its sorted terms."""
    from tasks.umls.databases import write_databases

    terms = _random_terms(300, seed=5)
    rows = [(term, f"C{i:07d}", ["T047"], i % 2) for i, term in enumerate(terms)]
    (tmp_path / "index").mkdir()
    write_databases(rows, tmp_path / "index", "unqlite")
    theirs = qa.simstring_writer(tmp_path / "theirs")
    for term in sorted({qa.db_string(t) for t in terms}):
        theirs.insert(term)
    qa.close_simstring(theirs)
    assert _files(tmp_path / "index" / "umls-simstring.db") == _files(tmp_path / "theirs")


def test_adapter_check_notices_other_bytes(monkeypatch, tmp_path):
    assert qa._simstring_bytes_problems(tmp_path / "same") == []
    monkeypatch.setattr(sw, "MARK", 0x02)
    assert qa._simstring_bytes_problems(tmp_path / "other")
