"""The figures stage as plain functions for the stage runner (flows/_runner.py).

plan: the current articles of articles.parquet (superseded and retracted versions are left
out); an article whose inputs (its members' hash, its metadata, the figures params and code)
were processed before has a cache entry (tasks/incremental/store.py) and needs no task; the
others go to tasks of `articles_per_task` articles, a slice of one ingest shard each.
figures_shard (on a worker): each article's figures into its cache entry (tasks/figures/entries.py).
merge: (pass 2) output shards `figures-<first PMCID>.tar` assembled from the entries of the
articles that content sets in them (tasks/incremental/layout.py), then the part tables
concatenated, near-duplicate images flagged across articles, a contact sheet drawn.
"""
from __future__ import annotations

import io
import json

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from tasks.common.sharding import Merged, Plan, ShardResult, add_counts, chunks, fan_out_unless_cached
from tasks.common.tables import concat_parts, write_table
from tasks.figures import entries, panel_labels
from tasks.figures.article import STAGE, Settings, process_article
from tasks.figures.contact_sheet import draw_contact_sheet, pick_evenly
from tasks.figures.near_duplicates import near_duplicates
from tasks.figures.panel_samples import PANELS_SCHEMA
from tasks.figures.panels import stored_box
from tasks.figures.shards import read_articles, read_jpeg, write_shard
from tasks.incremental.layout import content_groups
from tasks.incremental.store import ItemCache, cache_dir_for, code_version, item_key, params_for_key, run_record

