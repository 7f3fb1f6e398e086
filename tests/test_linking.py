"""The concept linker: assertion rules on caption sentences, variants, linking on the sample vocabulary,
BC5CDR vs bare QuickUMLS, and the umls_index + link_concepts flows on tiny data."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.common.assertion import AssertionRules
from tasks.common.params import load_params
from tasks.linking.variants import variants
from tasks.sample import vocabulary
from tasks.umls.index import build_index
from tests.conftest import REPO_ROOT

PARAMS = load_params(REPO_ROOT / "params.yaml")
UMLS_INDEX = PARAMS["umls_index"]


def linker_params(**changes) -> dict:
    """The link_concepts section with every semantic group and no stop concepts, plus changes."""
    return {**PARAMS["link_concepts"], "semantic_groups": None, "stop_concepts": [], **changes}


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_umls")
    vocabulary.generate_shard({"sample": {**PARAMS["sample"], "output_dir": str(root)}}, "vocabulary")
    build_index(root / "umls" / "META", root / "index", UMLS_INDEX,
                semantic_groups_file=root / "umls" / "SemGroups.txt")
    return root / "index"


@pytest.fixture(scope="session")
def sample_linker(sample_index):
    from tasks.linking.linker import get_linker

    return get_linker(sample_index, linker_params())


# Caption sentences: (sentence, word, (negated, uncertain)) under the linker's assertion settings.
CAPTION_NEGATION_CASES = [
    ("no effusion or pneumothorax but cardiomegaly", "effusion", (True, False)),
    ("no effusion or pneumothorax but cardiomegaly", "pneumothorax", (True, False)),
    ("no effusion or pneumothorax but cardiomegaly", "cardiomegaly", (False, False)),
    ("pneumothorax cannot be excluded", "pneumothorax", (False, True)),  # uncertainty, not the negation "excluded"
    ("embolism was ruled out", "embolism", (True, False)),
    ("no change in the nodule", "nodule", (False, False)),  # pseudo-trigger
    ("ct without contrast shows a mass", "contrast", (True, False)),
    ("ct without contrast shows a mass", "mass", (False, False)),  # "shows" ends the scope
    ("possible consolidation", "consolidation", (False, True)),
]


def word_span(sentence: str, word: str) -> tuple[int, int]:
    found = re.search(rf"\b{re.escape(word)}\b", sentence)
    return found.start(), found.end()


@pytest.mark.parametrize("sentence, word, expected", CAPTION_NEGATION_CASES)
def test_assertion_rules_on_caption_sentences(sentence, word, expected):
    settings = PARAMS["link_concepts"]
    rules = AssertionRules(settings["context_rules"], settings["context_max_scope"])
    assert rules.flags(rules.scan(sentence), *word_span(sentence, word)) == expected


def test_variants():
    assert "hemolytic-uremic syndrome" in variants("haemolytic-uraemic syndrome")
    assert "hypertension" in variants("Hypertensive")
    assert "parkinson disease" in variants("Parkinson's disease")
    assert "neuropathy" in variants("neuropathies")
    assert variants("virus") == () and variants("process") == ()
    # organs by their noun: MeSH names "Liver Dysfunction", "Kidney Diseases"
    assert "liver dysfunction" in variants("hepatic dysfunction") and variants("nephropathy") == ("kidney disease",)
    assert "chronic kidney disease" in variants("chronic nephropathies")
    assert variants("cardiac") == () and variants("pathway") == ()  # an adjective alone is not its organ


def test_linker_on_sample_vocabulary(sample_linker):
    text = ("Axial computed tomography (CT) of the chest shows ground-glass opacity (GGO) in the right lung. "
            "No pleural effusion. The GGO is patchy; pneumothorax cannot be excluded.")
    mentions = sample_linker.link(text)
    got = {(m.text, m.cui) for m in mentions}
    assert ("computed tomography", "C0040405") in got
    assert ("CT", "C0040405") in got
    assert ("ground-glass opacity", "C3544344") in got and ("lung", "C0024109") in got
    for m in mentions:
        assert text[m.start:m.end] == m.text  # offsets point into the given text
    ggo = [m for m in mentions if m.text == "GGO"]
    assert len(ggo) == 2 and all(m.abbreviation_of == "ground-glass opacity" for m in ggo)
    assert [m.sentence for m in ggo] == [0, 2]
    effusion = [m for m in mentions if m.cui == "C0032227"]
    assert len(effusion) == 1 and effusion[0].text == "pleural effusion" and effusion[0].negated
    ptx = [m for m in mentions if m.cui == "C0032326"]
    assert ptx[0].uncertain and not ptx[0].negated
    assert ggo[0].preferred_name == "Ground glass opacity" and ggo[0].semantic_group == "DISO"
    # link_many gives the same as link, text by text.
    assert sample_linker.link_many([text, "Enlarged heart."]) == [mentions, sample_linker.link("Enlarged heart.")]
    assert [m.cui for m in sample_linker.link("Enlarged heart.")] == ["C0018800"]
    # A short form defined as something the vocabulary lacks is not linked to what it spells elsewhere.
    assert sample_linker.link("Cardiac troponin (CT) rose; CT peaked at day 2.") == []


def test_lookup_cache_changes_no_mention(sample_index):
    """Each distinct n-gram text is looked up once per process; the mentions are what one
    QuickUMLS lookup per n-gram gives, the second time as the first."""
    from tasks.linking import quickumls_adapter as qa
    from tasks.linking.linker import ConceptLinker

    texts = ["No pleural effusion. Ground-glass opacity (GGO) in the left lung.",
             "Ground-glass opacity in the right lung; no effusion.", "Enlarged heart. The GGO is patchy.",
             "Splenomegaly without lymphadenopathy; pleural effusion."] * 2
    cached = ConceptLinker.from_index(sample_index, linker_params())
    direct = ConceptLinker.from_index(sample_index, linker_params())
    direct._candidates = lambda ngrams: qa.get_all_matches(direct.matcher, ngrams)
    expected = direct.link_many(texts)
    assert sum(map(len, expected)) > 10
    assert cached.link_many(texts) == expected
    size = len(cached._lookup_cache)
    assert size > 0 and cached.link_many(texts) == expected and len(cached._lookup_cache) == size


def test_linker_filters(sample_index):
    from tasks.linking.linker import ConceptLinker

    text = "Chest CT shows splenomegaly."
    only_diso = ConceptLinker.from_index(sample_index, linker_params(semantic_groups=["DISO"]))
    assert [m.cui for m in only_diso.link(text)] == ["C0038002"]
    stopped = ConceptLinker.from_index(sample_index, linker_params(stop_concepts=["C0038002"], acronyms=False))
    assert "C0038002" not in {m.cui for m in stopped.link(text)}
    assert "CT" not in {m.text for m in stopped.link(text)}
    cand = {"cui": "C0038002", "similarity": 0.85, "ngram": "compression", "term": "decompression",
            "semtypes": {"T047"}}
    assert not only_diso._keep(cand)  # differs at the start: a different word
    assert only_diso._keep(dict(cand, ngram="decompressions"))
    with pytest.raises(ValueError, match="overlap"):
        ConceptLinker.from_index(sample_index, linker_params(overlap="widest"))
    with pytest.raises(ValueError, match="lack"):  # settings are a whole section: no defaults in code
        ConceptLinker.from_index(sample_index, {"overlap": "length"})


def test_linker_assertion_params(sample_index):
    """link_concepts.negation, context_max_scope and context_rules reach the linker's assertion rules."""
    from tasks.linking.linker import ConceptLinker

    def effusion(text, **changes):
        linker = ConceptLinker.from_index(sample_index, linker_params(**changes))
        [m] = [m for m in linker.link(text) if m.cui == "C0032227"]
        return m.negated, m.uncertain

    text = "No evidence of a large pleural effusion."
    assert effusion(text) == (True, False)
    assert effusion(text, negation=False) == (False, False)
    assert effusion(text, context_max_scope=2) == (False, False)  # "a large" lies between
    assert effusion(text, context_max_scope=3) == (True, False)
    assert effusion(text, context_rules={"negation_pre": ["without"]}) == (False, False)
    assert effusion("Pleural effusion?") == (False, True)


