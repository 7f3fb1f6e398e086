"""Panels from the figures stage (figures.panels both) through link_concepts and ConceptCLIP's
training data: each panel carries its own subcaption's concepts and trains with its own text,
measured against the sample generator's truth (the findings it drew in each panel)."""
from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest

from tasks.common.params import load_params
from tasks.figures.panels import panel_text
from tasks.sample import vocabulary
from tasks.sample.catalogue import FINDINGS
from tests.conftest import stage_params
from tests.test_figures_flow import _run, _sample_articles, _write_ingest


@pytest.fixture(scope="module")
def panel_run(repo_root, tmp_path_factory):
    """The sample's first articles through figures (panels both), umls_index and link_concepts."""
    from flows._stage import run_stage
    from flows.link_concepts import link_concepts_flow
    from tasks.umls.index import build_index

    root = tmp_path_factory.mktemp("panel_run")
    articles, truth = _sample_articles(repo_root, range(8))
    _write_ingest(root / "ingest", articles)
    figures_summary = _run(repo_root, root / "ingest", root / "figures", **{"figures.panels": "both"})
    params = load_params(repo_root / "params.yaml")
    vocabulary.generate_shard({"sample": {**params["sample"], "output_dir": str(root)}}, "vocabulary")
    build_index(root / "umls" / "META", root / "index", params["umls_index"],
                semantic_groups_file=root / "umls" / "SemGroups.txt")
    link_params = stage_params(repo_root, **{"link_concepts.figures": root / "figures" / "figures.parquet",
                                             "link_concepts.index_dir": root / "index",
                                             "link_concepts.output_dir": root / "link"})
    summary = run_stage(link_concepts_flow, link_params)
    return {"root": root, "truth": truth, "figures_summary": figures_summary, "link_summary": summary,
            "link_params": link_params}


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_each_panel_carries_its_own_subcaption_concepts(panel_run):
    root, truth = panel_run["root"], panel_run["truth"]
    figures = {r["key"]: r for r in pq.read_table(root / "figures" / "figures.parquet").to_pylist()}
    panels = pq.read_table(root / "figures" / "panels.parquet").to_pylist()
    concepts = {r["key"]: r for r in pq.read_table(root / "link" / "caption_concepts.parquet").to_pylist()}
    assert len(panels) >= 6
    summary = panel_run["link_summary"]
    # accounting: figures and panels entered, each left as a concepts row or a rejected row
    assert summary["items_in"] == len(figures) + len(panels)
    assert summary["items_out"] + summary["rejected"] == summary["items_in"] and summary["panels"] == len(panels)
    own_found = own_total = foreign = foreign_drawn = 0
    for panel in panels:
        row, parent = concepts[panel["key"]], concepts[panel["parent"]]
        assert (row["parent"], row["panel"], row["pmcid"]) == (panel["parent"], panel["label"], panel["pmcid"])
        assert set(row["cuis"]) <= set(parent["cuis"])  # a panel's texts are part of its figure's
        figure = figures[panel["parent"]]
        spec = next(f for f in truth[figure["pmcid"]].figures if f.fig_id == figure["figure_id"])
        drawn = {p["panel"]: {FINDINGS[name].cui for name in p["findings"]} for p in spec.panels}
        mine = drawn[panel["label"]]
        others = set().union(*(v for k, v in drawn.items() if k != panel["label"])) - mine
        own_found += len(mine & set(row["cuis"]))
        own_total += len(mine)
        foreign += len(others & set(row["cuis"]))
        foreign_drawn += len(others)
    assert own_total and own_found / own_total >= 0.9, (own_found, own_total)
    # no other panel's finding: the whole figure's concepts would have them
    assert foreign_drawn >= 5 and foreign == 0
    # concept_frequency counts figures, not their panels again
    frequency = {r["cui"]: r for r in pq.read_table(root / "link" / "concept_frequency.parquet").to_pylist()}
    for cui, row in frequency.items():
        assert row["affirmed_figures"] == sum(cui in concepts[k]["cuis"] for k in figures if k in concepts)


def test_link_concepts_reruns_from_its_cache_to_the_same_bytes(panel_run):
    from flows._stage import run_stage
    from flows.link_concepts import link_concepts_flow

    first = _digests(panel_run["root"] / "link")
    again = run_stage(link_concepts_flow, panel_run["link_params"])
    assert _digests(panel_run["root"] / "link") == first and again["items_in"] == panel_run["link_summary"]["items_in"]


