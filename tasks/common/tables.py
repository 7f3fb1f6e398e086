"""Parquet tables written deterministically, and the rejected-items table every stage keeps."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

REJECTED_SCHEMA = pa.schema(
    [
        ("item", pa.string()),  # what was rejected: a package, a figure, a series ...
        ("source", pa.string()),  # where it came from (path or URL)
        ("reason", pa.string()),  # short machine-readable code
        ("detail", pa.string()),  # one human sentence
        ("stage", pa.string()),
    ]
)


@dataclass(frozen=True)
class Rejection:
    item: str
    source: str
    reason: str
    detail: str
    stage: str

    def as_row(self) -> dict:
        return asdict(self)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write Parquet with settings that give the same bytes for the same rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        use_dictionary=True,
        write_statistics=True,
        store_schema=True,
    )
    tmp.replace(path)
    return path


def rows_to_table(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def write_rows(rows: Sequence[dict], schema: pa.Schema, path: str | Path, sort_by: Sequence[str] = ()) -> Path:
    table = rows_to_table(rows, schema)
    if sort_by and table.num_rows:
        table = table.sort_by([(name, "ascending") for name in sort_by])
    return write_table(table, path)


def write_rejected(rejections: Iterable[Rejection | dict], path: str | Path) -> Path:
    rows = [r.as_row() if isinstance(r, Rejection) else dict(r) for r in rejections]
    return write_rows(rows, REJECTED_SCHEMA, path, sort_by=("stage", "item", "reason", "source"))


def concat_parts(parts: Sequence[str | Path], schema: pa.Schema, path: str | Path,
                 sort_by: Sequence[str] = ()) -> int:
    """Merge per-shard part files into one table; returns the row count.

    Parts are read one at a time when no sort is asked for, so memory stays at one
    shard; with a sort the merged table is held once (tables are metadata, not pixels).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sort_by:
        tables = [pq.read_table(p, schema=schema) for p in parts] or [schema.empty_table()]
        merged = pa.concat_tables(tables).sort_by([(n, "ascending") for n in sort_by])
        write_table(merged, path)
        return merged.num_rows
    tmp = path.with_suffix(path.suffix + ".tmp")
    total = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for part in parts:
            table = pq.read_table(part, schema=schema)
            total += table.num_rows
            writer.write_table(table)
    tmp.replace(path)
    return total
