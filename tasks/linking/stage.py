"""The link_concepts stage as plain functions for the stage runner (flows/_runner.py).

Items are figures (the keys of figures.parquet) and the panels cut from them (the keys of
panels.parquet beside it, when the figures stage wrote one: figures.panels split | both),
cached by article: an article whose figure texts, panels, the link params, the UMLS index
content and the code were linked before has a cache entry (tasks/incremental/store.py) and
needs no task. plan: the other articles, in tasks of
about `figures_per_task` figures. link_shard (on a worker, one QuickUMLS matcher per worker
process): their captions and subcaptions linked, one entry per article (Arrow tables:
tasks/incremental/tables.py). merge: mentions.parquet, caption_concepts.parquet (one row per
linked figure and per panel of a linked figure) and concept_frequency.parquet (figures only)
from every article's entry.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.common.locations import recorded
from tasks.common.sharding import Merged, Plan, ShardResult
from tasks.common.tables import REJECTED_SCHEMA, rows_to_table, write_table
from tasks.incremental.store import (ItemCache, cache_dir_for, code_version, fingerprint, item_key,
                                     params_for_key, run_record)
from tasks.incremental.layout import content_groups
from tasks.incremental.tables import read_tables, write_tables
from tasks.linking import captions
from tasks.linking.index_files import quickumls_dir
from tasks.linking.linker import get_linker

STAGE = captions.STAGE
FIGURE_COLUMNS = ("key", "pmcid", "figure_id", "caption", "caption_shared", "subcaptions")
PANEL_COLUMNS = ("key", "parent", "pmcid", "label")
PANELS_FILE = "panels.parquet"  # the figures stage writes it beside figures.parquet
LAYOUT_KEYS = ("figures", "index_dir", "output_dir", "figures_per_task", "incremental")
SUFFIX = ".arrow"
PART_SUFFIX, ARTICLES_PER_PART = ".part.arrow", 200   # merge reads articles' entries in parts of about this many
ENTRY_SCHEMAS = {"mentions": captions.MENTIONS_SCHEMA, "concepts": captions.CAPTION_CONCEPTS_SCHEMA,
                 "rejected": REJECTED_SCHEMA}


def figure_columns(path: str | Path) -> list[str]:
    """The columns of figures.parquet that linking reads; an error when the table is missing or
    lacks key and caption."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"link_concepts.figures: {path} not found (run the figures stage first)")
    names = pq.read_schema(path).names
    if "key" not in names or "caption" not in names:
        raise ValueError(f"{path} lacks the columns key and caption")
    return [c for c in FIGURE_COLUMNS if c in names]


def panel_rows(figures: str | Path) -> list[dict]:
    """(key, parent, pmcid, label) of the panels beside figures.parquet; none without the file."""
    path = Path(figures).with_name(PANELS_FILE)
    if not path.is_file():
        return []
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in PANEL_COLUMNS if c in names]).to_pylist()


Group = tuple[str, list[dict], list[dict]]  # (article, its figure rows by key, its panel rows by key)


def article_groups(path: str | Path) -> tuple[list[str], list[Group]]:
    """(every figure key in table order and then every panel key, [(article, its figure rows,
    its panel rows)] by article)."""
    table = pq.read_table(path, columns=figure_columns(path))
    rows = table.to_pylist()
    panels = panel_rows(path)
    groups: dict[str, list[dict]] = {}
    article_of = {}
    for row in rows:
        article_of[row["key"]] = row.get("pmcid") or row["key"]
        groups.setdefault(article_of[row["key"]], []).append(row)
    panels_of: dict[str, list[dict]] = {}
    for panel in panels:  # with its figure's article; a panel without its figure on its own (rejected)
        article = article_of.get(panel["parent"]) or panel.get("pmcid") or panel["parent"]
        panels_of.setdefault(article, []).append(panel)
        groups.setdefault(article, [])
    return ([r["key"] for r in rows] + [p["key"] for p in panels],
            [(a, sorted(groups[a], key=lambda r: r["key"]), sorted(panels_of.get(a, []), key=lambda p: p["key"]))
             for a in sorted(groups)])


def index_fingerprint(cfg: dict, cache: Path) -> str:
    """The content hash of what the linker reads of the UMLS index (its QuickUMLS folder and
    concepts.parquet), unchanged files not read again."""
    index = Path(cfg["index_dir"])
    files = [p for p in quickumls_dir(index).rglob("*") if p.is_file()]
    files += [index / "concepts.parquet"] if (index / "concepts.parquet").is_file() else []
    return fingerprint(files, index, cache / "index-files.json")


def run_context(cfg: dict, out: Path) -> dict:
    cache = cache_dir_for(out)
    return {"cache": str(cache), "read": cfg["incremental"], "code": code_version(__name__),
            "params": params_for_key(cfg, LAYOUT_KEYS), "index": index_fingerprint(cfg, cache),
            "source": recorded(cfg["figures"], cfg["run_root"])}


def group_key(run: dict, rows: list[dict], panels: list[dict]) -> str:
    return item_key(STAGE, run["code"], run["params"], run["index"], run["source"], rows, panels)


def _batches(groups: list[tuple[str, list[dict], list[dict]]], size: int) -> list[list[tuple[str, list[dict], list[dict]]]]:
    """Whole articles in batches of about `size` figures."""
    batches, current, n = [], [], 0
    for group in groups:
        if current and n + len(group[1]) > size:
            batches.append(current)
            current, n = [], 0
        current.append(group)
        n += len(group[1])
    return batches + ([current] if current else [])


