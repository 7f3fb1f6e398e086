"""Report wording the rules must read, one class per test, on text made here: terms broken
by whitespace, HTML entities, comparatives of size, negations after a qualified finding,
resolved or historic findings, a neighbouring finding of the same structure; reports
too long or holding binary data; a long report read as its parts are."""
from __future__ import annotations

import pytest

from flows.split_reports import stage_config
from tasks.common.params import load_params
from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon
from tasks.reports.rejections import rejection_reason


@pytest.fixture(scope="module")
def config(repo_root):
    return stage_config(load_params(repo_root / "params.yaml"))


@pytest.fixture(scope="module")
def processor(config, repo_root):
    return ReportProcessor(config, load_lexicon(repo_root / config["lexicon"]))


def _findings(processor, text):
    """(present, absent) finding keys of a one-report text, over all its clauses."""
    [result] = processor.process([ReportInput("st-test", text)])
    assert result.rejection is None, result.rejection
    present = {k for c in result.clauses for k in c["present"] + c["uncertain"]}
    absent = {k for c in result.clauses for k in c["absent"]}
    return present, absent, result.labels


@pytest.mark.parametrize("gap", ["\n", "\r\n", "  \n  ", "\t", "\n\n"])
def test_a_term_broken_by_whitespace_is_that_term(processor, gap):
    present, _, labels = _findings(processor, f"Small pericardial{gap}effusion. Lungs are clear.")
    assert present == {"pericardial_effusion"}  # not a bare (pleural) "effusion"
    assert labels["Pericardial effusion"] == 1 and labels["Pleural effusion"] == 0
    # negation triggers too: "no evidence of" across a line break
    _, absent, labels = _findings(processor, f"There is no{gap}evidence of{gap}consolidation.")
    assert absent == {"consolidation"} and labels["Consolidation"] == 0


@pytest.mark.parametrize("entity", ["&amp;", "&#38;", "&#x26;"])
def test_html_entities_do_not_cut_a_negation(processor, entity):
    present, absent, labels = _findings(processor, f"No pleural effusion {entity} pericardial effusion.")
    assert not present and absent == {"pleural_effusion", "pericardial_effusion"}
    assert labels["Pericardial effusion"] == 0
    [result] = processor.process([ReportInput("st-test", "Nodule &lt;5 mm in the right upper lobe.")])
    assert result.clauses[0]["text"] == "Nodule <5 mm in the right upper lobe."


@pytest.mark.parametrize("text, finding, label", [
    ("The heart is larger than normal.", "cardiomegaly", "Cardiomegaly"),
    ("Cardiac silhouette is bigger than usual.", "cardiomegaly", "Cardiomegaly"),
    ("Heart size exceeds the normal limits.", "cardiomegaly", "Cardiomegaly"),
    ("The spleen is greater than normal in size.", "splenomegaly", None),
    ("The liver is larger than expected.", "organomegaly", None),
])
def test_comparatives_of_size_are_enlargement(processor, text, finding, label):
    present, _, labels = _findings(processor, text)
    assert finding in present
    if label:
        assert labels[label] == 1
    # and denied, they are absent
    denied = text.replace(" is ", " is not ").replace(" exceeds ", " does not exceed ")
    present, absent, _ = _findings(processor, denied)
    assert finding not in present and finding in absent


@pytest.mark.parametrize("text, finding, label", [
    ("Mediastinal lymph nodes were not observed in pathological size.", "lymphadenopathy", "Lymphadenopathy"),
    ("Lymph node not detected in pathological dimensions in the mediastinum.", "lymphadenopathy", "Lymphadenopathy"),
    ("Heart size not increased.", "cardiomegaly", "Cardiomegaly"),
    ("Effusion was not seen in the pericardium.", "pericardial_effusion", "Pericardial effusion"),
])
def test_negation_after_a_qualified_finding_is_absent(processor, text, finding, label):
    present, absent, labels = _findings(processor, text)
    assert finding in absent and finding not in present and labels[label] == 0


