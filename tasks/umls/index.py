"""Build a QuickUMLS index (and the concepts table) from a UMLS-format META folder, streamed.

A full release has millions of MRCONSO rows, so nothing here holds the vocabulary: rows
are filtered while read (language, sources, term types, suppressed; tasks.umls.rrf) and
taken one concept at a time beside its MRSTY rows, straight from files sorted by CUI (as
NLM ships them), or from sorted runs on disk (tasks.umls.spill). Whole concepts go to QuickUMLS's own
`install.extract_from_mrconso` in chunks of about CHUNK_ROWS rows (it folds case and
unicode and drops a concept's repeated strings, which never crosses a concept), and its
terms to QuickUMLS's own database writers in sorted order (tasks.umls.databases). This
module also writes the flag files QuickUMLS's CLI would write, and adds what QuickUMLS
lacks: preferred names and semantic groups (concepts.parquet), case-sensitive acronyms,
and the stopword list QuickUMLS would otherwise try to download.
"""
from __future__ import annotations

import contextlib
import gc
import io
import itertools
import json
import shutil
import tempfile
from collections import Counter
from operator import itemgetter
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from tasks.linking import quickumls_adapter as qa
from tasks.umls import rrf
from tasks.umls.concepts import CONCEPTS_SCHEMA, StreamedTable, concept_row
from tasks.umls.databases import DatabaseWriter, release_freed_memory
from tasks.umls.spill import SortedSpill
from tasks.umls.stopwords import write_nltk_stopwords

QUICKUMLS_SUBDIR = "quickumls"
NLTK_SUBDIR = "nltk_data"
ACRONYMS_FILE = "acronyms.json"
LANGUAGE_NAMES = {"ENG": "english"}
CHUNK_ROWS = 100_000  # MRCONSO rows (whole concepts) per call of QuickUMLS's extractor
INDEXED_SCHEMA = pa.schema([("line", pa.int64()), ("cui", pa.string())])  # MRCONSO rows indexed


def _is_acronym(text: str, max_len: int) -> bool:
    if not 2 <= len(text) <= max_len or " " in text:  # the cheap test first: most strings are longer
        return False
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def row_item(file: str | Path, line: int) -> str:
    """The item id of one vocabulary line: `<file name>:<line number>`."""
    return f"{Path(file).name}:{line}"


def select_terms(conso_path: str | Path, cfg: dict, bad: list[rrf.BadRow],
                 not_selected: Counter | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of the MRCONSO rows the section's filters keep (language, sources, term types)."""
    return rrf.select_mrconso_fields(conso_path, [cfg["language"]], cfg["sources"], cfg["term_types"],
                                     bad=bad, not_selected=not_selected)


def meta_files(meta_dir: str | Path) -> tuple[Path, Path]:
    meta_dir = Path(meta_dir)
    paths = meta_dir / "MRCONSO.RRF", meta_dir / "MRSTY.RRF"
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"umls_index: {path} not found")
    return paths


def _rows_by_cui(conso_path: Path, sty_path: Path, cfg: dict, bad: list[rrf.BadRow], tmp: Path):
    """(cui, [(line, MRCONSO fields)]) of the kept rows and (cui, [(TUI, type name)]) of MRSTY,
    both in CUI order, each CUI once, its rows in file order. Files sorted by CUI (as NLM
    ships them) are read as they are; others are sorted on disk first."""
    if rrf.sorted_by_first_field(conso_path) and rrf.sorted_by_first_field(sty_path):
        conso = ((cui, list(rows)) for cui, rows in
                 itertools.groupby(select_terms(conso_path, cfg, bad), key=lambda row: row[1][rrf.CUI]))
        sty = ((cui, [(fields[1], fields[3]) for _, fields in rows]) for cui, rows in
               itertools.groupby(rrf.iter_fields(sty_path, len(rrf.MRSTY_COLUMNS), bad), key=lambda row: row[1][0]))
        return conso, sty
    sty_rows = SortedSpill(tmp, key=itemgetter(0))       # (cui, TUI, type name)
    for _, fields in rrf.iter_fields(sty_path, len(rrf.MRSTY_COLUMNS), bad):
        sty_rows.add((fields[0], fields[1], fields[3]))
    conso_rows = SortedSpill(tmp, key=itemgetter(0))     # (cui, line, the row as read)
    for line, fields in select_terms(conso_path, cfg, bad):
        conso_rows.add((fields[rrf.CUI], line, "|".join(fields)))
    conso = ((cui, [(line, text.split("|")) for _, line, text in rows]) for cui, rows in conso_rows.groups())
    sty = ((cui, [(tui, name) for _, tui, name in rows]) for cui, rows in sty_rows.groups())
    return conso, sty