def test_training_uses_panels_where_cut_and_whole_figures_otherwise(panel_run, repo_root):
    from tasks.training import conceptclip_data as data
    from tasks.training import conceptclip_records as records_of
    from tasks.training import conceptclip_stage

    root = panel_run["root"]
    params = stage_params(repo_root, **{
        "train_conceptclip.figures": root / "figures" / "figures.parquet",
        "train_conceptclip.shards_dir": root / "figures" / "shards",
        "train_conceptclip.caption_concepts": root / "link" / "caption_concepts.parquet",
        "train_conceptclip.mentions": root / "link" / "mentions.parquet",
        "train_conceptclip.output_dir": root / "train", "train_conceptclip.checkpoint_dir": root / "train" / "ckpt",
        "train_conceptclip.presets.tiny.max_steps": 2, "train_conceptclip.presets.tiny.batch_size": 8,
        "train_conceptclip.presets.tiny.eval_every": 2, "train_conceptclip.presets.tiny.warmup_steps": 1})
    prep = conceptclip_stage.prepare(params)
    figures = {r["key"]: r for r in pq.read_table(root / "figures" / "figures.parquet").to_pylist()}
    panels = {r["key"]: r for r in pq.read_table(root / "figures" / "panels.parquet").to_pylist()}
    concepts = {r["key"]: r for r in pq.read_table(root / "link" / "caption_concepts.parquet").to_pylist()}
    by_key = {r.key: r for r in prep.records}
    cut = {p["parent"] for p in panels.values()}
    # figures.panels both: the shards hold the cut figures too, yet they train as their panels
    assert not cut & set(by_key) and set(panels) <= set(by_key)
    assert {k for k in by_key if k not in panels} == set(figures) - cut - {r["item"] for r in prep.rejected}
    assert prep.counts["panel_samples"] == len(panels) and prep.counts["figures_as_panels"] == len(cut)
    with_spans = 0
    for key, panel in panels.items():
        record = by_key[key]
        assert record.parent == panel["parent"] and record.pmcid == panel["pmcid"]
        assert record.caption == panel_text(panel["caption_shared"], panel["subcaption"])
        assert record.cuis == concepts[key]["cuis"]
        for start, end, cui in record.spans:  # spans lie in the panel's own text, on its concepts
            assert cui in record.cuis and record.caption[start:end].strip() == record.caption[start:end] != ""
        with_spans += bool(record.spans)
    assert with_spans >= 0.9 * len(panels)
    # a panel sample reaches a training batch with its own tokens and concept spans
    train_index = next(i for i, k in enumerate(prep.train.keys) if k in panels)
    batch = data.collate([prep.train.get(train_index, 0)])
    assert batch["images"].shape[0] == 1 and len(batch["concept_id"]) == len(prep.train.spans[train_index]) > 0
    # figures.panels split: the whole figures are not in the shards; the same records come out
    index = {k: v for k, v in data.index_shards(root / "figures" / "shards").items() if k not in cut}
    split_records, _ = records_of.load_records(root / "figures" / "figures.parquet", root / "link" / "caption_concepts.parquet",
                                         root / "link" / "mentions.parquet", index,
                                         conceptclip_stage.split_spec(prep.cfg, conceptclip_stage.SPLIT_UNIT))
    assert [(r.key, r.caption, r.spans) for r in split_records] == [(r.key, r.caption, r.spans) for r in prep.records]
    # without panel concept rows (link_concepts on figures.panels whole) every figure trains whole
    whole, _ = records_of.load_records(root / "figures" / "figures.parquet", None, root / "link" / "mentions.parquet",
                                 data.index_shards(root / "figures" / "shards"),
                                 conceptclip_stage.split_spec(prep.cfg, conceptclip_stage.SPLIT_UNIT))
    assert not any(r.parent for r in whole) and cut <= {r.key for r in whole}


class _Mention:
    def __init__(self, text: str, word: str, cui: str, negated: bool = False):
        self.start = text.index(word)
        self.end, self.cui, self.negated, self.uncertain = self.start + len(word), cui, negated, False

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "cui": self.cui, "negated": self.negated,
                "uncertain": self.uncertain}


class _WordLinker:
    """Links fixed words to fixed CUIs; 'no <word>' is negated."""
    WORDS = {"chest": "C1", "nodule": "C2", "effusion": "C3", "mass": "C4"}

    def link_many(self, texts):
        return [[_Mention(t, w, c, negated=f"no {w}" in t) for w, c in self.WORDS.items() if w in t] for t in texts]


def test_panel_concepts_take_their_subcaption_and_the_shared_part_only():
    from tasks.linking.captions import link_figures

    caption = "Chest  CT. (A) A nodule. (B) No effusion, a mass."
    figure = {"key": "P_f1", "pmcid": "P", "figure_id": "f1", "caption": caption.lower(),
              "caption_shared": "chest ct.",
              "subcaptions": [{"panel": "A", "text": "a nodule."}, {"panel": "B", "text": "no effusion, a mass."}]}
    too_long = {"key": "P_f2", "pmcid": "P", "figure_id": "f2", "caption": "x" * 200, "subcaptions": []}
    panels = [{"key": "P_f1_A", "parent": "P_f1", "label": "A"}, {"key": "P_f1_B", "parent": "P_f1", "label": "B"},
              {"key": "P_f2_A", "parent": "P_f2", "label": "A"}, {"key": "P_f9_A", "parent": "P_f9", "label": "A"}]
    out = link_figures([figure, too_long], _WordLinker(), "src", max_chars=100, exclude_uncertain=True, panels=panels)
    rows = {r["key"]: r for r in out["concepts"]}
    assert rows["P_f1"]["cuis"] == ["C1", "C2", "C4"] and rows["P_f1"]["parent"] is None
    # the shared part's "chest" (found across the doubled space) and the panel's own words only
    assert (rows["P_f1_A"]["cuis"], rows["P_f1_A"]["negated_cuis"]) == (["C1", "C2"], [])
    assert (rows["P_f1_B"]["cuis"], rows["P_f1_B"]["negated_cuis"]) == (["C1", "C4"], ["C3"])
    assert (rows["P_f1_B"]["parent"], rows["P_f1_B"]["panel"], rows["P_f1_B"]["n_texts"]) == ("P_f1", "B", 2)
    # every panel leaves as a row or a rejected row naming why
    reasons = {r["item"]: r["reason"] for r in out["rejected"]}
    assert reasons == {"P_f2": "caption_too_long", "P_f2_A": "figure_rejected", "P_f9_A": "figure_missing"}
