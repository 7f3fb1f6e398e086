"""Build a QuickUMLS index (and the concepts table) from a UMLS-format META folder.

Terms are extracted by QuickUMLS's own `install.extract_from_mrconso` and stored with
its own database writers (`toolbox.SimstringDBWriter`, `toolbox.CuiSemTypesDB`), but in
sorted order and with set values pickled in sorted order: QuickUMLS's
`parse_and_encode_ngrams` pickles Python sets, whose byte order follows string hashing
(PYTHONHASHSEED), so two builds of one vocabulary gave different database bytes; and
unqlite stamps each file's header with its creation time, which is set to a fixed one
here. (The leveldb backend keeps logs and numbered files: not byte-reproducible.) This
module also filters the RRF input first (sources, term types, semantic types), writes
the flag files QuickUMLS's CLI would write, and adds what QuickUMLS lacks: preferred
names and semantic groups (concepts.parquet), case-sensitive acronyms, and the
stopword list QuickUMLS would otherwise try to download.
"""
from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa

from tasks.common.tables import write_rows
from tasks.umls import rrf
from tasks.umls.stopwords import write_nltk_stopwords

QUICKUMLS_SUBDIR = "quickumls"
NLTK_SUBDIR = "nltk_data"
ACRONYMS_FILE = "acronyms.json"
LANGUAGE_NAMES = {"ENG": "english"}

CONCEPTS_SCHEMA = pa.schema([
    ("cui", pa.string()),
    ("preferred_name", pa.string()),
    ("semantic_types", pa.list_(pa.string())),
    ("semantic_type_names", pa.list_(pa.string())),
    ("semantic_groups", pa.list_(pa.string())),
    ("semantic_group", pa.string()),  # the first type's group: one label per concept
    ("n_terms", pa.int32()),
    ("sources", pa.list_(pa.string())),
])


def _is_acronym(text: str, max_len: int) -> bool:
    letters = [c for c in text if c.isalpha()]
    return 2 <= len(text) <= max_len and " " not in text and bool(letters) and all(c.isupper() for c in letters)


class _SortedSet:
    """Pickles as `set(sorted items)`: the same bytes in every process, loads as a plain set."""

    def __init__(self, items):
        self.items = sorted(items)

    def __reduce__(self):
        return set, (self.items,)


def _set_bytes(items) -> bytes:
    return pickle.dumps(_SortedSet(items))


UNQLITE_SIGNATURE = b"unqlite" + bytes.fromhex("db7c2712")  # signature + magic number
UNQLITE_FIXED_TIME = (1 << 5 | 1) << 16  # DOS date 1980-01-01 00:00, as reproducible zips use


def _fix_unqlite_creation_time(path: Path) -> None:
    """Overwrite the header's creation time (DOS format, 4 bytes after the magic number).

    unqlite reads it back for information only; nothing checks it."""
    with open(path, "r+b") as handle:
        header = handle.read(len(UNQLITE_SIGNATURE))
        if header != UNQLITE_SIGNATURE:
            raise ValueError(f"umls_index: {path} is not an unqlite database")
        handle.write(UNQLITE_FIXED_TIME.to_bytes(4, "big"))