def _concepts_with_types(conso_groups, sty_groups) -> Iterator[tuple[str, list, list[tuple[str, str]]]]:
    """(cui, its MRCONSO rows, its (TUI, type name)s without repeats): two CUI-sorted streams joined."""
    sty = iter(sty_groups)
    current = next(sty, None)
    for cui, rows in conso_groups:
        while current is not None and current[0] < cui:
            current = next(sty, None)
        types: list[tuple[str, str]] = []
        if current is not None and current[0] == cui:
            for entry in current[1]:
                if entry not in types:
                    types.append(entry)
        yield cui, rows, types
    for _ in sty:  # read to the end: its unreadable lines are reported too
        pass


class _Extraction:
    """Whole concepts collected into a small MRCONSO/MRSTY pair and run through QuickUMLS's own
    `install.extract_from_mrconso`; its rows go to the database writer."""

    def __init__(self, folder: Path, opts: dict, databases: DatabaseWriter):
        self.conso, self.sty = folder / "MRCONSO.RRF", folder / "MRSTY.RRF"
        self.opts, self.databases = opts, databases
        self.lines: list[str] = []
        self.sty_lines: list[str] = []

    def add(self, cui: str, rows: list[tuple[int, list[str]]], types: list[tuple[str, str]]) -> None:
        self.lines += ["|".join(fields) + "|\n" for _, fields in rows]  # as rrf.write_mrconso writes them
        # MRSTY's CUI|TUI|STN|STY|ATUI|CVF| (fields read from RRF hold no '|')
        self.sty_lines += [f"{cui}|{tui}||{name}|||\n" for tui, name in types]
        if len(self.lines) >= CHUNK_ROWS:
            self.run()

    def run(self) -> None:
        if not self.lines:
            return
        self.conso.write_text("".join(self.lines), encoding="utf-8")
        self.sty.write_text("".join(self.sty_lines), encoding="utf-8")
        self.lines, self.sty_lines = [], []
        add = self.databases.add
        # QuickUMLS prints progress per 100k rows; keep stage output readable.
        with contextlib.redirect_stdout(io.StringIO()):
            for term, cui, semtypes, preferred in qa.extract_from_mrconso(self.conso, self.sty, **self.opts):
                add(term, cui, semtypes, preferred)


