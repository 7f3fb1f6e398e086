"""The tables split_reports reads (reports, reference labels): a file or a folder of files,
each row named and keyed by its study.

A folder means every CSV / Parquet file in it, in name order (CT-RATE ships
train_reports.csv and validation_reports.csv side by side). A row is named by its line:
`row N` for a single file, `<file name> row N` when there are several. Study keys are the
keyed pseudonyms ct_convert gives (tasks.ct.deid), whatever the kind of raw key:
a StudyInstanceUID (study), an AccessionNumber (accession), a CT-RATE VolumeName
(ct_rate_volume: the VolumeName's study, `valid_1_a` of `valid_1_a_1.nii.gz`), or a key
that is already a pseudonym (none).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd

from tasks.common.hashing import sha256_file
from tasks.common.locations import recorded
from tasks.common.params import ParamsError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class TableFile:
    path: Path
    frame: pd.DataFrame
    source: str          # the path as outputs record it (relative to the run's folder)
    sha256: str


def table_paths(location: str | Path, key: str) -> list[Path]:
    """The file itself, or the CSV / Parquet files of a folder in name order."""
    path = Path(location)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        if not files:
            raise ParamsError(f"split_reports.{key}: no {' / '.join(TABLE_SUFFIXES)} file in {path}")
        return files
    raise ParamsError(f"split_reports.{key}: {path} not found")


def read_tables(location: str | Path, key: str, columns: Sequence[str], named_by: str,
                run_root: str | Path) -> list[TableFile]:
    """Every table of `location` (the param `key`) as strings, each checked for `columns` (an
    error naming the file, the missing columns and the params `named_by` them). Bytes that
    are not UTF-8 become U+FFFD, so one bad report is rejected rather than the whole file failing.
    A CSV holding NUL bytes is read by the Python parser, which keeps them: the C parser ends
    the field at a NUL, and a report cut there would pass as empty (it is `binary_content`)."""
    tables = []
    for path in table_paths(location, key):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace",
                                engine="python" if has_nul(path) else "c")
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ParamsError(f"split_reports.{key}: column(s) {missing} ({named_by}) not in {path} "
                              f"(columns: {list(frame.columns)})")
        tables.append(TableFile(path=path, frame=frame, source=recorded(path, run_root), sha256=sha256_file(path)))
    return tables


def has_nul(path: Path, chunk: int = 1 << 20) -> bool:
    """Whether the file holds a NUL byte (read in chunks: memory stays flat)."""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            if b"\x00" in block:
                return True
    return False


def rows(tables: Sequence[TableFile]) -> Iterator[tuple[str, TableFile, dict]]:
    """(row name, its table, the row) for every row of every table, in order."""
    several = len(tables) > 1
    for table in tables:
        for index, row in enumerate(table.frame.to_dict("records")):
            line = f"row {index + 2}"  # the table's line, after its header
            yield (f"{table.path.name} {line}" if several else line), table, row


def study_key(raw: str, cfg: Mapping[str, Any]) -> str:
    """The keyed pseudonym of a raw study key, as ct_convert gives that study's volumes.
    Raises Rejected("not_ct_rate_name", ...) for a ct_rate_volume key outside CT-RATE's scheme."""
    from tasks.ct.ct_rate_names import parse_volume_name
    from tasks.ct.deid import pseudonym

    kind = cfg["study_key_kind"]
    if kind == "none":  # the table already holds pseudonyms
        return raw
    if kind == "ct_rate_volume":
        return pseudonym("study", parse_volume_name(raw).study, cfg["deid_key"])
    return pseudonym(kind, raw, cfg["deid_key"])


def cell(value) -> str:
    """A table cell as text ('' for a missing value)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