def write_databases(extracted, qu_dir: Path, database_backend: str) -> None:
    """QuickUMLS's simstring and CUI/semantic-type databases, the same bytes for the same terms.

    Stores what `install.parse_and_encode_ngrams` stores (term -> {(cui, preferred)},
    cui -> {semantic types}), every key once and in sorted order.
    """
    from quickumls.toolbox import (CuiSemTypesDB, SimstringDBWriter, db_key_encode, mkdir,
                                   prepare_string_for_db_input, safe_unicode)

    cuis_of: dict[str, set[tuple[str, int]]] = {}
    types_of: dict[str, list[str]] = {}
    for term, cui, semtypes, preferred in extracted:
        key = prepare_string_for_db_input(safe_unicode(term))  # what QuickUMLS's insert stores
        cui = prepare_string_for_db_input(safe_unicode(cui))
        cuis_of.setdefault(key, set()).add((cui, preferred))
        types_of.setdefault(cui, list(semtypes))  # the first row's types, as QuickUMLS keeps them
    simstring_dir, cuisty_dir = qu_dir / "umls-simstring.db", qu_dir / "cui-semtypes.db"
    mkdir(str(simstring_dir))
    mkdir(str(cuisty_dir))
    simstring = SimstringDBWriter(str(simstring_dir))
    for term in sorted(cuis_of):
        simstring.insert(term)
    simstring.db.close()
    cuisty = CuiSemTypesDB(str(cuisty_dir), database_backend=database_backend)
    for term in sorted(cuis_of):
        cuisty.cui_db_put(db_key_encode(term), _set_bytes(cuis_of[term]))
    for cui in sorted(types_of):
        cuisty.semtypes_db_put(db_key_encode(cui), _set_bytes(set(types_of[cui])))
    for db in (cuisty.cui_db, cuisty.semtypes_db):
        if hasattr(db, "close"):  # unqlite; leveldb flushes when released
            db.close()
    del cuisty
    if database_backend == "unqlite":
        for path in sorted(cuisty_dir.glob("*.unqlite")):
            _fix_unqlite_creation_time(path)


def row_item(file: str | Path, line: int) -> str:
    """The item id of one vocabulary line: `<file name>:<line number>`."""
    return f"{Path(file).name}:{line}"


def select_terms(conso_path: str | Path, cfg: dict, bad: list[rrf.BadRow],
                 not_selected: Counter | None = None):
    """(line, row) of the MRCONSO rows the section's filters keep (language, sources, term types)."""
    return rrf.select_mrconso(conso_path, [cfg["language"]], cfg["sources"], cfg["term_types"],
                              bad=bad, not_selected=not_selected)


def meta_files(meta_dir: str | Path) -> tuple[Path, Path]:
    meta_dir = Path(meta_dir)
    paths = meta_dir / "MRCONSO.RRF", meta_dir / "MRSTY.RRF"
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"umls_index: {path} not found")
    return paths


