"""Incremental updates through ingest -> figures -> link_concepts: after a new package, a newer
version of an article and a retraction, only the new and changed articles are processed,
and the outputs are the bytes of a run from scratch over the same inputs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows._stage import run_stage
from flows.figures import figures_flow
from flows.ingest import ingest_flow
from flows.link_concepts import link_concepts_flow
from flows.sample import sample_flow
from flows.umls_index import umls_index_flow
from tasks.common.params import load_params
from tests.conftest import stage_params
from tests.helpers import pmc_corpus
from tests.helpers.pmc_corpus import Package

RUN_RECORD = "timing.json"  # what a run says about itself (seconds, items processed): not an output
STAGES = ("ingest", "figures", "link_concepts")
# PMCIDs whose content-defined layout keeps A alone in its shard through the update
A, B, C, D, E = (f"PMC{8100005 + i}" for i in range(5))
FIRST = [Package(A, 0), Package(B, 1), Package(C, 2), Package(D, 3)]
UPDATE = [Package(E, 4), Package(B, 1, updated="2025-03-01 10:00:00", revised=True, version=2)]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, repo_root) -> Path:
    """The UMLS index of the sample vocabulary."""
    work = tmp_path_factory.mktemp("vocabulary")
    run_stage(sample_flow, stage_params(repo_root, **{"sample.output_dir": work / "sample",
                                                      "sample.parts": "[vocabulary]"}))
    run_stage(umls_index_flow, stage_params(repo_root, **{
        "umls_index.meta_dir": work / "sample" / "umls" / "META",
        "umls_index.semantic_groups": work / "sample" / "umls" / "SemGroups.txt",
        "umls_index.output_dir": work / "umls_index"}))
    return work / "umls_index"


def run_chain(repo_root: Path, corpus: Path, work: Path, index_dir: Path, retracted: str = "[]") -> dict:
    """The three stages, small shards and tasks so that layouts and task splits differ between
    the update and the from-scratch run; returns what each stage's timing.json says it
    processed and reused."""
    overrides = {
        "ingest.source": corpus / "oa_file_list.csv", "ingest.output_dir": work / "ingest",
        "ingest.shard_size": 2, "ingest.packages_per_task": 2, "ingest.retracted": retracted,
        "figures.articles": work / "ingest" / "articles.parquet", "figures.shards_dir": work / "ingest" / "shards",
        "figures.output_dir": work / "figures", "figures.articles_per_task": 2, "figures.contact_sheet.n": 4,
        "link_concepts.figures": work / "figures" / "figures.parquet", "link_concepts.index_dir": index_dir,
        "link_concepts.output_dir": work / "link_concepts", "link_concepts.figures_per_task": 7,
    }
    params = stage_params(repo_root, **overrides)
    for flow in (ingest_flow, figures_flow, link_concepts_flow):
        run_stage(flow, params)
    return {s: json.loads((work / s / RUN_RECORD).read_text())["incremental"] for s in STAGES}


def outputs(work: Path) -> dict[str, bytes]:
    return {p.relative_to(work).as_posix(): p.read_bytes() for s in STAGES for p in sorted((work / s).rglob("*"))
            if p.is_file() and p.name != RUN_RECORD}


def shard_files(work: Path) -> dict[str, tuple[bytes, int, int]]:
    """Output shards: (bytes, inode, mtime) by path."""
    return {p.relative_to(work).as_posix(): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for s in ("ingest", "figures") for p in sorted((work / s / "shards").iterdir())}


def listed(corpus: Path) -> list[str]:
    """The File column of the OA file list: ingest's source names."""
    with (corpus / "oa_file_list.csv").open(newline="") as handle:
        return sorted(row["File"] for row in csv.DictReader(handle))


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def updated(tmp_path_factory, repo_root, index_dir):
    """A first run, then the update (E new, B's version 2, C retracted); a copy of the updated
    outputs; then everything (outputs and caches) deleted and the same run from scratch."""
    root = tmp_path_factory.mktemp("incremental")
    corpus, work = root / "corpus", root / "work"
    # few, small figures: the stages' work, not the corpus, is under test
    params = load_params(repo_root / "params.yaml", ["sample.literature.figures_per_article=[2,3]",
                                                     "sample.literature.image_size=128"])
    rows: list[dict] = []
    truth = pmc_corpus.write(corpus, params, FIRST, rows)
    first = run_chain(repo_root, corpus, work, index_dir)
    first_shards, first_names = shard_files(work), listed(corpus)
    truth.update(pmc_corpus.write(corpus, params, UPDATE, rows))
    update = run_chain(repo_root, corpus, work, index_dir, retracted=f"[{C}]")
    update_names = listed(corpus)
    snapshot, update_shards = outputs(work), shard_files(work)
    shutil.rmtree(work)  # the caches beside the outputs go too
    scratch = run_chain(repo_root, corpus, work, index_dir, retracted=f"[{C}]")
    return {"work": work, "truth": truth, "first": first, "update": update, "scratch": scratch,
            "snapshot": snapshot, "first_shards": first_shards, "update_shards": update_shards,
            "first_names": first_names, "update_names": update_names}


