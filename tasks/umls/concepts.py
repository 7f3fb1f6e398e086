"""concepts.parquet, written as the concepts stream past in CUI order.

A full UMLS has millions of concepts; rows are held as Arrow batches, and each million
(Parquet's default row-group size) is written as one row group, which is what
`tasks.common.tables.write_rows` writes for the same rows sorted: the same bytes.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.common.tables import rows_to_table
from tasks.umls import rrf

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

ROW_GROUP = 1024 * 1024   # pyarrow's default row-group size (ParquetWriter.write_table)
BATCH = 64 * 1024         # rows kept as Python dicts before they become Arrow


class StreamedTable:
    """Rows added in their final order, written as `write_rows(rows, schema, path)` would."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path, self.schema = Path(path), schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        self.names = schema.names
        self.columns: list[list] = [[] for _ in self.names]  # Python values, a batch at most
        self.batches: list[pa.Table] = []
        self.pending = 0
        self.count = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, row: dict) -> None:
        self.append(*(row[name] for name in self.names))

    def append(self, *values) -> None:
        """One row, its values in the schema's column order."""
        for column, value in zip(self.columns, values):
            column.append(value)
        self.count += 1
        if len(self.columns[0]) >= BATCH:
            self._to_arrow()

    def _to_arrow(self) -> None:
        if self.columns[0]:
            self.batches.append(pa.Table.from_pydict(dict(zip(self.names, self.columns)), schema=self.schema))
            self.pending += len(self.columns[0])
            self.columns = [[] for _ in self.names]
        while self.pending >= ROW_GROUP:
            table = pa.concat_tables(self.batches)
            self._write(table.slice(0, ROW_GROUP).combine_chunks())
            rest = table.slice(ROW_GROUP)
            self.batches, self.pending = ([rest] if rest.num_rows else []), rest.num_rows

    def _write(self, table: pa.Table) -> None:
        if self.writer is None:  # the settings of tasks.common.tables.write_table
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", use_dictionary=True,
                                           write_statistics=True, store_schema=True)
        self.writer.write_table(table)

    def close(self) -> int:
        self._to_arrow()
        if self.pending or self.writer is None:  # an empty table is written as one, too
            table = pa.concat_tables(self.batches) if self.batches else self.schema.empty_table()
            self._write(table.combine_chunks())
        self.writer.close()
        self.tmp.replace(self.path)
        return self.count


def concept_row(cui: str, rows: list[list[str]], types: list[tuple[str, str]],
                groups: dict[str, tuple[str, str]]) -> dict:
    """One concept from its kept MRCONSO rows (file order) and its (TUI, type name)s."""
    ts, stt, ispref, text, sab = rrf.TS, rrf.STT, rrf.ISPREF, rrf.STR, rrf.SAB
    preferred = next((row[text] for row in rows if row[ts] == "P" and row[stt] == "PF" and row[ispref] == "Y"),
                     None)
    type_groups = [groups.get(t, ("UNKN", ""))[0] for t, _ in types]
    return {
        # UMLS's preferred name: TS=P, STT=PF, ISPREF=Y (first such row); else the first row's
        "cui": cui, "preferred_name": preferred or rows[0][text],
        "semantic_types": [t for t, _ in types], "semantic_type_names": [n for _, n in types],
        "semantic_groups": sorted(set(type_groups)), "semantic_group": type_groups[0],
        "n_terms": len(rows), "sources": sorted({row[sab] for row in rows}),
    }
