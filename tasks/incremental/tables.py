"""Cache entries as one Arrow IPC file: an item's tables and a small JSON value.

Each table is stored as a one-row list-of-struct column, so reading an entry back is one
file read with no per-row Python work, and many entries concatenate as Arrow tables. A
stage assembles its outputs from entries in every run, a first run included, so the bytes
of an update and of a from-scratch run go through the same code.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

_VALUE = "__value__"


def write_tables(path: str | Path, tables: dict[str, pa.Table], value: object = None) -> None:
    columns = {}
    for name, table in tables.items():
        struct = table.to_struct_array().combine_chunks() if table.num_rows else \
            pa.array([], pa.struct(list(table.schema)))
        columns[name] = pa.ListArray.from_arrays(pa.array([0, len(struct)], pa.int32()), struct)
    columns[_VALUE] = pa.array([json.dumps(value, sort_keys=True)], pa.string())
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_tables(path: str | Path, schemas: dict[str, pa.Schema]) -> tuple[dict[str, pa.Table], object]:
    """The entry's tables, cast to `schemas`, and its value."""
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    tables = {}
    for name, schema in schemas.items():
        struct = table[name].combine_chunks().flatten()
        tables[name] = pa.Table.from_struct_array(struct).cast(schema) if len(struct) else schema.empty_table()
    return tables, json.loads(table[_VALUE][0].as_py())
