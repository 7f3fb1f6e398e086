"""split_reports rule engine: sections, sentences, clauses, assertion, anatomy, labels, descriptions."""
from __future__ import annotations

import pytest

from flows.split_reports import stage_config
from tasks.common.assertion import ABSENT, PRESENT, UNCERTAIN
from tasks.common.params import load_params
from tasks.reports.anatomy import AnatomyLexicon
from tasks.reports.clauses import split_clauses
from tasks.reports.labels import derive_labels, label_rules
from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon
from tasks.reports.rejections import rejection_reason
from tasks.reports.sections import SectionSplitter
from tasks.reports.sentences import split_sentences


@pytest.fixture(scope="module")
def config(repo_root):
    return stage_config(load_params(repo_root / "params.yaml"))


@pytest.fixture(scope="module")
def lexicon(config, repo_root):
    return load_lexicon(repo_root / config["lexicon"])


@pytest.fixture(scope="module")
def processor(config, lexicon):
    return ReportProcessor(config, lexicon)


def _one(processor, text, impression=None):
    return processor.process([ReportInput("st-test", text, impression)])[0]


def test_sections_headers_markers_and_organ_headers(lexicon):
    anat = AnatomyLexicon(lexicon["anatomy_terms"], lexicon.get("anatomy_weak_terms"))
    splitter = SectionSplitter(impression_markers=['"', "•"], header_anatomy=anat.header_anatomy)
    segs = splitter.split("CLINICAL HISTORY: Cough.\nFINDINGS:\nLUNGS: Clear.\nHEART: Normal.\nIMPRESSION: Normal study.")
    assert [(s.section, s.header_anatomy, s.text) for s in segs] == [
        ("history", None, "Cough."), ("findings", "lung", "Clear."), ("findings", "heart", "Normal."),
        ("impression", None, "Normal study.")]
    # CT-RATE style: no headers, impression items after quote marks or bullets.
    segs = splitter.split('Trachea is open. Lungs are clear. " Normal chest CT. " No effusion.')
    assert [s.section for s in segs] == ["findings", "impression", "impression"]
    # "As far as can be observed:" is not a header; the text stays whole.
    assert len(splitter.split("As far as can be observed: the heart is normal.")) == 1
    # a preamble header with no findings header after it holds one line or sentence
    segs = splitter.split("Comparison: CT of 2019. Trachea is open. Lungs are clear. Heart is normal.")
    assert [(s.section, s.text) for s in segs] == [
        ("comparison", "CT of 2019."), ("findings", "Trachea is open. Lungs are clear. Heart is normal.")]
    segs = splitter.split("TECHNIQUE: Axial CT.\nLungs clear.\nIMPRESSION: Normal.")
    assert [s.section for s in segs] == ["technique", "findings", "impression"]
    # separate findings and impression columns
    segs = splitter.split("Lungs clear.", "Normal.")
    assert [s.section for s in segs] == ["findings", "impression"]


def test_sentences_keep_decimals_and_merge_stray_marks():
    [sents] = split_sentences(["A 13x9.3 mm node is seen. Effusion measures 3.3 cm (loculated?). Done."])
    assert [s.text for s in sents] == ["A 13x9.3 mm node is seen.", "Effusion measures 3.3 cm (loculated?).", "Done."]


def test_clauses_cut_two_predicates_not_lists():
    assert [c.text for c in split_clauses("The heart is normal in size and there is no pleural effusion.")] == [
        "The heart is normal in size", "there is no pleural effusion."]
    assert len(split_clauses("No pleural effusion, consolidation or nodule was seen.")) == 1
    assert [c.text for c in split_clauses("When examined in the lung window; aeration is normal.")] == [
        "When examined in the lung window", "aeration is normal."]


# Report clauses: (clause, finding mention, assertion) under the report processor's rules.
REPORT_ASSERTION_CASES = [
    ("No pleural effusion.", "pleural effusion", ABSENT),
    ("Pleural effusion-thickening was not detected.", "Pleural effusion", ABSENT),
    ("Small left pleural effusion.", "pleural effusion", PRESENT),
    ("Pneumothorax cannot be excluded.", "Pneumothorax", UNCERTAIN),
    ("Nodules in the right lung (lymph node?).", "Nodules", UNCERTAIN),
    ("Findings suspicious for pneumonia.", "pneumonia", UNCERTAIN),
    ("No mass, but a small nodule is present.", "nodule", PRESENT),
    ("Without calcification.", "calcification", ABSENT),
    ("A lymph node that did not reach pathological size.", "lymph node", PRESENT),
]


@pytest.mark.parametrize("text, term, expected", REPORT_ASSERTION_CASES)
def test_assertion(processor, text, term, expected):
    start = text.index(term)
    assert processor.assertion.classify(text, start, start + len(term)) == expected


