"""link_concepts' domain logic: figure captions and subcaptions -> mention rows, per shard.

A figure's texts are its caption ("caption") and each panel's subcaption
("subcaption:<panel>"); mention offsets are relative to that text.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import pyarrow as pa

STAGE = "link_concepts"

MENTIONS_SCHEMA = pa.schema([
    ("key", pa.string()), ("pmcid", pa.string()), ("figure_id", pa.string()),
    ("text_field", pa.string()),          # "caption" or "subcaption:<panel>"
    ("sentence", pa.int32()), ("start", pa.int32()), ("end", pa.int32()),  # chars in that text
    ("text", pa.string()), ("cui", pa.string()), ("preferred_name", pa.string()),
    ("similarity", pa.float32()), ("semantic_types", pa.list_(pa.string())),
    ("semantic_group", pa.string()), ("negated", pa.bool_()), ("uncertain", pa.bool_()),
    ("matched_term", pa.string()), ("abbreviation_of", pa.string()),
    ("source", pa.string()), ("stage", pa.string()),
])
CAPTION_CONCEPTS_SCHEMA = pa.schema([
    ("key", pa.string()), ("pmcid", pa.string()), ("figure_id", pa.string()),
    ("cuis", pa.list_(pa.string())),      # affirmed concepts: what training uses
    ("negated_cuis", pa.list_(pa.string())), ("uncertain_cuis", pa.list_(pa.string())),
    ("n_texts", pa.int32()), ("n_mentions", pa.int32()),
    ("source", pa.string()), ("stage", pa.string()),
])
FREQUENCY_SCHEMA = pa.schema([
    ("cui", pa.string()), ("preferred_name", pa.string()), ("semantic_group", pa.string()),
    ("mentions", pa.int64()), ("figures", pa.int64()), ("affirmed_figures", pa.int64()),
    ("negated_mentions", pa.int64()), ("uncertain_mentions", pa.int64()),
])


def figure_texts(row: dict) -> list[tuple[str, str]]:
    """(text_field, text) pairs of one figure row; empty texts skipped."""
    texts = []
    caption = row.get("caption")
    if caption and caption.strip():
        texts.append(("caption", caption))
    for sub in row.get("subcaptions") or []:
        text = (sub or {}).get("text")
        if text and text.strip():
            texts.append((f"subcaption:{sub.get('panel') or ''}", text))
    return texts


def link_figures(rows: Iterable[dict], linker, source: str, max_chars: int, exclude_uncertain: bool) -> dict:
    """Mentions, per-figure concepts and rejections for a shard of figure rows."""
    mentions, concepts, rejected = [], [], []
    jobs = []  # (row index, field, text)
    rows = list(rows)
    for index, row in enumerate(rows):
        texts = figure_texts(row)
        if not texts:
            rejected.append({"item": row["key"], "source": source, "reason": "empty_caption",
                             "detail": "figure has neither caption nor subcaption text", "stage": STAGE})
            continue
        too_long = [f for f, t in texts if len(t) > max_chars]
        if too_long:
            rejected.append({"item": row["key"], "source": source, "reason": "caption_too_long",
                             "detail": f"{too_long[0]} is over {max_chars} characters", "stage": STAGE})
            continue
        jobs.extend((index, field, text) for field, text in texts)
    per_figure: dict[int, list] = defaultdict(list)
    results = linker.link_many([text for _, _, text in jobs])
    for (index, field, _), found in zip(jobs, results):
        row = rows[index]
        for m in found:
            per_figure[index].append(m)
            mentions.append(dict(m.as_dict(), key=row["key"], pmcid=row.get("pmcid"),
                                 figure_id=row.get("figure_id"), text_field=field, source=source,
                                 stage=STAGE))
    n_texts = defaultdict(int)
    for index, _, _ in jobs:
        n_texts[index] += 1
    for index in sorted(n_texts):
        row, found = rows[index], per_figure.get(index, [])
        affirmed = {m.cui for m in found if not m.negated and not (exclude_uncertain and m.uncertain)}
        concepts.append({
            "key": row["key"], "pmcid": row.get("pmcid"), "figure_id": row.get("figure_id"),
            "cuis": sorted(affirmed),
            "negated_cuis": sorted({m.cui for m in found if m.negated} - affirmed),
            "uncertain_cuis": sorted({m.cui for m in found if m.uncertain and not m.negated} - affirmed),
            "n_texts": n_texts[index], "n_mentions": len(found), "source": source, "stage": STAGE,
        })
    return {"mentions": mentions, "concepts": concepts, "rejected": rejected}


def concept_frequency_table(mentions_path, concepts_path) -> pa.Table:
    """The frequency table from the merged outputs, aggregated in Arrow (no Python rows)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    m = pq.read_table(mentions_path, columns=["key", "cui", "preferred_name", "semantic_group", "negated",
                                              "uncertain"])
    agg = m.group_by("cui").aggregate([
        ("key", "count"), ("key", "count_distinct"), ("negated", "sum"), ("uncertain", "sum"),
        ("preferred_name", "min"), ("semantic_group", "min")])
    counts = pc.value_counts(pc.list_flatten(pq.read_table(concepts_path, columns=["cuis"])["cuis"]))
    affirmed = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
    cuis = agg["cui"].to_pylist()
    table = pa.table({
        "cui": agg["cui"], "preferred_name": agg["preferred_name_min"], "semantic_group": agg["semantic_group_min"],
        "mentions": pc.cast(agg["key_count"], pa.int64()), "figures": pc.cast(agg["key_count_distinct"], pa.int64()),
        "affirmed_figures": pa.array([affirmed.get(c, 0) for c in cuis], pa.int64()),
        "negated_mentions": pc.cast(pc.fill_null(agg["negated_sum"], 0), pa.int64()),
        "uncertain_mentions": pc.cast(pc.fill_null(agg["uncertain_sum"], 0), pa.int64()),
    })
    return table.select(FREQUENCY_SCHEMA.names).cast(FREQUENCY_SCHEMA).sort_by([("cui", "ascending")])