def build_index(meta_dir: str | Path, out_dir: str | Path, cfg: dict, *,
                semantic_groups_file: str | Path | None = None, source: str | None = None,
                stage: str = "umls_index") -> dict:
    """Write `<out_dir>/quickumls/` and `<out_dir>/concepts.parquet`.

    cfg: the umls_index section (language, sources, term_types, semantic_types, lowercase,
    normalize_unicode, database_backend, acronym_max_len). source: what rejected rows name
    as their source (default: the META folder's files).
    Returns {"counts", "reasons", "rejected": rows for rejected.parquet,
    "indexed": [(item, cui)] of the MRCONSO rows handed to QuickUMLS}.
    """
    from quickumls import install  # QuickUMLS's own index builder

    language, lowercase = cfg["language"], cfg["lowercase"]
    normalize_unicode, database_backend = cfg["normalize_unicode"], cfg["database_backend"]
    out_dir = Path(out_dir)
    conso_path, sty_path = meta_files(meta_dir)
    bad: list[rrf.BadRow] = []
    stys = rrf.read_mrsty(sty_path, bad)
    groups = rrf.read_semgroups(semantic_groups_file) if semantic_groups_file else {}
    kept_types = set(cfg["semantic_types"]) if cfg["semantic_types"] else None

    rejected: list[dict] = []
    concepts: dict[str, dict] = {}
    rows: list[dict] = []
    indexed: list[tuple[str, str]] = []

    def reject(line: int, reason: str, detail: str, where: Path) -> None:
        rejected.append({"item": row_item(conso_path, line), "source": source or str(where), "reason": reason,
                         "detail": detail, "stage": stage})

    for line, row in select_terms(conso_path, cfg, bad):
        cui = row["CUI"]
        types = stys.get(cui)
        if not types:
            reject(line, "no_semantic_type", f"{cui} has no MRSTY row", conso_path)
            continue
        if kept_types is not None and not any(t in kept_types for t, _ in types):
            reject(line, "semantic_type_not_kept",
                   f"{cui}: none of its semantic types is in umls_index.semantic_types", sty_path)
            continue
        rows.append(row)
        indexed.append((row_item(conso_path, line), cui))
        concept = concepts.setdefault(cui, {"pref": None, "first": row["STR"], "n": 0, "sab": set()})
        concept["n"] += 1
        concept["sab"].add(row["SAB"])
        # UMLS's preferred name: TS=P, STT=PF, ISPREF=Y (first such row).
        if concept["pref"] is None and row["TS"] == "P" and row["STT"] == "PF" and row["ISPREF"] == "Y":
            concept["pref"] = row["STR"]
    for row in bad:
        rejected.append({"item": f"{row.file}:{row.line}", "source": source or str(Path(meta_dir)),
                         "reason": row.reason, "detail": row.text, "stage": stage})

    qu_dir = out_dir / QUICKUMLS_SUBDIR
    if qu_dir.exists():
        shutil.rmtree(qu_dir)
    qu_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="umls_index_") as tmp:
        tmp = Path(tmp)
        rrf.write_mrconso(rows, tmp / "MRCONSO.RRF")
        rrf.write_mrsty(({"CUI": cui, "TUI": t, "STY": n} for cui in sorted(concepts)
                         for t, n in stys[cui]), tmp / "MRSTY.RRF")
        opts = SimpleNamespace(language=language, lowercase=lowercase, normalize_unicode=normalize_unicode)
        # QuickUMLS prints progress per 100k rows; keep stage output readable.
        with contextlib.redirect_stdout(io.StringIO()):
            extracted = install.extract_from_mrconso(str(tmp / "MRCONSO.RRF"), str(tmp / "MRSTY.RRF"), opts)
            write_databases(extracted, qu_dir, database_backend)
    # The flag files QuickUMLS's installer writes beside the databases.
    if lowercase:
        (qu_dir / "lowercase.flag").write_text("")
    if normalize_unicode:
        (qu_dir / "normalize-unicode.flag").write_text("")
    (qu_dir / "language.flag").write_text(language)
    (qu_dir / "database_backend.flag").write_text(database_backend)
    write_nltk_stopwords(qu_dir / NLTK_SUBDIR, LANGUAGE_NAMES.get(language, "english"))

    acronyms: dict[str, set[str]] = {}
    for row in rows:
        text = row["STR"].strip()
        if _is_acronym(text, cfg["acronym_max_len"]):
            acronyms.setdefault(text, set()).add(row["CUI"])
    (qu_dir / ACRONYMS_FILE).write_text(
        json.dumps({k: sorted(v) for k, v in sorted(acronyms.items())}, indent=0) + "\n", encoding="utf-8")

    concept_rows = []
    for cui in sorted(concepts):
        info = concepts[cui]
        types = stys[cui]
        type_groups = [groups.get(t, ("UNKN", ""))[0] for t, _ in types]
        concept_rows.append({
            "cui": cui, "preferred_name": info["pref"] or info["first"],
            "semantic_types": [t for t, _ in types], "semantic_type_names": [n for _, n in types],
            "semantic_groups": sorted(set(type_groups)), "semantic_group": type_groups[0],
            "n_terms": info["n"], "sources": sorted(info["sab"]),
        })
    write_rows(concept_rows, CONCEPTS_SCHEMA, out_dir / "concepts.parquet", sort_by=("cui",))
    reasons = Counter(r["reason"] for r in rejected)
    counts = {
        "concepts": len(concept_rows), "terms": len(rows), "acronyms": len(acronyms),
        "concepts_without_group": sum(1 for r in concept_rows if r["semantic_group"] == "UNKN"),
    }
    return {"counts": counts, "rejected": rejected, "reasons": dict(reasons), "indexed": indexed}
