"""The umls_index stage as plain functions for the stage runner (flows/_runner.py).

Items are the vocabulary's rows, `<file>:<line>`: every MRCONSO row that the section's
selection keeps (language, sources, term types, not suppressed) and every line of
MRCONSO, MRSTY or the MeSH tree file that cannot be read. A kept row ends as a term of
the index, its concept a row of concepts.parquet, or as a rejected row (empty string,
concept without a semantic type, concept whose types are not kept). Rows the selection
leaves out are counted (`rows_not_selected`), not listed: a selection, not bad input.

plan: convert the MeSH tree first when one is named (into out/_parts/meta), list the rows.
build (one task: QuickUMLS's databases are written by one process): the index and
concepts.parquet, and a part table of the indexed rows.
merge: accounted = the indexed rows whose concept is in the written concepts.parquet.

A full release has millions of rows, so Plan.items holds each as an int code in an array
(8 bytes a row; a str a row would cost the runner's accounting gigabytes): the MRCONSO
line number, or FILE_CODES[file] << LINE_BITS | line for other files. Rejected rows keep
their `<file>:<line>` item, which `item_code` maps to the same code (the flow's item_of).
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.common.locations import recorded
from tasks.common.sharding import Merged, Plan, ShardResult
from tasks.umls import rrf
from tasks.umls.index import build_index, meta_files, row_item, select_terms
from tasks.umls.mesh import mesh_to_rrf

STAGE = "umls_index"
FILE_CODES = {"MRCONSO.RRF": 0, "MRSTY.RRF": 1}  # any other file: the MeSH tree the META was made from
OTHER_FILE = 2
LINE_BITS = 40


def item_code(item: str) -> int:
    """The int code of a `<file>:<line>` item."""
    name, _, line = item.rpartition(":")
    return FILE_CODES.get(name, OTHER_FILE) << LINE_BITS | int(line)


@dataclass(frozen=True)
class Vocabulary:
    """What the build reads: a META folder, its semantic groups, the name rejected rows give as source."""
    meta_dir: str
    semantic_groups: str | None
    source: str | None                      # the MeSH tree when the META folder was converted from it
    mesh_descriptors: int | None = None


@dataclass
class VocabularyPlan(Plan):
    rejected: list[dict] = field(default_factory=list)   # lines of the MeSH tree that cannot be read


def vocabulary(cfg: dict, out: Path) -> tuple[Vocabulary, list[dict]]:
    """The META folder to index (converting a MeSH tree under out/_parts first), and the
    rejections of the tree's unreadable lines."""
    if cfg["mesh_tree"]:
        tree = Path(cfg["mesh_tree"])
        meta = out / "_parts" / "meta"
        converted = mesh_to_rrf(tree, meta, cfg["mesh_permute_inverted"])
        shown = recorded(tree, cfg["run_root"])
        rejected = [{"item": row_item(tree, line), "source": shown, "reason": "malformed_mesh_line",
                     "detail": text, "stage": STAGE} for line, text in converted["bad"]]
        return Vocabulary(str(meta), str(meta / "SemGroups.txt"), shown, converted["descriptors"]), rejected
    groups = cfg["semantic_groups"]
    if groups and not Path(groups).is_file():
        raise FileNotFoundError(f"umls_index.semantic_groups: {groups} not found")
    return Vocabulary(str(cfg["meta_dir"]), groups, recorded(cfg["meta_dir"], cfg["run_root"])), []


def plan(cfg: dict, out: Path) -> VocabularyPlan:
    vocab, rejected = vocabulary(cfg, out)
    conso_path, sty_path = meta_files(vocab.meta_dir)
    bad: list[rrf.BadRow] = []
    not_selected: Counter = Counter()
    items = array("q", (line for line, _ in select_terms(conso_path, cfg, bad, not_selected)))
    for _ in rrf.iter_fields(sty_path, len(rrf.MRSTY_COLUMNS), bad):  # only its unreadable lines are items
        pass
    items.extend(item_code(f"{row.file}:{row.line}") for row in bad)
    items.extend(item_code(row["item"]) for row in rejected)
    counts = {"rows_not_selected": sum(not_selected.values())}
    if vocab.mesh_descriptors is not None:
        counts["mesh_descriptors"] = vocab.mesh_descriptors
    return VocabularyPlan(items=items, shards=[vocab], counts=counts, rejected=rejected)


def build(vocab: Vocabulary, cfg: dict, out: str) -> ShardResult:
    """The index and concepts.parquet under out; value: the part table of indexed rows."""
    part = Path(out) / "_parts" / "indexed.parquet"
    result = build_index(vocab.meta_dir, out, cfg, semantic_groups_file=vocab.semantic_groups,
                         source=vocab.source, stage=STAGE, indexed_path=part)
    return ShardResult(value=str(part), rejected=result["rejected"], counts=result["counts"])


def merge(cfg: dict, out: Path, plan: VocabularyPlan, results: list[ShardResult], fan_out) -> Merged:
    (result,) = results
    concepts = pq.read_table(out / "concepts.parquet", columns=["cui"])["cui"]
    indexed = pq.read_table(result.value, columns=["line", "cui"])
    reached = indexed.filter(pc.is_in(indexed["cui"], value_set=concepts))["line"]
    return Merged(items_out=len(concepts), accounted=reached.to_numpy().astype(np.int64), rejected=plan.rejected)