def test_an_update_processes_only_new_and_changed_articles(updated):
    truth, first, update = updated["truth"], updated["first"], updated["update"]
    n_figures = {p.relpath: len(truth[p.relpath].figures) for p in FIRST + UPDATE}
    assert (first["ingest"]["processed"], first["figures"]["processed"]) == (4, 4)
    assert first["link_concepts"]["processed"] == sum(n_figures[p.relpath] for p in FIRST)
    # E and B's new version are new packages; C's retraction and B's old version cost nothing
    assert (update["ingest"]["processed"], update["ingest"]["reused"]) == (2, 4)
    assert (update["figures"]["processed"], update["figures"]["reused"]) == (2, 2)
    changed = sum(n_figures[p.relpath] for p in UPDATE)
    assert update["link_concepts"]["processed"] == changed
    assert update["link_concepts"]["reused"] == update["link_concepts"]["items"] - changed > 0
    scratch = updated["scratch"]
    assert [scratch[s]["reused"] for s in STAGES] == [0, 0, 0]


def test_update_outputs_are_the_bytes_of_a_run_from_scratch(updated):
    snapshot, again = updated["snapshot"], outputs(updated["work"])
    assert any(k.startswith("ingest/shards/") for k in snapshot) and "link_concepts/mentions.parquet" in snapshot
    assert snapshot.keys() == again.keys()
    assert [k for k in snapshot if snapshot[k] != again[k]] == []


def test_an_unchanged_shard_is_the_same_file_after_an_update(updated):
    """Same inode and mtime: DVC's state then knows its hash without reading it, and its cache
    already holds it; a changed shard is a new file."""
    first, update = updated["first_shards"], updated["update_shards"]
    same = [k for k in first if k in update and first[k][0] == update[k][0]]
    changed = [k for k in update if k not in first or first[k][0] != update[k][0]]
    assert same and changed
    assert [k for k in same if first[k][1:] != update[k][1:]] == []
    assert all(update[k][1] not in {v[1] for v in first.values()} for k in changed)
    assert updated["update"]["ingest"]["shards_reused"] + updated["update"]["figures"]["shards_reused"] == len(same)
    assert [updated["scratch"][s]["shards_reused"] for s in ("ingest", "figures")] == [0, 0]


def test_a_newer_version_supersedes_the_old_one_downstream(updated):
    work, truth = updated["work"], updated["truth"]
    old, new = (p.relpath for p in (FIRST[1], UPDATE[1]))
    history = [r for r in table(work / "ingest" / "articles.parquet") if r["pmcid"] == B]
    assert [(r["source"], r["version"], r["status"]) for r in history] == [(old, 1, "superseded"),
                                                                             (new, 2, "current")]
    assert history[0]["superseded_by"] == history[1]["package_sha256"] != history[0]["package_sha256"]
    assert (history[0]["version_date"], history[1]["version_date"]) == ("2024-01-01 10:00:00", "2025-03-01 10:00:00")
    assert history[0]["shard"] is None and history[1]["shard"]
    rejected = {r["item"]: r for r in table(work / "ingest" / "rejected.parquet")}
    assert rejected[old]["reason"] == "superseded" and new in rejected[old]["detail"]
    figures = [r for r in table(work / "figures" / "figures.parquet") if r["pmcid"] == B]
    assert len(figures) == len(truth[new].figures)
    assert {r["package_sha256"] for r in figures} == {history[1]["package_sha256"]}
    # the revised first caption only: none of version 1's captions is left beside it
    assert sum("Revised. " in r["caption"] for r in figures) == 1
    keys = {r["key"] for r in figures}
    concepts = [r for r in table(work / "link_concepts" / "caption_concepts.parquet") if r["pmcid"] == B]
    assert {r["key"] for r in concepts} == keys
    mentions = [r for r in table(work / "link_concepts" / "mentions.parquet") if r["pmcid"] == B]
    assert mentions and {r["key"] for r in mentions} <= keys


def test_a_retracted_article_is_gone_downstream_with_its_row(updated):
    work, retracted = updated["work"], FIRST[2]
    rows = [r for r in table(work / "ingest" / "articles.parquet") if r["pmcid"] == C]
    assert [(r["source"], r["status"], r["shard"]) for r in rows] == [(retracted.relpath, "retracted", None)]
    rejected = [r for r in table(work / "ingest" / "rejected.parquet") if r["item"] == retracted.relpath]
    assert [r["reason"] for r in rejected] == ["retracted"]
    for path in ("figures/figures.parquet", "link_concepts/caption_concepts.parquet", "link_concepts/mentions.parquet"):
        pmcids = {r["pmcid"] for r in table(work / path)}
        assert C not in pmcids and A in pmcids, path
    summary = json.loads((work / "ingest" / "summary.json").read_text())
    assert (summary["items_in"], summary["items_out"]) == (6, 4)
    assert summary["rejected_by_reason"] == {"retracted": 1, "superseded": 1}


def test_an_unchanged_chunk_of_packages_is_read_back_not_recomputed(updated):
    """Chunks are cut where the source names say (tasks/incremental/layout.py), so a chunk
    without a new package has the same names as before and its cached result is used (in the
    flow process, no task); a chunk with a new package is a task again."""
    from tasks.incremental.layout import content_groups
    from tasks.ingest.stage import PACKAGES_PER_CHUNK

    size = min(PACKAGES_PER_CHUNK, 2)  # ingest.packages_per_task is 2 in run_chain
    before = {tuple(g) for g in content_groups(updated["first_names"], size)}
    after = [tuple(g) for g in content_groups(updated["update_names"], size)]
    assert 0 < sum(g in before for g in after) < len(after)
    ingest = updated["update"]["ingest"]
    assert (ingest["chunks"], ingest["chunks_reused"]) == (len(after), sum(g in before for g in after))
    assert updated["scratch"]["ingest"]["chunks_reused"] == 0
