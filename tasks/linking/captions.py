"""link_concepts' domain logic: figure captions and subcaptions -> mention rows, per shard.

A figure's texts are its caption ("caption") and each panel's subcaption
("subcaption:<panel>"); mention offsets are relative to that text.

Panels the figures stage cut (panels.parquet, figures.panels split | both) get a concepts row
of their own, keyed `<figure key>_<label>`: the concepts of their subcaption and of the
caption's shared part (the caption's mentions that lie inside it). They are taken from the
figure's mentions, not linked again, so mentions.parquet holds each text's mentions once.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import pyarrow as pa

from tasks.figures.panels import shared_span

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
    ("parent", pa.string()), ("panel", pa.string()),  # a panel's figure key and label; null for a figure
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


def panel_mentions(mentions: list, caption: str, shared: str | None, label: str) -> list:
    """Of one figure's (text_field, mention) pairs, those of panel `label`: its subcaption's,
    and the caption's inside the shared part."""
    span = shared_span(caption, shared)
    own = f"subcaption:{label}"
    return [(field, m) for field, m in mentions if field == own or (
        field == "caption" and span is not None and span[0] <= m.start and m.end <= span[1])]


def _concept_lists(found: list, exclude_uncertain: bool) -> dict:
    affirmed = {m.cui for m in found if not m.negated and not (exclude_uncertain and m.uncertain)}
    return {"cuis": sorted(affirmed), "negated_cuis": sorted({m.cui for m in found if m.negated} - affirmed),
            "uncertain_cuis": sorted({m.cui for m in found if m.uncertain and not m.negated} - affirmed)}


def link_figures(rows: Iterable[dict], linker, source: str, max_chars: int, exclude_uncertain: bool,
                 panels: Iterable[dict] = ()) -> dict:
    """Mentions, per-figure concepts and rejections for a shard of figure rows; with `panels`
    (key, parent, label rows of panels.parquet) a concepts row per panel too."""
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
            per_figure[index].append((field, m))
            mentions.append(dict(m.as_dict(), key=row["key"], pmcid=row.get("pmcid"),
                                 figure_id=row.get("figure_id"), text_field=field, source=source,
                                 stage=STAGE))
    n_texts = defaultdict(int)
    for index, _, _ in jobs:
        n_texts[index] += 1
    for index in sorted(n_texts):
        row, found = rows[index], [m for _, m in per_figure.get(index, [])]
        concepts.append({
            "key": row["key"], "pmcid": row.get("pmcid"), "figure_id": row.get("figure_id"), "parent": None,
            "panel": None, **_concept_lists(found, exclude_uncertain),
            "n_texts": n_texts[index], "n_mentions": len(found), "source": source, "stage": STAGE,
        })
    index_of = {row["key"]: index for index, row in enumerate(rows)}
    why_rejected = {r["item"]: r["reason"] for r in rejected}
    for panel in sorted(panels, key=lambda p: p["key"]):
        parent = panel["parent"]
        if parent not in index_of or index_of[parent] not in n_texts:
            reason = why_rejected.get(parent)
            rejected.append({"item": panel["key"], "source": source,
                             "reason": "figure_rejected" if reason else "figure_missing",
                             "detail": f"its figure {parent} was rejected ({reason})" if reason
                             else f"its figure {parent} is not in figures.parquet", "stage": STAGE})
            continue
        row = rows[index_of[parent]]
        subcaption = next((s.get("text") for s in row.get("subcaptions") or [] if s and s.get("panel") == panel["label"]),
                          None)
        found = [m for _, m in panel_mentions(per_figure.get(index_of[parent], []), row.get("caption") or "",
                                              row.get("caption_shared"), panel["label"])]
        concepts.append({
            "key": panel["key"], "pmcid": row.get("pmcid"), "figure_id": row.get("figure_id"), "parent": parent,
            "panel": panel["label"], **_concept_lists(found, exclude_uncertain),
            "n_texts": sum(1 for t in (row.get("caption_shared"), subcaption) if t and t.strip()),
            "n_mentions": len(found), "source": source, "stage": STAGE,
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
    concepts = pq.read_table(concepts_path)
    if "parent" in concepts.column_names:  # figures only: a panel's concepts are its figure's too
        concepts = concepts.filter(pc.is_null(concepts["parent"]))
    counts = pc.value_counts(pc.list_flatten(concepts["cuis"]))
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