@pytest.fixture(scope="session")
def mesh_index(shared_data, tmp_path_factory):
    """The MeSH 2017 descriptors as an index, built once per session."""
    from tasks.umls.mesh import mesh_to_rrf

    root = tmp_path_factory.mktemp("mesh")
    mesh_to_rrf(shared_data / "umls" / "mesh2017" / "2017MeshTree.txt", root / "META", True)
    build_index(root / "META", root / "index", UMLS_INDEX, semantic_groups_file=root / "META" / "SemGroups.txt")
    return root / "index"


def test_bc5cdr_beats_bare_quickumls(shared_data, mesh_index, tmp_path):
    from tests.helpers import bc5cdr
    from tasks.linking.linker import ConceptLinker, load_concepts

    docs = bc5cdr.read_pubtator(shared_data / "umls" / "bc5cdr" / "CDR_dev.PubTator")
    assert len(docs) == 25 and sum(len(d.gold) for d in docs) > 400
    bare = bc5cdr.evaluate(docs, bc5cdr.bare_quickumls_predictor(mesh_index, load_concepts(mesh_index)))
    linker = ConceptLinker.from_index(mesh_index, linker_params(
        semantic_groups=["DISO", "CHEM"], stop_concepts=["D004194", "D013577"]))
    ours = bc5cdr.evaluate(docs, bc5cdr.linker_predictor(linker))
    print(json.dumps({"bare_quickumls": bare, "linker": ours}, indent=1))
    assert ours["Disease"]["f1"] >= bare["Disease"]["f1"] + 0.10
    assert ours["Disease"]["precision"] >= 0.6 and ours["Chemical"]["f1"] >= 0.5
    assert ours["document"]["f1"] > bare["document"]["f1"]