def plan(cfg: dict, out: Path) -> Plan:
    run = run_context(cfg, out)
    cache = ItemCache.of(run)
    keys, groups = article_groups(cfg["figures"])
    todo = [(group_key(run, rows, panels), rows, panels) for _, rows, panels in groups]
    todo = [group for group in todo if cache.hit(group[0], SUFFIX) is None]
    batches = _batches(todo, cfg["figures_per_task"])
    return Plan(items=keys, shards=[(index, batch, run) for index, batch in enumerate(batches)])


def link_shard(shard: tuple[int, list[tuple[str, list[dict], list[dict]]], dict], cfg: dict, out: str) -> ShardResult:
    """Whole articles' figures (and their panels) linked, one cache entry each; value: how many
    items (figures and panels)."""
    index, groups, run = shard
    rows = [row for _, group, _ in groups for row in group]
    panels = [panel for _, _, group in groups for panel in group]
    linker = get_linker(cfg["index_dir"], cfg)  # cached per worker process
    result = captions.link_figures(rows, linker, source=run["source"], max_chars=cfg["max_chars"],
                                   exclude_uncertain=cfg["exclude_uncertain"], panels=panels)
    entry_of = {item["key"]: key for key, group, panel_group in groups for item in group + panel_group}
    split = {key: {"mentions": [], "concepts": [], "rejected": []} for key, _, _ in groups}
    for kind, item in (("mentions", "key"), ("concepts", "key"), ("rejected", "item")):
        for row in result[kind]:
            split[entry_of[row[item]]][kind].append(row)
    cache = ItemCache.of(run)
    for key, value in split.items():
        tmp = cache.temporary(key, SUFFIX)
        write_tables(tmp, {kind: rows_to_table(value[kind], ENTRY_SCHEMAS[kind]) for kind in ENTRY_SCHEMAS})
        cache.commit(tmp, key, SUFFIX)
    return ShardResult(value=len(rows) + len(panels))


def _part_tables(cache: ItemCache, part_key: str, keys: list[str]) -> dict[str, pa.Table]:
    """The tables of consecutive articles' entries, concatenated, kept as one entry of its own:
    a merge reads one file per ARTICLES_PER_PART articles, and only the parts an update
    touched are put together again from their articles' entries."""
    path = cache.hit(part_key, PART_SUFFIX)
    if path is not None:
        return read_tables(path, ENTRY_SCHEMAS)[0]
    pieces: dict[str, list[pa.Table]] = {kind: [schema.empty_table()] for kind, schema in ENTRY_SCHEMAS.items()}
    for key in keys:
        for kind, table in read_tables(cache.path(key, SUFFIX), ENTRY_SCHEMAS)[0].items():
            pieces[kind].append(table)
    tables = {kind: pa.concat_tables(pieces[kind]) for kind in ENTRY_SCHEMAS}
    tmp = cache.temporary(part_key, PART_SUFFIX)
    write_tables(tmp, tables)
    cache.commit(tmp, part_key, PART_SUFFIX)
    return tables


def _sorted(tables: list[pa.Table], schema: pa.Schema, sort_by: tuple[str, ...]) -> pa.Table:
    table = pa.concat_tables([schema.empty_table(), *tables])
    return table.sort_by([(name, "ascending") for name in sort_by]) if table.num_rows else table


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    """The tables from every article's entry (Arrow reads, no per-row Python)."""
    run = run_context(cfg, out)
    cache = ItemCache(run["cache"])
    _, groups = article_groups(cfg["figures"])
    keys = [group_key(run, rows, panels) for _, rows, panels in groups]
    parts: dict[str, list[pa.Table]] = {kind: [] for kind in ENTRY_SCHEMAS}
    part_keys = []
    key_of = {article: key for (article, _, _), key in zip(groups, keys)}
    for members in content_groups([article for article, _, _ in groups], ARTICLES_PER_PART):
        member_keys = [key_of[article] for article in members]
        part_keys.append(item_key(STAGE, "part", member_keys))
        for kind, table in _part_tables(cache, part_keys[-1], member_keys).items():
            parts[kind].append(table)
    mentions = _sorted(parts["mentions"], captions.MENTIONS_SCHEMA, ("key", "text_field", "start", "end", "cui"))
    concepts = _sorted(parts["concepts"], captions.CAPTION_CONCEPTS_SCHEMA, ("key",))
    mentions_path, concepts_path = out / "mentions.parquet", out / "caption_concepts.parquet"
    write_table(mentions, mentions_path)
    write_table(concepts, concepts_path)
    frequency = captions.concept_frequency_table(mentions_path, concepts_path)
    write_table(frequency, out / "concept_frequency.parquet")
    is_panel = [parent is not None for parent in concepts["parent"].to_pylist()]
    without = [not cuis for cuis in concepts["cuis"].to_pylist()]
    counts = {"mentions": mentions.num_rows, "concepts": frequency.num_rows,
              "figures_without_concepts": sum(w and not p for w, p in zip(without, is_panel)),
              "panels": sum(is_panel), "panels_without_concepts": sum(w and p for w, p in zip(without, is_panel)),
              "negated_mentions": pc.sum(pc.cast(mentions["negated"], "int64")).as_py() or 0,
              "uncertain_mentions": pc.sum(pc.cast(mentions["uncertain"], "int64")).as_py() or 0,
              "abbreviation_mentions": sum(1 for v in mentions["abbreviation_of"].to_pylist() if v)}
    processed = sum(r.value for r in results)
    pruned = cache.prune(keys + part_keys)
    run_record(out, STAGE, len(plan.items), processed, len(plan.items) - processed, cfg["incremental"], pruned)
    rejected = pa.concat_tables([REJECTED_SCHEMA.empty_table(), *parts["rejected"]]).to_pylist()
    return Merged(items_out=concepts.num_rows, accounted=set(concepts["key"].to_pylist()), rejected=rejected,
                  counts=counts)
