"""Reading and writing UMLS Rich Release Format (RRF) files: MRCONSO, MRSTY, SemGroups.

Rows are pipe-separated with a trailing pipe; MRCONSO has 18 columns, MRSTY 6.
A malformed row is reported, never fatal: real releases are large and a reader
that dies on one bad line loses hours.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

MRCONSO_COLUMNS = (
    "CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI",
    "SCUI", "SDUI", "SAB", "TTY", "CODE", "STR", "SRL", "SUPPRESS", "CVF",
)
MRSTY_COLUMNS = ("CUI", "TUI", "STN", "STY", "ATUI", "CVF")


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str
    text: str


def split_row(line: str, n_columns: int) -> list[str] | None:
    """Fields of one RRF line, or None when it does not have n_columns fields."""
    line = line.rstrip("\r\n")
    if line.endswith("|"):
        line = line[:-1]
    fields = line.split("|")
    return fields if len(fields) == n_columns else None


def iter_fields(path: str | Path, n_columns: int, bad: list[BadRow] | None) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every well-formed line, streamed; malformed ones go to `bad`."""
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = split_row(line, n_columns)
            if fields is None or not fields[0]:
                if line.strip() and bad is not None:
                    bad.append(BadRow(path.name, number, "malformed_row",
                                      f"expected {n_columns} fields: {line[:200]!r}"))
                continue
            yield number, fields


def sorted_by_first_field(path: str | Path) -> bool:
    """Whether the lines come in order of their first field (NLM ships MRCONSO and MRSTY
    sorted by CUI), so that readers can group them as they stream past."""
    last = ""
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            first = line.partition("|")[0]
            if first < last:
                return False
            last = first
    return True


def _read(path: str | Path, columns: tuple[str, ...], bad: list[BadRow] | None) -> Iterator[tuple[int, dict]]:
    """(line number, row) of every well-formed line; malformed ones go to `bad`."""
    for number, fields in iter_fields(path, len(columns), bad):
        yield number, dict(zip(columns, fields))


# MRCONSO column positions, for readers that keep rows as field lists
CUI, LAT, TS, STT, ISPREF, SAB, TTY, STR, SUPPRESS = (MRCONSO_COLUMNS.index(c) for c in (
    "CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "TTY", "STR", "SUPPRESS"))
SUPPRESSED = frozenset(("O", "E", "Y"))


def select_mrconso_fields(path: str | Path, languages: Iterable[str] | None = ("ENG",),
                          sources: Iterable[str] | None = None, term_types: Iterable[str] | None = None,
                          include_suppressed: bool = False, bad: list[BadRow] | None = None,
                          not_selected: Counter | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of the MRCONSO rows kept by language, source (SAB) and term type
    (TTY) filters (None: all); `not_selected` counts the others by the filter that dropped them.

    Suppressed rows (SUPPRESS O, E, Y) are dropped unless asked for, as MetamorphoSys does.
    A kept row without a string goes to `bad` (empty_string). Streams: one row at a time.
    """
    languages = set(languages) if languages else None
    sources = set(sources) if sources else None
    term_types = set(term_types) if term_types else None
    not_selected = Counter() if not_selected is None else not_selected
    name = Path(path).name
    for number, row in iter_fields(path, len(MRCONSO_COLUMNS), bad):
        if languages is not None and row[LAT] not in languages:
            not_selected["language"] += 1
        elif sources is not None and row[SAB] not in sources:
            not_selected["source"] += 1
        elif term_types is not None and row[TTY] not in term_types:
            not_selected["term_type"] += 1
        elif not include_suppressed and row[SUPPRESS] in SUPPRESSED:
            not_selected["suppressed"] += 1
        elif not row[STR].strip():
            if bad is not None:
                bad.append(BadRow(name, number, "empty_string", f"{row[CUI]} has an empty STR"))
        else:
            yield number, row


def select_mrconso(path: str | Path, languages: Iterable[str] | None = ("ENG",),
                   sources: Iterable[str] | None = None, term_types: Iterable[str] | None = None,
                   include_suppressed: bool = False, bad: list[BadRow] | None = None,
                   not_selected: Counter | None = None) -> Iterator[tuple[int, dict]]:
    """select_mrconso_fields with each row as a dict of MRCONSO's columns."""
    for number, fields in select_mrconso_fields(path, languages, sources, term_types, include_suppressed,
                                                bad, not_selected):
        yield number, dict(zip(MRCONSO_COLUMNS, fields))


def read_mrconso(path: str | Path, languages: Iterable[str] | None = ("ENG",),
                 sources: Iterable[str] | None = None, term_types: Iterable[str] | None = None,
                 include_suppressed: bool = False, bad: list[BadRow] | None = None) -> Iterator[dict]:
    """The rows of select_mrconso, without their line numbers."""
    for _, row in select_mrconso(path, languages, sources, term_types, include_suppressed, bad):
        yield row


def read_mrsty(path: str | Path, bad: list[BadRow] | None = None) -> dict[str, list[tuple[str, str]]]:
    """CUI -> [(TUI, type name)] in file order, duplicates removed."""
    types: dict[str, list[tuple[str, str]]] = {}
    for _, row in _read(path, MRSTY_COLUMNS, bad):
        entry = (row["TUI"], row["STY"])
        found = types.setdefault(row["CUI"], [])
        if entry not in found:
            found.append(entry)
    return types


def read_semgroups(path: str | Path) -> dict[str, tuple[str, str]]:
    """SemGroups.txt (GROUP|Group name|TUI|Type name) -> TUI -> (group, group name)."""
    groups: dict[str, tuple[str, str]] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\r\n").split("|")
            if len(fields) >= 3 and fields[2].startswith("T"):
                groups[fields[2]] = (fields[0], fields[1])
    return groups


def format_row(values: Iterable[str]) -> str:
    values = list(values)
    for value in values:
        if "|" in value or "\n" in value:
            raise ValueError(f"RRF field may not hold '|' or a newline: {value!r}")
    return "|".join(values) + "|\n"


def write_rrf(rows: Iterable[dict], columns: Sequence[str], path: str | Path) -> int:
    """Rows as an RRF file with the given columns (missing fields empty); returns the row count."""
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        for row in rows:
            handle.write(format_row(row.get(col, "") for col in columns))
            count += 1
    return count


def write_mrconso(rows: Iterable[dict], path: str | Path) -> int:
    return write_rrf(rows, MRCONSO_COLUMNS, path)


def write_mrsty(rows: Iterable[dict], path: str | Path) -> int:
    return write_rrf(rows, MRSTY_COLUMNS, path)


def write_semgroups(entries: Iterable[tuple[str, str, str, str]], path: str | Path) -> None:
    """(group, group name, TUI, type name) lines, as NLM's SemGroups.txt."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        for entry in sorted(set(entries), key=lambda e: (e[0], e[2])):
            handle.write("|".join(entry) + "\n")
