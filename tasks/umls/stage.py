"""The umls_index stage as plain functions for the stage runner (flows/_runner.py).

Items are the vocabulary's rows, `<file>:<line>`: every MRCONSO row that the section's
selection keeps (language, sources, term types, not suppressed) and every line of
MRCONSO, MRSTY or the MeSH tree file that cannot be read; for a MeSH XML, every record
that cannot be used, `<file>:<record number>` (its converted records are MRCONSO rows), and
every line of the radiology supplement that cannot be read. A kept row ends as a term of
the index, its concept a row of concepts.parquet, or as a rejected row (empty string,
concept without a semantic type, concept whose types are not kept). Rows the selection
leaves out are counted (`rows_not_selected`), not listed: a selection, not bad input.

plan: convert the MeSH tree or XML first when one is named (into out/_parts/meta, with the
radiology supplement when one is named), list the rows.
build (one task: QuickUMLS's databases are written by one process): the index and
concepts.parquet, and a part table of the indexed rows.
merge: accounted = the indexed rows whose concept is in the written concepts.parquet.

A full release has millions of rows, so Plan.items holds each as an int code in an array
(8 bytes a row; a str a row would cost the runner's accounting gigabytes): the MRCONSO
line number, or FILE_CODES[file] << LINE_BITS | line for MRSTY, and a code from the file's
name for the MeSH and supplement files (several can be read together). Rejected rows keep
their `<file>:<line>` item, which `item_code` maps to the same code (the flow's item_of).
"""
from __future__ import annotations

import zlib
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
from tasks.umls.databases import release_freed_memory
from tasks.umls.index import build_index, meta_files, row_item, select_terms
from tasks.umls.mesh import mesh_to_rrf
from tasks.umls.mesh_xml import mesh_xml_to_rrf

STAGE = "umls_index"
FILE_CODES = {"MRCONSO.RRF": 0, "MRSTY.RRF": 1}
OTHER_FILES = 2            # other files (MeSH tree or XML, supplement): 2 + a hash of the name
OTHER_FILE_SPAN = 1 << 22  # codes stay below 2**23, lines below 2**40: an int64
LINE_BITS = 40


def file_code(name: str) -> int:
    code = FILE_CODES.get(name)
    return code if code is not None else OTHER_FILES + zlib.crc32(name.encode("utf-8")) % OTHER_FILE_SPAN


def item_code(item: str) -> int:
    """The int code of a `<file>:<line>` item."""
    name, _, line = item.rpartition(":")
    return file_code(name) << LINE_BITS | int(line)


@dataclass(frozen=True)
class Vocabulary:
    """What the build reads: a META folder, its semantic groups, the name rejected rows give as source."""
    meta_dir: str
    semantic_groups: str | None
    source: str | None                      # the MeSH tree or XML when the META folder was converted from it
    counts: dict = field(default_factory=dict)   # the conversion's counts (mesh_descriptors, ...)


@dataclass
class VocabularyPlan(Plan):
    rejected: list[dict] = field(default_factory=list)   # lines of the MeSH tree that cannot be read


def _check_sources(cfg: dict) -> None:
    if cfg["mesh_xml"] and cfg["mesh_tree"]:
        raise ValueError("umls_index: name mesh_xml or mesh_tree, not both")
    if cfg["mesh_supplementary_xml"] and not cfg["mesh_xml"]:
        raise ValueError("umls_index.mesh_supplementary_xml is typed by its HeadingMappedTo descriptors: "
                         "name their descriptor XML in mesh_xml too")
    if cfg["radiology_supplement"] and not (cfg["mesh_xml"] or cfg["mesh_tree"]):
        raise ValueError("umls_index.radiology_supplement is added to a MeSH vocabulary (mesh_xml or mesh_tree); "
                         "a UMLS release has these findings already")
    names = [Path(cfg[key]).name for key in ("mesh_tree", "mesh_xml", "mesh_supplementary_xml", "radiology_supplement")
             if cfg[key]]
    if len({file_code(name) for name in names}) != len(names) or set(names) & set(FILE_CODES):
        raise ValueError(f"umls_index: the vocabulary files need distinct names ({', '.join(names)})")


def _supplement_rejections(supplement, cfg: dict) -> list[dict]:
    if supplement is None:
        return []
    shown = recorded(supplement.path, cfg["run_root"])
    return [{"item": row_item(supplement.path, line), "source": shown, "reason": reason, "detail": detail,
             "stage": STAGE} for line, reason, detail in supplement.bad]


def _supplement_counts(supplement) -> dict:
    if supplement is None:
        return {}
    return {"radiology_supplement_entries": len(supplement.entries), "radiology_supplement_mapped": supplement.mapped}


def vocabulary(cfg: dict, out: Path) -> tuple[Vocabulary, list[dict]]:
    """The META folder to index (converting a MeSH tree or XML under out/_parts first), and the
    rejections of the tree's unreadable lines or the XML's unusable records."""
    _check_sources(cfg)
    meta = out / "_parts" / "meta"
    if cfg["mesh_xml"]:
        desc = Path(cfg["mesh_xml"])
        supp = Path(cfg["mesh_supplementary_xml"]) if cfg["mesh_supplementary_xml"] else None
        converted = mesh_xml_to_rrf(desc, meta, permute_inverted=cfg["mesh_permute_inverted"],
                                    permuted_terms=cfg["mesh_permuted_terms"], supplementary=supp,
                                    supplement=cfg["radiology_supplement"])
        rejected = [{"item": row_item(r.path, r.record), "source": recorded(r.path, cfg["run_root"]),
                     "reason": r.reason, "detail": r.detail, "stage": STAGE} for r in converted["rejected"]]
        rejected += _supplement_rejections(converted["supplement"], cfg)
        counts = {"mesh_descriptors": converted.get("descriptor_records_converted", 0),
                  "mesh_records_rejected": len(converted["rejected"]), **_supplement_counts(converted["supplement"])}
        if supp is not None:
            counts["mesh_supplementary_records"] = converted.get("supplementary_records_converted", 0)
        return Vocabulary(str(meta), str(meta / "SemGroups.txt"), recorded(desc, cfg["run_root"]), counts), rejected
    if cfg["mesh_tree"]:
        tree = Path(cfg["mesh_tree"])
        converted = mesh_to_rrf(tree, meta, cfg["mesh_permute_inverted"], supplement=cfg["radiology_supplement"])
        shown = recorded(tree, cfg["run_root"])
        rejected = [{"item": row_item(tree, line), "source": shown, "reason": "malformed_mesh_line",
                     "detail": text, "stage": STAGE} for line, text in converted["bad"]]
        rejected += _supplement_rejections(converted["supplement"], cfg)
        counts = {"mesh_descriptors": converted["descriptors"], **_supplement_counts(converted["supplement"])}
        return Vocabulary(str(meta), str(meta / "SemGroups.txt"), shown, counts), rejected
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
    counts = {"rows_not_selected": sum(not_selected.values()), **vocab.counts}
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
    accounted = indexed.filter(pc.is_in(indexed["cui"], value_set=concepts))["line"].to_numpy().astype(np.int64)
    n_concepts = len(concepts)
    del concepts, indexed
    release_freed_memory()  # Arrow's pool keeps ~400 MB (a full release) otherwise, under the runner's accounting
    return Merged(items_out=n_concepts, accounted=accounted, rejected=plan.rejected)
