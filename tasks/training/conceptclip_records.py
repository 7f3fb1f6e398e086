"""What ConceptCLIP trains on, from the tables: figure (and panel) records with their affirmed
concepts and the caption spans that name them, split by article; and the wordings prompts use.

Mentions in subcaptions are moved into caption coordinates where the subcaption text occurs in
the caption. Panels (figures.panels split | both): a figure whose panels have concept rows
(link_concepts' caption_concepts rows with a `parent`) and image members trains as those
panels, each with its own text (the shared caption, then its subcaption), its own concepts and
the spans of its figure's mentions moved into that text; every other figure trains whole.
Loaders read only the columns they need, so added columns are harmless.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from tasks.figures.panels import panel_text, shared_span
from tasks.training.splits import TRAIN, VALIDATION, SplitSpec


@dataclass
class FigureRecord:
    key: str
    pmcid: str
    shard: str
    caption: str
    cuis: list[str]
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # caption chars [start, end), cui
    split: str = TRAIN
    parent: str | None = None  # a panel's figure key (the caption is then the panel's text)


def _read(path: Path, columns: list[str]) -> list[dict]:
    schema = pq.read_schema(path)
    have = [c for c in columns if c in schema.names]
    return pq.read_table(path, columns=have).to_pylist()


def _affirmed(m: dict, affirmed: list[str], exclude_uncertain: bool) -> bool:
    return not (m.get("negated") or (exclude_uncertain and m.get("uncertain")) or m["cui"] not in affirmed)


def _figure_spans(mentions: list[dict], caption: str, subs: dict[str, str], affirmed: list[str],
                  exclude_uncertain: bool) -> list[tuple[int, int, str]]:
    spans = []
    for m in mentions:
        if not _affirmed(m, affirmed, exclude_uncertain):
            continue
        shift = 0
        if m["text_field"] != "caption":
            sub = subs.get(m["text_field"])
            pos = caption.find(sub) if sub else -1
            if pos < 0:
                continue  # subcaption text not found verbatim in the caption
            shift = pos
        start, end = int(m["start"]) + shift, int(m["end"]) + shift
        if 0 <= start < end <= len(caption):
            spans.append((start, end, m["cui"]))
    return sorted(set(spans))


def _panel_spans(mentions: list[dict], caption: str, shared: str, label: str, subcaption: str,
                 affirmed: list[str], exclude_uncertain: bool) -> tuple[str, list[tuple[int, int, str]]]:
    """(the panel's text, its concept spans in it) from its figure's mentions: the subcaption's
    moved after the shared part, the caption's inside the shared part moved to its start."""
    text = panel_text(shared, subcaption)
    shared = (shared or "").strip()
    sub_at = len(shared) + 1 if shared else 0
    where = shared_span(caption, shared)
    verbatim = where is not None and caption[where[0]:where[1]] == shared  # else its offsets differ
    spans = []
    for m in mentions:
        if not _affirmed(m, affirmed, exclude_uncertain):
            continue
        start, end = int(m["start"]), int(m["end"])
        if m["text_field"] == f"subcaption:{label}":
            start, end = start + sub_at, end + sub_at
        elif m["text_field"] == "caption" and verbatim and where[0] <= start and end <= where[1]:
            start, end = start - where[0], end - where[0]
        else:
            continue
        if 0 <= start < end <= len(text):
            spans.append((start, end, m["cui"]))
    return text, sorted(set(spans))


def load_records(figures: str | Path, caption_concepts: str | Path | None, mentions: str | Path | None,
                 image_index: dict, split: SplitSpec,
                 exclude_uncertain: bool = True) -> tuple[list[FigureRecord], list[dict]]:
    """Figure (and panel) records with affirmed concepts and their caption spans; and
    rejections, one per figure that trains neither whole nor as panels."""
    rows = _read(Path(figures), ["key", "pmcid", "caption", "caption_shared", "subcaptions", "sha256"])
    concepts, panels_of = {}, {}
    if caption_concepts and Path(caption_concepts).is_file():
        for r in _read(Path(caption_concepts), ["key", "cuis", "parent", "panel"]):
            concepts[r["key"]] = list(r.get("cuis") or [])
            if r.get("parent"):
                panels_of.setdefault(r["parent"], []).append((r["key"], r["panel"]))
    by_key: dict[str, list[dict]] = {}
    if mentions and Path(mentions).is_file():
        for m in _read(Path(mentions), ["key", "text_field", "start", "end", "cui", "negated", "uncertain"]):
            by_key.setdefault(m["key"], []).append(m)
    records, rejected, seen_sha = [], [], {}
    for row in sorted(rows, key=lambda r: r["key"]):
        key, caption = row["key"], (row.get("caption") or "").strip()
        def reject(reason, detail):
            rejected.append({"item": key, "source": row.get("pmcid") or "", "reason": reason, "detail": detail})
        # split or both: panels train in the figure's place when every one has its image member
        panels = sorted(panels_of.get(key, []))
        as_panels = bool(panels) and all(k in image_index for k, _ in panels)
        if not caption:
            reject("empty_caption", "figure has no caption text"); continue
        if key not in image_index and not as_panels:
            reject("image_missing", "no image member for this key in the figure shards"); continue
        sha = row.get("sha256")
        if sha and sha in seen_sha:
            reject("duplicate_image", f"same image bytes as {seen_sha[sha]}"); continue
        if sha:
            seen_sha[sha] = key
        pmcid = row.get("pmcid") or key
        subs = {f"subcaption:{s['panel']}": s["text"] for s in (row.get("subcaptions") or []) if s and s.get("text")}
        figure_mentions = sorted(by_key.get(key, []), key=lambda m: (m["text_field"], m["start"], m["end"], m["cui"]))
        if not as_panels:
            affirmed = list(dict.fromkeys(concepts.get(key, [])))
            records.append(FigureRecord(key=key, pmcid=pmcid, shard=image_index[key][0], caption=caption,
                                        cuis=affirmed, spans=_figure_spans(figure_mentions, caption, subs, affirmed,
                                                                           exclude_uncertain),
                                        split=split.of(pmcid)))
            continue
        for panel_key, label in panels:
            affirmed = list(dict.fromkeys(concepts.get(panel_key, [])))
            text, spans = _panel_spans(figure_mentions, caption, row.get("caption_shared") or "", label,
                                       subs.get(f"subcaption:{label}", ""), affirmed, exclude_uncertain)
            records.append(FigureRecord(key=panel_key, pmcid=pmcid, shard=image_index[panel_key][0],
                                        caption=text or caption, cuis=affirmed, spans=spans,
                                        split=split.of(pmcid), parent=key))
    return records, rejected


def mention_keys(records: list[FigureRecord]) -> set[str]:
    """The keys mentions.parquet holds these records' mentions under: a panel's are its figure's."""
    return {r.parent or r.key for r in records}


def surface_forms(mentions: str | Path | None, train_keys: set[str]) -> dict[str, str]:
    """Each concept's most frequent affirmed wording in the training captions.

    Prompts use the words the model has read ("CT"), not only UMLS preferred names
    ("X-Ray Computed Tomography"), which may never occur in captions.
    """
    if not mentions or not Path(mentions).is_file():
        return {}
    counts: dict[str, dict[str, int]] = {}
    for m in pq.read_table(mentions, columns=["key", "cui", "text", "negated"]).to_pylist():
        if m["key"] in train_keys and not m["negated"] and m["text"]:
            forms = counts.setdefault(m["cui"], {})
            forms[m["text"].lower()] = forms.get(m["text"].lower(), 0) + 1
    return {cui: sorted(forms.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for cui, forms in counts.items()}


def preferred_names(mentions: str | Path | None, cuis) -> dict[str, str]:
    """Each concept's preferred name as the linker wrote it beside its mentions."""
    wanted = set(cuis)
    if not mentions or not Path(mentions).is_file() or not wanted:
        return {}
    table = pq.read_table(mentions, columns=["cui", "preferred_name"])
    return {r["cui"]: r["preferred_name"] for r in table.to_pylist() if r["cui"] in wanted and r["preferred_name"]}


def split_records(records: list[FigureRecord]) -> tuple[list[FigureRecord], list[FigureRecord]]:
    """(train, validation): what training reads; the test side is evaluate's alone."""
    return [r for r in records if r.split == TRAIN], [r for r in records if r.split == VALIDATION]
