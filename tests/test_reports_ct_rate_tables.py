"""split_reports on CT-RATE's tables: a folder of reports CSVs keyed by VolumeName, "Not given."
as empty, reconstructions of one scan, reference labels and their agreement with the
derived labels (hand-checked figures), and the same on 800 real CT-RATE reports."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.common.hashing import sha256_file
from tasks.common.params import ParamsError
from tasks.reports.reference_labels import agreement_rows, macro, read_reference
from tests.conftest import stage_params

LABELS = ["Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
          "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
          "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
          "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
          "Interlobular septal thickening"]
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
CT_RATE = {"split_reports.study_key_kind": "ct_rate_volume",
           "split_reports.columns": "{study: VolumeName, text: null, findings: Findings_EN, "
                                    "impression: Impressions_EN}"}
HEART = "Cardiomegaly is present. There is bilateral pleural effusion."


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _label_row(volume: str, *positive: str) -> list:
    return [volume, *[int(label in positive) for label in LABELS], "ignored"]


def _ct_rate_folder(root: Path) -> tuple[Path, Path]:
    reports, labels = root / "radiology_text_reports", root / "multi_abnormality_labels"
    _write_csv(reports / "train_reports.csv", REPORT_COLUMNS, [
        ["train_1_a_1.nii.gz", "Not given.", "Chest CT.", HEART, "Cardiomegaly."],
        ["train_1_a_2.nii.gz", "Not given.", "Chest CT.", HEART, "Cardiomegaly."],    # same scan, same report
        ["train_2_a_1.nii.gz", "Cough.", "Chest CT.", "Emphysema in both lungs.", "Not given."],
        ["train_2_a_2.nii.gz", "Cough.", "Chest CT.", "Atelectasis in the left lower lobe.", "Atelectasis."],
        ["no_such_scheme.nii.gz", "", "", "Emphysema in both lungs.", ""],
    ])
    _write_csv(reports / "validation_reports.csv", REPORT_COLUMNS, [
        ["valid_1_a_1.nii.gz", "", "", "Not given.", "Lung nodule in the right upper lobe."],
        ["valid_2_a_1.nii.gz", "", "", "Not given.", " Not given. "],
        ["", "", "", "Emphysema.", ""],
    ])
    header = ["VolumeName", *LABELS, "Extra column"]
    _write_csv(labels / "train_predicted_labels.csv", header, [
        _label_row("train_1_a_1.nii.gz", "Cardiomegaly", "Pleural effusion"),
        _label_row("train_1_a_2.nii.gz", "Cardiomegaly", "Pleural effusion"),  # agrees: collapses
        _label_row("train_2_a_1.nii.gz", "Emphysema"),
        _label_row("train_2_a_2.nii.gz"),                                      # conflicts: the first is kept
        _label_row("not_a_volume"),
    ])
    _write_csv(labels / "valid_predicted_labels.csv", header, [
        _label_row("valid_1_a_1.nii.gz", "Lung nodule", "Lymphadenopathy"),
        _label_row("valid_3_a_1.nii.gz", "Bronchiectasis"),                    # a label row without a report
    ])
    return reports, labels


def _run(repo_root, out, **overrides):
    from flows._stage import run_stage
    from flows.split_reports import split_reports_flow

    from tasks.schema import with_absolute_locations

    params = stage_params(repo_root, **{"split_reports.output_dir": out, "split_reports.linker": "false",
                                        **overrides})
    # the repository's files (lexicon, ...) wherever the run starts
    params = with_absolute_locations(params, repo_root)
    return params, run_stage(split_reports_flow, params)


@pytest.fixture(scope="module")
def ct_rate_run(repo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("ct_rate")
    reports, labels = _ct_rate_folder(root / "dataset")
    cwd = Path.cwd()
    try:  # sources are recorded relative to the folder the run starts in
        os.chdir(root)
        params, summary = _run(repo_root, root / "out", **CT_RATE, **{"split_reports.reports": reports,
                                                                      "split_reports.reference_labels": labels})
    finally:
        os.chdir(cwd)
    return params, summary, root / "out"


def test_ct_rate_reports_keyed_as_ct_convert_keys_the_volumes(ct_rate_run):
    from tasks.ct.deid import deid_key, pseudonym

    params, summary, out = ct_rate_run
    key = deid_key(params)
    study = {name: pseudonym("study", name, key) for name in ("train_1_a", "train_2_a", "valid_1_a", "valid_2_a")}
    assert summary["items_in"] == 8 and summary["items_out"] == 3
    assert summary["rejected_by_reason"] == {"duplicate_study": 1, "empty_report": 1, "missing_study_id": 1,
                                             "not_ct_rate_name": 1, "same_study_reconstruction": 1}
    labels = {r["study_id"]: r for r in pq.read_table(out / "report_labels.parquet").to_pylist()}
    assert set(labels) == {study["train_1_a"], study["train_2_a"], study["valid_1_a"]}
    # the kept reports: the first of each scan, "Not given." read as empty
    assert labels[study["train_2_a"]]["Emphysema"] == 1 and labels[study["train_2_a"]]["Atelectasis"] == 0
    assert labels[study["valid_1_a"]]["Lung nodule"] == 1
    sentences = pq.read_table(out / "sentences.parquet").to_pylist()
    assert not any("Not given" in s["text"] for s in sentences)
    rejected = {r["reason"]: r for r in pq.read_table(out / "rejected.parquet").to_pylist()}
    assert rejected["same_study_reconstruction"]["item"] == "train_reports.csv row 3"
    assert "train_reports.csv row 2" in rejected["same_study_reconstruction"]["detail"]
    assert rejected["duplicate_study"]["item"] == "train_reports.csv row 5"
    assert rejected["not_ct_rate_name"]["item"] == "train_reports.csv row 6"
    assert rejected["missing_study_id"]["item"] == "validation_reports.csv row 4"
    assert rejected["empty_report"]["item"] == study["valid_2_a"]   # "Not given." twice
    assert rejected["not_ct_rate_name"]["source"] == "dataset/radiology_text_reports/train_reports.csv"
    assert rejected["missing_study_id"]["source"] == "dataset/radiology_text_reports/validation_reports.csv"
    folder = out.parent / "dataset" / "radiology_text_reports"
    assert {r["source_sha256"] for r in labels.values()} == {sha256_file(p) for p in folder.iterdir()}


def test_reference_labels_collapse_reconstructions(ct_rate_run):
    from tasks.ct.deid import deid_key, pseudonym

    params, summary, out = ct_rate_run
    key = deid_key(params)
    reference = {r["study_id"]: r for r in pq.read_table(out / "reference_labels.parquet").to_pylist()}
    assert set(reference) == {pseudonym("study", s, key) for s in ("train_1_a", "train_2_a", "valid_1_a", "valid_3_a")}
    assert pq.read_schema(out / "reference_labels.parquet").names == ["study_id", *LABELS, "source", "stage"]
    assert reference[pseudonym("study", "train_2_a", key)]["Emphysema"] == 1   # the first row of the scan
    assert reference[pseudonym("study", "valid_3_a", key)]["source"] == \
        "dataset/multi_abnormality_labels/valid_predicted_labels.csv"
    assert (summary["reference_label_rows"], summary["reference_studies"], summary["reference_label_conflicts"]) \
        == (7, 4, 1)
    assert summary["reference_label_rows_unusable"] == {"not_ct_rate_name": 1}


def test_agreement_table_of_the_stage(ct_rate_run):
    _, summary, out = ct_rate_run
    rows = {r["label"]: r for r in pq.read_table(out / "label_agreement.parquet").to_pylist()}
    assert list(rows) == sorted(LABELS) and summary["label_agreement_studies"] == 3
    # 3 studies in both: train_1_a (cardiomegaly, effusion), train_2_a (emphysema), valid_1_a (nodule, + LAP missed)
    for label in ("Cardiomegaly", "Pleural effusion", "Emphysema", "Lung nodule"):
        assert (rows[label]["tp"], rows[label]["fp"], rows[label]["fn"], rows[label]["tn"]) == (1, 0, 0, 2), label
        assert rows[label]["f1"] == 1.0 and rows[label]["kappa"] == 1.0
    lap = rows["Lymphadenopathy"]
    assert (lap["reference_positives"], lap["derived_positives"], lap["fn"], lap["tn"]) == (1, 0, 1, 2)
    assert lap["f1"] == 0.0 and lap["kappa"] == 0.0 and lap["recall"] == 0.0 and lap["precision"] is None
    assert rows["Bronchiectasis"]["f1"] is None and rows["Bronchiectasis"]["agreement"] == 1.0  # valid_3_a: no report
    assert summary["label_agreement_macro_f1"] == 0.8 and summary["label_agreement_macro_kappa"] == 0.8


def test_agreement_figures_by_hand():
    # 4 studies in both (s5 only derived, s6 only reference: not counted)
    reference = {"s1": {"A": 1, "B": 1, "C": 0}, "s2": {"A": 1, "B": 1, "C": 0}, "s3": {"A": 0, "B": 1, "C": 0},
                 "s4": {"A": 0, "B": 0, "C": 0}, "s6": {"A": 1, "B": 1, "C": 1}}
    derived = {"s1": {"A": 1, "B": 1, "C": 0}, "s2": {"A": 0, "B": 1, "C": 0}, "s3": {"A": 1, "B": 0, "C": 0},
               "s4": {"A": 0, "B": 0, "C": 0}, "s5": {"A": 1, "B": 1, "C": 1}}
    rows = {r["label"]: r for r in agreement_rows(derived, reference, ["C", "B", "A"], "split_reports")}
    assert list(rows) == ["A", "B", "C"]
    a, b, c = rows["A"], rows["B"], rows["C"]
    # A: TP s1, FN s2, FP s3, TN s4 -> 0.5 everywhere; kappa (po .5 - pe .5) / .5 = 0
    assert (a["n"], a["tp"], a["fp"], a["fn"], a["tn"]) == (4, 1, 1, 1, 1)
    assert (a["agreement"], a["precision"], a["recall"], a["f1"], a["kappa"]) == (0.5, 0.5, 0.5, 0.5, 0.0)
    # B: TP s1 s2, FN s3, TN s4: P 1, R 2/3, F1 0.8; pe = (2*3 + 2*1) / 16 = .5, kappa (.75 - .5) / .5 = .5
    assert (b["reference_positives"], b["derived_positives"], b["tp"], b["fp"], b["fn"], b["tn"]) == (3, 2, 2, 0, 1, 1)
    assert b["agreement"] == 0.75 and b["precision"] == 1.0 and b["recall"] == pytest.approx(2 / 3)
    assert b["f1"] == pytest.approx(0.8) and b["kappa"] == pytest.approx(0.5)
    # C: no positive on either side: agreement 1, the rest undefined
    assert c["agreement"] == 1.0 and (c["precision"], c["recall"], c["f1"], c["kappa"]) == (None, None, None, None)
    scored = list(rows.values())
    assert macro(scored, "f1") == 0.65 and macro(scored, "kappa") == 0.25


def _reference_cfg(location, **extra) -> dict:
    return {"reference_labels": str(location), "columns": {"study": "VolumeName"}, "labels": {k: {} for k in LABELS},
            "study_key_kind": "ct_rate_volume", "deid_key": "k", "run_root": "/", **extra}


def test_missing_label_column_names_file_and_column(tmp_path):
    path = _write_csv(tmp_path / "labels.csv", ["VolumeName", *LABELS[:-1]], [["valid_1_a_1.nii.gz"] + [0] * 17])
    with pytest.raises(ParamsError, match=r"reference_labels.*Interlobular septal thickening.*labels\.csv"):
        read_reference(_reference_cfg(path))
    with pytest.raises(ParamsError, match="not found"):
        read_reference(_reference_cfg(tmp_path / "nothing.csv"))
    assert read_reference(_reference_cfg(path, reference_labels=None)).counts()["reference_label_rows"] == 0


def test_bad_label_values_are_counted_not_kept(tmp_path):
    rows = [_label_row("valid_1_a_1.nii.gz")[:-1], ["valid_2_a_1.nii.gz", "yes", *[0] * 17], ["", *[0] * 18]]
    path = _write_csv(tmp_path / "labels.csv", ["VolumeName", *LABELS], rows)
    reference = read_reference(_reference_cfg(path))
    assert reference.counts() == {"reference_label_rows": 3, "reference_studies": 1, "reference_label_conflicts": 0,
                                  "reference_label_rows_unusable": {"bad_label_value": 1, "missing_study_id": 1}}


def test_reports_and_labels_of_other_studies_are_an_error(repo_root, tmp_path):
    reports, _ = _ct_rate_folder(tmp_path / "dataset")
    labels = _write_csv(tmp_path / "other.csv", ["VolumeName", *LABELS], [_label_row("train_9_a_1.nii.gz")[:-1]])
    with pytest.raises(ParamsError, match="reference_labels.*none of its 1 studies"):
        _run(repo_root, tmp_path / "out", **CT_RATE, **{"split_reports.reports": reports,
                                                        "split_reports.reference_labels": labels})


def test_real_ct_rate_reports_agree_with_their_labels(shared_data, repo_root, tmp_path):
    """800 real CT-RATE reports (AccessionNo keys) against their own manual labels, through the stage."""
    path = shared_data / "reports" / "ct_rate" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    _, summary = _run(repo_root, tmp_path / "out", **{
        "split_reports.reports": path, "split_reports.reference_labels": path,
        "split_reports.study_key_kind": "accession", "split_reports.reports_per_task": 400,
        "split_reports.columns": "{study: AccessionNo, text: report_text, findings: null, impression: null}"})
    print(f"\nCT-RATE 800: macro F1 {summary['label_agreement_macro_f1']}, "
          f"macro kappa {summary['label_agreement_macro_kappa']}")
    assert summary["reference_studies"] == 800 and summary["label_agreement_studies"] >= 798
    assert summary["label_agreement_macro_f1"] > 0.9