def write_acronyms(pairs: SortedSpill, path: Path) -> int:
    """acronyms.json ({term: [CUIs]}, keys and CUIs sorted, as json.dumps(indent=0)), streamed."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{")
        for text, rows in pairs.groups():
            entry = json.dumps(text) + ": " + json.dumps(sorted({cui for _, cui in rows}), indent=0)
            handle.write(("\n" if count == 0 else ",\n") + entry)
            count += 1
        handle.write("\n}\n" if count else "}\n")
    return count


def build_index(meta_dir: str | Path, out_dir: str | Path, cfg: dict, *,
                semantic_groups_file: str | Path | None = None, source: str | None = None,
                stage: str = "umls_index", indexed_path: str | Path | None = None) -> dict:
    """Write `<out_dir>/quickumls/` and `<out_dir>/concepts.parquet`.

    cfg: the umls_index section (language, sources, term_types, semantic_types, lowercase,
    normalize_unicode, database_backend, acronym_max_len). source: what rejected rows name
    as their source (default: the META folder's files). indexed_path: where to write the
    (line, cui) table of the MRCONSO rows handed to QuickUMLS.
    Returns {"counts", "reasons", "rejected": rows for rejected.parquet}.
    """
    language, lowercase = cfg["language"], cfg["lowercase"]
    normalize_unicode, database_backend = cfg["normalize_unicode"], cfg["database_backend"]
    out_dir = Path(out_dir)
    conso_path, sty_path = meta_files(meta_dir)
    groups = rrf.read_semgroups(semantic_groups_file) if semantic_groups_file else {}
    kept_types = set(cfg["semantic_types"]) if cfg["semantic_types"] else None
    bad: list[rrf.BadRow] = []
    rejected: list[dict] = []
    qu_dir = out_dir / QUICKUMLS_SUBDIR
    if qu_dir.exists():
        shutil.rmtree(qu_dir)
    qu_dir.mkdir(parents=True)

    def reject(line: int, reason: str, detail: str, where: Path) -> None:
        rejected.append({"item": row_item(conso_path, line), "source": source or str(where), "reason": reason,
                         "detail": detail, "stage": stage})

    with tempfile.TemporaryDirectory(prefix=".umls_index_", dir=out_dir) as tmp:
        tmp = Path(tmp)
        databases = DatabaseWriter(tmp)
        acronyms = SortedSpill(tmp, key=itemgetter(0))       # (term, cui)
        extraction = _Extraction(tmp, {"language": language, "lowercase": lowercase,
                                       "normalize_unicode": normalize_unicode}, databases)
        concepts = StreamedTable(out_dir / "concepts.parquet", CONCEPTS_SCHEMA)
        indexed = StreamedTable(indexed_path, INDEXED_SCHEMA) if indexed_path else None
        n_terms = without_group = 0
        max_acronym = cfg["acronym_max_len"]
        for cui, records, types in _concepts_with_types(*_rows_by_cui(conso_path, sty_path, cfg, bad, tmp)):
            if not types:
                for line, _ in records:
                    reject(line, "no_semantic_type", f"{cui} has no MRSTY row", conso_path)
                continue
            if kept_types is not None and not any(t in kept_types for t, _ in types):
                for line, _ in records:
                    reject(line, "semantic_type_not_kept",
                           f"{cui}: none of its semantic types is in umls_index.semantic_types", sty_path)
                continue
            row = concept_row(cui, [fields for _, fields in records], types, groups)
            concepts.add(row)
            without_group += row["semantic_group"] == "UNKN"
            n_terms += len(records)
            for line, fields in records:
                if indexed is not None:
                    indexed.append(line, cui)
                text = fields[rrf.STR].strip()
                if len(text) <= max_acronym and _is_acronym(text, max_acronym):
                    acronyms.add((text, cui))
            extraction.add(cui, records, types)
        extraction.run()
        n_concepts = concepts.close()
        if indexed is not None:
            indexed.close()
        del concepts, indexed, extraction
        gc.collect()  # QuickUMLS's writers come next, and they need the most
        release_freed_memory()
        databases.write(qu_dir, database_backend)
        n_acronyms = write_acronyms(acronyms, qu_dir / ACRONYMS_FILE)
    for row in bad:
        rejected.append({"item": f"{row.file}:{row.line}", "source": source or str(Path(meta_dir)),
                         "reason": row.reason, "detail": row.text, "stage": stage})
    # The flag files QuickUMLS's installer writes beside the databases.
    if lowercase:
        (qu_dir / "lowercase.flag").write_text("")
    if normalize_unicode:
        (qu_dir / "normalize-unicode.flag").write_text("")
    (qu_dir / "language.flag").write_text(language)
    (qu_dir / "database_backend.flag").write_text(database_backend)
    write_nltk_stopwords(qu_dir / NLTK_SUBDIR, LANGUAGE_NAMES.get(language, "english"))
    counts = {"concepts": n_concepts, "terms": n_terms, "acronyms": n_acronyms,
              "concepts_without_group": without_group}
    return {"counts": counts, "rejected": rejected, "reasons": dict(Counter(r["reason"] for r in rejected))}