def test_a_qualifier_without_negation_stays_present(processor):
    # CT-RATE's readers label any reported lymph node, pathological size or not
    present, _, labels = _findings(processor, "A lymph node that did not reach pathological size.")
    assert "lymphadenopathy" in present and labels["Lymphadenopathy"] == 1
    present, _, _ = _findings(processor, "Lymph nodes possibly in pathological size.")
    assert "lymphadenopathy" in present  # uncertain counts as present (uncertain_as_present)


@pytest.mark.parametrize("text, finding", [
    ("Resolved left pleural effusion.", "pleural_effusion"),
    ("The pneumothorax has completely resolved.", "pneumothorax"),
    ("Consolidation seen in the previous examination has disappeared.", "consolidation"),
    ("History of right lower lobe pneumonia.", "infection"),
    ("Healed fracture of the right sixth rib.", "degenerative_change"),
])
def test_resolved_or_historic_findings_are_not_present(processor, text, finding):
    present, absent, _ = _findings(processor, text)
    assert finding in absent and finding not in present


@pytest.mark.parametrize("text, finding", [
    ("Partially resolved left pleural effusion.", "pleural_effusion"),
    ("The effusion has not resolved.", "pleural_effusion"),
    # the historic word's scope is short: the atelectasis is seen now
    ("In a patient with a history of lung surgery, atelectasis is seen in the left lower lobe.", "atelectasis"),
])
def test_partly_resolved_or_current_findings_stay_present(processor, text, finding):
    present, _, _ = _findings(processor, text)
    assert finding in present


@pytest.mark.parametrize("text", ["Pericardial thickening is present.", "The pericardium is thickened.",
                                  "Thickening of the pericardium."])
def test_a_neighbouring_finding_is_not_the_other_one(processor, text):
    present, _, labels = _findings(processor, text)
    assert "pericardial_thickening" in present and "pericardial_effusion" not in present
    assert labels["Pericardial effusion"] == 0
    # a pleural effusion beside the pericardium is the pleura's
    present, _, labels = _findings(processor, "Left pleural effusion adjacent to the pericardium.")
    assert labels["Pleural effusion"] == 1 and labels["Pericardial effusion"] == 0
    # while one that names both, or the effusion of both, is still the pericardium's
    for both in ("Pericardial thickening-mild effusion.", "Pericardial-pleural effusion."):
        assert _findings(processor, both)[2]["Pericardial effusion"] == 1


def test_too_long_and_binary_reports_are_rejected(config, repo_root):
    assert rejection_reason("x" * 50, None, max_chars=40)[0] == "report_too_long"
    assert rejection_reason("Lungs clear.\x00\x01\x02", None)[0] == "binary_content"
    assert rejection_reason("\x00", None)[0] == "binary_content"  # not empty_report
    small = ReportProcessor({**config, "max_report_chars": 100}, load_lexicon(repo_root / config["lexicon"]))
    [long_one, short] = small.process([ReportInput("st-a", "Lungs are clear. " * 10), ReportInput("st-b", "Lungs clear.")])
    assert long_one.rejection[0] == "report_too_long" and "170 characters" in long_one.rejection[1]
    assert short.rejection is None


def test_a_long_report_is_read_as_its_parts(processor):
    """Clause lookups by offset (bisection) over one long segment give what each part gives alone."""
    parts = ["No pleural effusion. A 3 mm nodule in the right upper lobe. ",
             "The heart is larger than normal and there is no pericardial effusion. ",
             "Lymph nodes were not observed in pathological size. Atelectasis in the left lower lobe. "]
    alone = [[(c["text"], c["present"], c["absent"], c["anatomies"]) for c in processor.process(
        [ReportInput("st-part", part)])[0].clauses] for part in parts]
    [whole] = processor.process([ReportInput("st-long", "".join(parts * 60))])
    got = [(c["text"], c["present"], c["absent"], c["anatomies"]) for c in whole.clauses]
    assert got == [clause for _ in range(60) for part in alone for clause in part]