SUBCAPTION = pa.struct([("panel", pa.string()), ("text", pa.string())])
FIGURES_SCHEMA = pa.schema([
    ("key", pa.string()), ("pmcid", pa.string()), ("figure_id", pa.string()), ("label", pa.string()),
    ("caption", pa.string()), ("caption_title", pa.string()), ("caption_shared", pa.string()),
    ("subcaptions", pa.list_(SUBCAPTION)), ("group", pa.string()), ("source", pa.string()),
    ("page", pa.int32()), ("bbox", pa.list_(pa.float64())), ("pdf_caption_overlap", pa.float64()),
    ("licence", pa.string()), ("licence_url", pa.string()), ("commercial_use_ok", pa.bool_()),
    ("article_shard", pa.string()), ("package_sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string()), ("phash", pa.string()),
    ("source_file", pa.string()), ("source_sha256", pa.string()), ("source_width", pa.int32()),
    ("source_height", pa.int32()), ("source_frames", pa.int32()),
    ("shard", pa.string()), ("near_duplicate_of", pa.string()), ("stage", pa.string()),
])
ARTICLE_COLUMNS = ["pmcid", "shard", "licence", "licence_url", "commercial_use_ok", "package_sha256", "nxml",
                   "members_sha256", "status"]
# an article's figures depend on these fields of its row, never on the shard it sits in
KEY_COLUMNS = ("pmcid", "licence", "licence_url", "commercial_use_ok", "package_sha256", "nxml", "members_sha256")
LAYOUT_KEYS = ("articles", "shards_dir", "output_dir", "articles_per_task", "near_duplicate_distance",
               "contact_sheet", "incremental")
SHARD_PATTERN = "figures-{}.tar"


def current_articles(cfg: dict) -> list[dict]:
    """The rows figures works on, by PMCID: ingest's current versions (every row of a table
    without a status column, as tests and other producers write)."""
    table = pq.read_table(cfg["articles"])
    if "status" in table.column_names:
        table = table.filter(pc.equal(table["status"], "current"))
    columns = [c for c in ARTICLE_COLUMNS if c in table.column_names]
    return sorted(table.select(columns).to_pylist(), key=lambda r: r["pmcid"])


def run_context(cfg: dict, out: Path) -> dict:
    code = code_version(__name__)
    if panel_labels.check_method(cfg["panel_labels"]) == panel_labels.OCR:
        code += "+" + panel_labels.engine_version()  # read labels depend on the OCR models' versions
    return {"cache": str(cache_dir_for(out)), "read": cfg["incremental"], "code": code,
            "params": params_for_key(cfg, LAYOUT_KEYS)}


def article_key(run: dict, row: dict) -> str:
    # without ingest's members hash (another producer's table) the package hash stands in
    return item_key(STAGE, run["code"], run["params"], {c: row.get(c) for c in KEY_COLUMNS})


def plan(cfg: dict, out: Path) -> Plan:
    """(index, ingest shard path, article rows with their entry key, run) per task, for the
    articles without a cache entry, in shard and PMCID order."""
    run = run_context(cfg, out)
    cache = ItemCache.of(run)
    rows = current_articles(cfg)
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        key = article_key(run, row)
        if cache.hit(key, entries.SUFFIX) is None:
            by_shard.setdefault(row["shard"], []).append(dict(row, entry=key))
    work = []
    for shard in sorted(by_shard):
        for chunk in chunks(by_shard[shard], cfg["articles_per_task"]):
            work.append((len(work), str(Path(cfg["shards_dir"]) / shard), chunk, run))
    return Plan(items=[r["pmcid"] for r in rows], shards=work)


def figures_shard(shard: tuple[int, str, list[dict], dict], cfg: dict, out: str) -> ShardResult:
    """A slice of one ingest shard: each article's figures into its cache entry; value: how
    many articles were processed."""
    index, article_shard, metas, run = shard
    settings = Settings.from_params(cfg)
    panel_labels.check_method(settings.panel_labels)  # a worker without the OCR package fails the task, not each article
    cache = ItemCache.of(run)
    by_pmcid = {m["pmcid"]: m for m in metas}
    rejected, seen = [], set()
    for pmcid, members in read_articles(article_shard, by_pmcid):
        seen.add(pmcid)
        try:
            result = process_article(pmcid, members, by_pmcid[pmcid], settings)
            samples, article_rejected, counts = result.samples, result.rejected, result.counts
            shard_samples, panel_rows = result.shard_samples(settings.panels), result.panels
        except Exception as error:  # noqa: BLE001 - one bad article never stops the stage
            samples, counts, shard_samples, panel_rows = [], {}, [], []
            article_rejected = [{"item": pmcid, "source": article_shard, "reason": "processing_error",
                                 "detail": f"{type(error).__name__}: {error}", "stage": STAGE}]
        key = by_pmcid[pmcid]["entry"]
        tmp = cache.temporary(key, entries.SUFFIX)
        entries.write_entry(tmp, samples, article_rejected, counts, FIGURES_SCHEMA, by_pmcid[pmcid].get("shard"),
                            shard_samples, panel_rows)
        cache.commit(tmp, key, entries.SUFFIX)
    for pmcid in sorted(set(by_pmcid) - seen):  # not cached: the shard, not the article, is wrong
        rejected.append({"item": pmcid, "source": article_shard, "reason": "missing_from_shard",
                         "detail": "articles.parquet lists the article but its shard holds no members",
                         "stage": STAGE})
    return ShardResult(value=len(seen), rejected=rejected)


def shard_name(first_pmcid: str) -> str:
    return SHARD_PATTERN.format(first_pmcid)


def _stamp(table: pa.Table, name: str) -> pa.Table:
    for column, value in (("shard", name), ("stage", STAGE)):
        table = table.set_column(table.schema.get_field_index(column), column,
                                 pa.array([value] * table.num_rows, pa.string()))
    return table.sort_by([("key", "ascending")]) if table.num_rows else table


def _build_shard(articles: list[tuple[str, str, str]], name: str, tar_path: Path, part_path: Path,
                 panels_path: Path) -> dict:
    samples, tables, rejected, counts = [], [FIGURES_SCHEMA.empty_table()], [], {}
    panel_tables = [PANELS_SCHEMA.empty_table()]
    for _, entry, article_shard in articles:
        article_samples, figures, article_rejected, article_counts, panels = entries.read_entry(
            entry, FIGURES_SCHEMA, article_shard)
        samples.extend(article_samples)
        tables.append(figures)
        panel_tables.append(panels)
        rejected.extend(article_rejected)
        add_counts(counts, article_counts)
    jpegs = write_shard(tar_path, samples)
    write_table(_stamp(pa.concat_tables(tables), name), part_path)
    write_table(_stamp(pa.concat_tables(panel_tables), name), panels_path)
    return {"rejected": rejected, "counts": counts, "jpegs": jpegs}


def shard_key(shard: tuple[str, list[tuple[str, str, str]], dict]) -> str:
    name, articles, run = shard
    return item_key(STAGE, "shard", run["code"], name, [(p, Path(e).name, s) for p, e, s in articles])


def shard_cached(shard: tuple[str, list[tuple[str, str, str]], dict]) -> bool:
    return ItemCache.of(shard[2]).has(shard_key(shard), ".shard.tar", ".part.parquet", ".panels.parquet",
                                      ".shard.json")


def assemble_shard(shard: tuple[str, list[tuple[str, str, str]], dict], out: str) -> dict:
    """Output shard `name` from its articles' (pmcid, entry path, ingest shard), kept in the
    cache as one entry keyed by those entries and placed as a hard link (an unchanged shard
    is not rewritten: tasks/incremental/store.py); value: the part table, the articles'
    rejected rows and counts, the entry key."""
    name, articles, run = shard
    cache = ItemCache.of(run)
    key = shard_key(shard)
    part, meta = cache.path(key, ".part.parquet"), cache.path(key, ".shard.json")
    panels = cache.path(key, ".panels.parquet")
    built: dict = {}
    if not (part.is_file() and panels.is_file() and meta.is_file()):  # an entry missing a piece is built again
        cache.path(key, ".shard.tar").unlink(missing_ok=True)

    def build(tmp: Path) -> None:
        part_tmp, panels_tmp = cache.temporary(key, ".part.parquet"), cache.temporary(key, ".panels.parquet")
        built.update(_build_shard(articles, name, tmp, part_tmp, panels_tmp))
        cache.commit(part_tmp, key, ".part.parquet")
        cache.commit(panels_tmp, key, ".panels.parquet")
        cache.write_json(key, ".shard.json", built)

    reused = cache.place(key, ".shard.tar", Path(out) / "shards" / name, build)
    # the tar is written last of the three, so its presence means the others are there
    value = built or json.loads(meta.read_text(encoding="utf-8"))
    return {"part": str(part), "panels": str(panels), "rejected": value["rejected"], "counts": value["counts"], "key": key,
            "reused": reused, "shard": name, "jpegs": value["jpegs"]}


def flag_near_duplicates(path: Path, max_distance: int) -> int:
    table = pq.read_table(path)
    if table.num_rows == 0 or max_distance < 0:
        return 0
    items = list(zip(table["key"].to_pylist(), table["pmcid"].to_pylist(), table["phash"].to_pylist()))
    dups = near_duplicates(items, max_distance)
    column = pa.array([dups.get(k) for k, _, _ in items], pa.string())
    index = table.schema.get_field_index("near_duplicate_of")
    write_table(table.set_column(index, "near_duplicate_of", column), path)
    return len(dups)


COMPOUND_ON_SHEET = 4  # compound figures drawn with their panel boxes (figures.panels split | both)


def _compound_from_panels(out_dir: Path, figure: dict, panels: list[dict], jpegs: dict) -> Image.Image:
    """A cut figure put together again from its panel samples at their boxes (the whole
    figure is not in the shard under split): the sheet shows what was cut, gutters white."""
    canvas = Image.new("RGB", (figure["width"], figure["height"]), "white")
    for panel in panels:
        data = read_jpeg(out_dir / "shards" / panel["shard"], *jpegs[panel["shard"]][panel["key"]])
        with Image.open(io.BytesIO(data)) as crop:
            canvas.paste(crop.convert("RGB"), stored_box(panel["box"], figure)[:2])
    return canvas


def contact_sheet(out_dir: Path, n: int, thumb: int, jpegs: dict[str, dict[str, list[int]]]) -> tuple[int, int]:
    """(figures, compound figures with panel boxes) drawn; jpegs: shard -> key -> where its
    JPEG lies in the shard (write_shard)."""
    table = pq.read_table(out_dir / "figures.parquet", columns=["key", "label", "caption", "shard", "source", "width",
                                                               "height", "source_width", "source_height"])
    figures = table.to_pylist()
    # with figures.panels split a figure cut into panels is in its shard as panels only
    picked = pick_evenly([r for r in figures if r["key"] in jpegs[r["shard"]]], n)
    items = [(row, read_jpeg(out_dir / "shards" / row["shard"], *jpegs[row["shard"]][row["key"]])) for row in picked]
    panels_of: dict[str, list[dict]] = {}
    for panel in pq.read_table(out_dir / "panels.parquet", columns=["key", "parent", "label", "box", "shard"]).to_pylist():
        panels_of.setdefault(panel["parent"], []).append(panel)
    compound = []
    for figure in pick_evenly([r for r in figures if r["key"] in panels_of], COMPOUND_ON_SHEET):
        panels = panels_of[figure["key"]]
        boxes = [(p["label"], stored_box(p["box"], figure)) for p in panels]
        compound.append((f"{figure['label'] or figure['key']}: {len(panels)} panels",
                         _compound_from_panels(out_dir, figure, panels, jpegs), boxes))
    draw_contact_sheet(items, out_dir / "contact_sheet.png", thumb, compound=compound)
    return len(picked), len(compound)


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    run = run_context(cfg, out)
    cache = ItemCache(run["cache"])
    present = []  # (pmcid, entry, ingest shard) of the articles that have an entry now
    for row in current_articles(cfg):
        key = article_key(run, row)
        if cache.path(key, entries.SUFFIX).is_file():
            present.append((row["pmcid"], key, str(cache.path(key, entries.SUFFIX)), row["shard"]))
    by_pmcid = {pmcid: (entry, shard) for pmcid, _, entry, shard in present}
    groups = content_groups([p for p, _, _, _ in present], cfg["articles_per_task"])
    shards = [(shard_name(g[0]), [(p, *by_pmcid[p]) for p in g], run) for g in groups]
    assembled = fan_out_unless_cached(fan_out, assemble_shard, shards, shard_cached, str(out),
                                      name=f"{STAGE}-assemble-shard")
    figures_path = out / "figures.parquet"
    items_out = concat_parts([a["part"] for a in assembled], FIGURES_SCHEMA, figures_path, sort_by=("key",))
    concat_parts([a["panels"] for a in assembled], PANELS_SCHEMA, out / "panels.parquet", sort_by=("key",))
    counts: dict = {}
    for a in assembled:
        add_counts(counts, a["counts"])
    sheet_figures, sheet_compound = contact_sheet(out, cfg["contact_sheet"]["n"], cfg["contact_sheet"]["thumb"],
                                                  {a["shard"]: a["jpegs"] for a in assembled})
    counts.update({"near_duplicates": flag_near_duplicates(figures_path, cfg["near_duplicate_distance"]),
                   "contact_sheet_figures": sheet_figures, "contact_sheet_compound_figures": sheet_compound,
                   "shards": len(groups)})
    table = pq.read_table(figures_path, columns=["pmcid", "source"])
    counts.update({f"figures_from_{v['values']}": v["counts"] for v in pc.value_counts(table["source"]).to_pylist()})
    counts["articles"] = len(plan.items)
    processed = sum(r.value for r in results)
    pruned = cache.prune([key for _, key, _, _ in present] + [a["key"] for a in assembled])
    run_record(out, STAGE, len(plan.items), processed, len(present) - processed, cfg["incremental"], pruned,
               shards_reused=sum(a["reused"] for a in assembled))
    return Merged(items_out=items_out, accounted=set(table["pmcid"].to_pylist()),
                  rejected=[row for a in assembled for row in a["rejected"]], counts=counts)


def article_of(rejected_row: dict) -> str:
    """Figures reject "PMC1/F2"-style items; the article is what entered the stage."""
    return rejected_row["item"].split("/", 1)[0]