def test_normal_statements(processor):
    normal = processor.normal
    assert normal.is_normal_statement("Heart size is within normal limits")
    assert normal.is_normal_statement("Bone structures are natural")
    assert not normal.is_normal_statement("The liver is larger than normal")
    assert not normal.is_normal_statement("Consolidation in the left lower lobe")


def test_anatomy_lexicon_weak_terms_and_windows(lexicon):
    anat = AnatomyLexicon(lexicon["anatomy_terms"], lexicon.get("anatomy_weak_terms"), lexicon["anatomy_exclude"])
    assert anat.anatomies_in("Nodule in the right upper lobe") == ["lung"]
    # "lobe" is weak: with the liver named it does not add the lung
    assert anat.anatomies_in("Lesion in the left lobe of the liver") == ["liver"]
    assert anat.anatomies_in("When examined in the mediastinal window") == []
    assert anat.anatomies_in("Paratracheal lymph nodes") == ["mediastinum"]


def test_labels_need_the_named_anatomy():
    rules = label_rules({"Lung nodule": {"findings": ["lung_nodule"], "anatomies": ["lung"]},
                         "Medical material": {"findings": ["medical_material"]}})
    assert derive_labels(rules, [("lung_nodule", ["liver"])]) == {"Lung nodule": 0, "Medical material": 0}
    assert derive_labels(rules, [("lung_nodule", ["lung"]), ("medical_material", ["aorta"])]) == {
        "Lung nodule": 1, "Medical material": 1}
    with pytest.raises(ValueError):
        label_rules({"X": {"findings": []}})


def test_report_to_descriptions_and_labels(processor):
    result = _one(processor, "FINDINGS: The heart is normal in size and there is no pleural effusion. "
                             "A 6 mm nodule in the right upper lobe. No pericardial effusion. "
                             "A hypodense nodule in the liver. Port catheter in the SVC.\n"
                             "IMPRESSION: Right upper lobe nodule.")
    rows = {r["anatomy"]: r for r in result.anatomy_texts}
    # one sentence, two anatomies: each gets its own clause
    assert rows["heart"]["description"] == "The heart is normal in size. No pericardial effusion."
    assert rows["heart"]["is_normal"] and not rows["heart"]["defaulted"]
    assert not rows["lung"]["is_normal"] and "C0034079" in rows["lung"]["finding_cuis"]
    assert rows["lung"]["description"].startswith("There is no pleural effusion.")  # pleura goes with the lung
    assert not rows["liver"]["is_normal"]
    assert rows["spleen"]["defaulted"] and rows["spleen"]["is_normal"]
    assert rows["spleen"]["description"] == "Spleen shows no significant abnormality."
    labels = result.labels
    assert labels["Lung nodule"] == 1 and labels["Medical material"] == 1
    assert labels["Pleural effusion"] == 0 and labels["Pericardial effusion"] == 0 and labels["Cardiomegaly"] == 0
    # the liver nodule alone would not make a lung nodule
    liver_only = _one(processor, "A hypodense nodule in the liver. Lungs are clear.")
    assert liver_only.labels["Lung nodule"] == 0


def test_generic_finding_is_subsumed_by_a_specific_one(processor):
    rows = {r["anatomy"]: r for r in _one(processor, "Simple cyst in the left kidney. The heart is enlarged.").anatomy_texts}
    assert rows["kidney"]["finding_keys"] == ["renal_cyst"]
    assert rows["heart"]["finding_keys"] == ["cardiomegaly"]
    # alone, the generic word is still a finding
    rows = {r["anatomy"]: r for r in _one(processor, "LIVER: A small cyst.").anatomy_texts}
    assert rows["liver"]["finding_keys"] == ["cyst"]


def test_uncertain_as_present_is_a_param(config, lexicon):
    text = "Possible consolidation in the left lower lobe."
    assert _one(ReportProcessor(config, lexicon), text).labels["Consolidation"] == 1
    strict = ReportProcessor({**config, "uncertain_as_present": False}, lexicon)
    assert _one(strict, text).labels["Consolidation"] == 0


def test_history_is_not_findings(processor):
    result = _one(processor, "CLINICAL HISTORY: Follow-up of pulmonary nodule.\nFINDINGS: Lungs are clear.")
    assert result.labels["Lung nodule"] == 0
    assert [c["section"] for c in result.clauses] == ["history", "findings"]


def test_rejections(processor):
    assert rejection_reason("", None)[0] == "empty_report"
    assert rejection_reason("caf\ufffd", None)[0] == "undecodable_text"
    assert rejection_reason("\x01\x02\x03\x04 ab", None)[0] == "undecodable_text"
    assert rejection_reason("\x00\x01\x02\x03 ab", None)[0] == "binary_content"  # a NUL: binary data
    assert _one(processor, "CLINICAL HISTORY: chest pain.").rejection[0] == "no_findings"
    assert _one(processor, "   ").rejection[0] == "empty_report"