def _figures_fixture(path):
    rows = [
        {"key": "PMC1/fig1", "pmcid": "PMC1", "figure_id": "fig1", "label": "Figure 1",
         "caption": "Axial CT of the chest shows ground-glass opacity (GGO). No pleural effusion.",
         "subcaptions": [{"panel": "A", "text": "Enlarged heart."}, {"panel": "B", "text": "The GGO is patchy."}]},
        {"key": "PMC1/fig2", "pmcid": "PMC1", "figure_id": "fig2", "label": "Figure 2", "caption": "  ",
         "subcaptions": []},
        {"key": "PMC2/fig1", "pmcid": "PMC2", "figure_id": "fig1", "label": "Figure 1",
         "caption": "Splenomegaly without lymphadenopathy.", "subcaptions": None},
    ]
    schema = pa.schema([("key", pa.string()), ("pmcid", pa.string()), ("figure_id", pa.string()),
                        ("label", pa.string()), ("caption", pa.string()),
                        ("subcaptions", pa.list_(pa.struct([("panel", pa.string()), ("text", pa.string())])))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def test_umls_index_and_link_concepts_flows(repo_root, tmp_path):
    from flows._stage import run_stage
    from flows.link_concepts import link_concepts_flow
    from flows.umls_index import umls_index_flow
    from tests.conftest import stage_params

    vocabulary.generate_shard({"sample": {**PARAMS["sample"], "output_dir": str(tmp_path)}}, "vocabulary")
    _figures_fixture(tmp_path / "figures.parquet")
    params = stage_params(
        repo_root, **{"umls_index.meta_dir": tmp_path / "umls" / "META",
                      "umls_index.semantic_groups": tmp_path / "umls" / "SemGroups.txt",
                      "umls_index.output_dir": tmp_path / "index",
                      "link_concepts.figures": tmp_path / "figures.parquet",
                      "link_concepts.index_dir": tmp_path / "index",
                      "link_concepts.output_dir": tmp_path / "out",
                      "link_concepts.figures_per_task": 2})
    summary = run_stage(umls_index_flow, params)
    assert summary["items_out"] == 31 and summary["rejected"] == 2
    # items are vocabulary rows: every term row, the orphan concept's row and the malformed row
    terms, _ = vocabulary.vocabulary_rows()
    assert summary["unit"] == "vocabulary rows" and summary["out_unit"] == "concepts"
    assert summary["items_in"] == len(terms) + 2 and summary["terms"] == len(terms)
    umls_rejected = pq.read_table(tmp_path / "index" / "rejected.parquet").to_pylist()
    assert [(r["item"], r["reason"]) for r in umls_rejected] == [
        ("MRCONSO.RRF:%d" % (len(terms) + 1), "no_semantic_type"), ("MRCONSO.RRF:%d" % (len(terms) + 2), "malformed_row")]
    summary = run_stage(link_concepts_flow, params)
    assert summary["items_in"] == 3 and summary["items_out"] == 2
    assert summary["rejected_by_reason"] == {"empty_caption": 1}
    out = tmp_path / "out"
    mentions = pq.read_table(out / "mentions.parquet").to_pylist()
    sub_b = [m for m in mentions if m["text_field"] == "subcaption:B"]
    assert [(m["text"], m["start"], m["cui"]) for m in sub_b] == [("GGO", 4, "C3544344")]
    concepts = {r["key"]: r for r in pq.read_table(out / "caption_concepts.parquet").to_pylist()}
    fig1 = concepts["PMC1/fig1"]
    assert {"C3544344", "C0018800", "C0040405", "C0817096"} <= set(fig1["cuis"])
    assert "C0032227" in fig1["negated_cuis"] and "C0032227" not in fig1["cuis"]
    assert concepts["PMC2/fig1"]["cuis"] == ["C0038002"]
    assert concepts["PMC2/fig1"]["negated_cuis"] == ["C0497156"]
    freq = {r["cui"]: r for r in pq.read_table(out / "concept_frequency.parquet").to_pylist()}
    assert freq["C3544344"]["mentions"] == 3 and freq["C3544344"]["figures"] == 1
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert [(r["item"], r["reason"]) for r in rejected] == [("PMC1/fig2", "empty_caption")]


def test_linker_recovers_sample_caption_findings(sample_linker):
    """Captions written by the sample generator: affirmed findings = the image's findings."""
    import numpy as np

    from tasks.sample import captions as sample_captions
    from tasks.sample.catalogue import FINDINGS, IMAGE_KINDS

    finding_cuis = {f.cui for f in FINDINGS.values()}
    rng = np.random.default_rng(7)
    tp = fp = fn = negated_mentions = 0
    for kind in IMAGE_KINDS:
        for _ in range(40):
            present = sample_captions.choose_findings(rng, kind)
            text = sample_captions.panel_sentence(rng, kind, present, n_negated=int(rng.integers(0, 3)))
            mentions = sample_linker.link(text)
            truth = set(sample_captions.finding_cuis(present))
            affirmed = {m.cui for m in mentions if not m.negated and not m.uncertain} & finding_cuis
            negated = {m.cui for m in mentions if m.negated}
            assert not (negated & truth), text  # a present finding is never negated
            negated_mentions += len(negated)
            tp, fp, fn = tp + len(affirmed & truth), fp + len(affirmed - truth), fn + len(truth - affirmed)
    assert fp == 0
    assert tp / (tp + fn) >= 0.85  # misses: "solid nodule" is not a vocabulary term of "Lung nodule"
    assert negated_mentions > 50


def test_umls_index_flow_from_mesh_tree(repo_root, tmp_path):
    from flows._stage import run_stage
    from flows.umls_index import umls_index_flow
    from tasks.linking.linker import ConceptLinker
    from tests.conftest import stage_params

    tree = tmp_path / "tree.txt"
    tree.write_text("Tree Number\tDesc Ui\tTerm\n"
                    "C08.381.520.702\tD011030\tPneumothorax\n"
                    "C05.550.114.154\tD001172\tArthritis, Rheumatoid\n"
                    "not a descriptor line\n", encoding="utf-8")
    params = stage_params(repo_root, **{"umls_index.mesh_tree": tree, "umls_index.output_dir": tmp_path / "idx"})
    summary = run_stage(umls_index_flow, params)
    assert summary["items_out"] == 2 and summary["rejected_by_reason"] == {"malformed_mesh_line": 1}
    assert summary["items_in"] == 4 and summary["terms"] == 3 and summary["mesh_descriptors"] == 2
    rejected = pq.read_table(tmp_path / "idx" / "rejected.parquet").to_pylist()
    assert [(r["item"], r["source"]) for r in rejected] == [("tree.txt:4", str(tree))]
    linker = ConceptLinker.from_index(tmp_path / "idx", linker_params())
    found = [(m.text, m.cui, m.semantic_group, m.negated) for m in linker.link(
        "Rheumatoid arthritis; no pneumothorax.")]
    assert found == [("Rheumatoid arthritis", "D001172", "DISO", False), ("pneumothorax", "D011030", "DISO", True)]


def test_the_matcher_opens_an_index_whose_files_are_hard_links(tmp_path, sample_index):
    """DVC's hardlink cache makes every file of umls_index a hard link; NLTK refuses to open
    such a file, so the adapter reads a private copy of the stopwords."""
    import os
    import shutil

    from tasks.linking import quickumls_adapter as qa
    from tasks.linking.linker import quickumls_dir

    linked = tmp_path / "linked"
    shutil.copytree(sample_index, linked, copy_function=os.link)
    qu = quickumls_dir(linked)
    stopword_file = next((qu / "nltk_data").rglob("english"))
    assert stopword_file.stat().st_nlink > 1
    matcher = qa.open_matcher(qu, qu / "nltk_data")
    assert "the" in qa.stopwords(matcher)
