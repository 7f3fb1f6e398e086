"""CT-RATE's 18 labels from the sample's findings, and the sample's reference label table
(data/sample/reports/labels.csv) written beside its reports."""
from __future__ import annotations

import csv

import pytest

from tasks.sample.catalogue import FINDINGS
from tasks.sample.ct_plan import FINDINGS_BY_ANATOMY
from tasks.sample.ct_rate_labels import CT_RATE_LABEL_OF, CT_RATE_LABELS, ct_rate_labels
from tests.conftest import stage_params


def test_every_drawn_finding_maps_to_its_ct_rate_label_or_to_none():
    assert len(CT_RATE_LABELS) == len(set(CT_RATE_LABELS)) == 18
    assert set(CT_RATE_LABEL_OF) <= set(FINDINGS) and set(CT_RATE_LABEL_OF.values()) <= set(CT_RATE_LABELS)
    drawn = {key for keys in FINDINGS_BY_ANATOMY.values() for key in keys}
    assert {k: CT_RATE_LABEL_OF.get(k) for k in sorted(drawn)} == {
        "arterial_calcification": "Arterial wall calcification", "atelectasis": "Atelectasis",
        "cardiomegaly": "Cardiomegaly", "consolidation": "Consolidation", "emphysema": "Emphysema",
        "ground_glass_opacity": "Lung opacity", "liver_mass": None, "nodule": "Lung nodule",
        "pericardial_effusion": "Pericardial effusion", "pleural_effusion": "Pleural effusion",
        "renal_cyst": None, "splenomegaly": None}
    row = ct_rate_labels(["nodule", "renal_cyst", "ground_glass_opacity"])
    assert list(row) == CT_RATE_LABELS
    assert {k for k, v in row.items() if v} == {"Lung nodule", "Lung opacity"}
    assert set(ct_rate_labels([]).values()) == {0}
    with pytest.raises(KeyError, match="not catalogue findings"):
        ct_rate_labels(["nodules"])


def test_sample_writes_reference_labels_beside_its_reports(repo_root, tmp_path):
    from tasks.sample import reports

    params = stage_params(repo_root, **{"sample.output_dir": tmp_path, "sample.ct.n_patients": 5,
                                        "sample.ct.n_studies": 9})
    [shard] = reports.plan(params)
    counts = reports.generate_shard(params, shard)
    assert counts == {"items": 13, "reports": 9, "broken_reports": 4}  # labels.csv adds no count
    with open(tmp_path / "reports" / "labels.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["StudyInstanceUID", *CT_RATE_LABELS]
        rows = list(reader)
    assert [r["StudyInstanceUID"] for r in rows] == sorted(s["StudyInstanceUID"] for s in shard)
    truth = {s["StudyInstanceUID"]: {f["finding"] for f in s["findings"]} for s in shard}
    for row in rows:
        findings = truth[row["StudyInstanceUID"]]
        assert {k: int(v) for k, v in row.items() if k != "StudyInstanceUID"} == ct_rate_labels(findings)
        assert int(row["Cardiomegaly"]) == ("cardiomegaly" in findings)
