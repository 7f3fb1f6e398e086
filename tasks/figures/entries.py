"""One article's figures result as a cache entry (tasks/incremental/store.py), and back.

An entry is one Arrow file (tasks/incremental/tables.py): the samples a figure shard holds
(key, JPEG and JSON member: figures, and panels with figures.panels split or both), the
figure rows, the panel rows (tasks/figures/panel_samples.py), the article's rejected rows,
and as its value the counts and the ingest shard the metadata names. Reading it back gives
what process_article returned, so a shard assembled from entries holds the bytes a fresh
run writes (a fresh run assembles from its entries too).
"""
from __future__ import annotations

import json

import pyarrow as pa

from tasks.common.tables import REJECTED_SCHEMA, rows_to_table
from tasks.figures.panel_samples import PANELS_SCHEMA
from tasks.figures.shards import json_bytes
from tasks.incremental.tables import read_tables, write_tables

SUFFIX = ".arrow"
SAMPLES_SCHEMA = pa.schema([("key", pa.string()), ("jpeg", pa.binary()), ("meta", pa.binary())])


def write_entry(path, samples: list[tuple[str, bytes, dict]], rejected: list[dict], counts: dict,
                figures_schema: pa.Schema, article_shard: str | None,
                shard_samples: list[tuple[str, bytes, dict]] | None = None, panels: list[dict] = ()) -> None:
    """samples: the figures (their rows); shard_samples: what the shard holds (default: samples)."""
    figures = sorted(samples, key=lambda s: s[0])
    stored = sorted(figures if shard_samples is None else shard_samples, key=lambda s: s[0])
    table = pa.table({"key": [k for k, _, _ in stored], "jpeg": [j for _, j, _ in stored],
                      "meta": [json_bytes(m) for _, _, m in stored]}, schema=SAMPLES_SCHEMA)
    write_tables(path, {"samples": table, "figures": rows_to_table([m for _, _, m in figures], figures_schema),
                        "panels": rows_to_table(sorted(panels, key=lambda r: r["key"]), PANELS_SCHEMA),
                        "rejected": rows_to_table(rejected, REJECTED_SCHEMA)},
                 {"counts": counts, "article_shard": article_shard})


def read_entry(path, figures_schema: pa.Schema, article_shard: str | None):
    """(samples as (key, jpeg, JSON member bytes), figure rows, rejected rows, counts, panel
    rows), the metadata naming `article_shard`, where the article sits now."""
    tables, value = read_tables(path, {"samples": SAMPLES_SCHEMA, "figures": figures_schema,
                                       "panels": PANELS_SCHEMA, "rejected": REJECTED_SCHEMA})
    samples, figures = tables["samples"], tables["figures"]
    metas = samples["meta"].to_pylist()
    if value["article_shard"] != article_shard:  # the layout moved the article: say where it is now
        metas = [json_bytes(dict(json.loads(m), article_shard=article_shard)) for m in metas]
    index = figures.schema.get_field_index("article_shard")
    figures = figures.set_column(index, "article_shard", pa.array([article_shard] * figures.num_rows, pa.string()))
    return (list(zip(samples["key"].to_pylist(), samples["jpeg"].to_pylist(), metas)), figures,
            tables["rejected"].to_pylist(), value["counts"], tables["panels"])
