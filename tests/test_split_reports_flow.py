"""split_reports stage on the sample: reports part, flow outputs, rejections, pseudonyms,
agreement with the phantoms' ground truth, determinism, and the concept linker joining."""
from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest

from tests.conftest import stage_params

GROUND_TRUTH_ANATOMIES = ["lung", "heart", "aorta", "liver", "kidney", "spleen"]


@pytest.fixture(scope="module")
def sample_reports(repo_root, tmp_path_factory):
    from tasks.sample import reports

    root = tmp_path_factory.mktemp("sample")
    params = stage_params(repo_root, **{"sample.output_dir": root})
    [shard] = reports.plan(params)
    counts = reports.generate_shard(params, shard)
    return params, root / "reports" / "reports.csv", counts


def _run(repo_root, reports_csv, out_dir, **extra):
    from flows._stage import run_stage
    from flows.split_reports import split_reports_flow

    # the sample writes its reference labels beside its reports
    params = stage_params(repo_root, **{"split_reports.reports": reports_csv, "split_reports.output_dir": out_dir,
                                        "split_reports.reference_labels": reports_csv.parent / "labels.csv",
                                        "split_reports.reports_per_task": 20, **extra})
    return params, run_stage(split_reports_flow, params)


def _truth(params):
    from tasks.ct.deid import deid_key, pseudonym
    from tasks.sample.ct_phantoms import study_specs

    key = deid_key(params)
    truth = {}
    for spec in study_specs(params):
        if spec.get("expected") != "ok":
            continue
        per_anatomy: dict[str, set] = {}
        for f in spec["findings"]:
            per_anatomy.setdefault(f["segment_anatomy"], set()).add(f["cui"])
        truth[pseudonym("study", spec["StudyInstanceUID"], key)] = (spec, per_anatomy)
    return truth


def _check_against_truth(anatomy_rows, truth):
    by_study = {}
    for row in anatomy_rows:
        by_study.setdefault(row["study_id"], {})[row["anatomy"]] = row
    assert set(by_study) == set(truth)
    for study_id, (spec, per_anatomy) in truth.items():
        for anatomy in GROUND_TRUTH_ANATOMIES:
            row = by_study[study_id][anatomy]
            want = per_anatomy.get(anatomy, set())
            assert set(row["finding_cuis"]) == want, (spec["case"], anatomy, row["description"])
            assert row["is_normal"] == (not want), (spec["case"], anatomy, row["description"])


def test_sample_flow(repo_root, sample_reports, tmp_path):
    params, reports_csv, counts = sample_reports
    n = int(params["sample"]["ct"]["n_studies"])
    assert counts["reports"] == n and counts["broken_reports"] == 4
    out = tmp_path / "out"
    params, summary = _run(repo_root, reports_csv, out, **{"split_reports.linker": "false"})
    assert summary["items_in"] == n + 4 and summary["items_out"] == n and summary["linker"] == "none"
    assert summary["rejected_by_reason"] == {"duplicate_study": 1, "empty_report": 1, "no_findings": 1,
                                             "undecodable_text": 1}
    anatomy = pq.read_table(out / "anatomy_texts.parquet").to_pylist()
    _check_against_truth(anatomy, _truth(params))
    # every study has one row per segment anatomy; unmentioned ones are defaulted templates
    anatomies = list(params["segment"]["anatomies"])
    assert len(anatomy) == n * len(anatomies)
    prostate = [r for r in anatomy if r["anatomy"] == "prostate"]
    assert all(r["defaulted"] and r["description"] == "Prostate shows no significant abnormality." for r in prostate)
    # a report that repeats a study enters as its table row, so every report is one item
    duplicates = [r for r in pq.read_table(out / "rejected.parquet").to_pylist() if r["reason"] == "duplicate_study"]
    assert len(duplicates) == 1 and duplicates[0]["item"].startswith("row ")
    labels = pq.read_table(out / "report_labels.parquet").to_pylist()
    assert len(labels) == n and all(r["study_id"].startswith("st-") for r in labels)
    # the reference labels (from the phantoms' findings) keyed as the reports: every study in both
    reference = pq.read_table(out / "reference_labels.parquet").to_pylist()
    assert {r["study_id"] for r in labels} <= {r["study_id"] for r in reference}
    assert summary["label_agreement_studies"] == n and summary["reference_label_conflicts"] == 0
    # the reports say what the phantoms hold: derived and reference labels agree on every label scored
    agreement = pq.read_table(out / "label_agreement.parquet").to_pylist()
    assert [r["label"] for r in agreement] == sorted(params["split_reports"]["labels"])
    assert summary["label_agreement_macro_f1"] == 1.0 and summary["label_agreement_macro_kappa"] == 1.0
    sentences = pq.read_table(out / "sentences.parquet")
    assert {"findings", "impression", "technique"} <= set(sentences.column("section").to_pylist())
    # no raw identifier in any output
    raw = {line.split(",")[1] for line in reports_csv.read_bytes().decode("utf-8", "replace").splitlines()[1:]
           if line.count(",") >= 2 and line.split(",")[1].startswith(("1.", "2."))}
    assert raw
    for name in ("sentences", "anatomy_texts", "report_labels", "rejected"):
        blob = (out / f"{name}.parquet").read_bytes()
        table_text = str(pq.read_table(out / f"{name}.parquet").to_pylist())
        assert not any(uid in table_text or uid.encode() in blob for uid in raw), name
    # deterministic: a second run writes the same bytes
    out2 = tmp_path / "out2"
    _run(repo_root, reports_csv, out2, **{"split_reports.linker": "false"})
    for name in ("sentences", "anatomy_texts", "report_labels", "reference_labels", "label_agreement", "rejected",
                 "summary"):
        suffix = ".json" if name == "summary" else ".parquet"
        assert hashlib.sha256((out / f"{name}{suffix}").read_bytes()).digest() == \
            hashlib.sha256((out2 / f"{name}{suffix}").read_bytes()).digest(), name


def test_missing_columns_are_a_params_error(repo_root, sample_reports, tmp_path):
    from tasks.common.params import ParamsError

    _, reports_csv, _ = sample_reports
    with pytest.raises(ParamsError, match=r"NoSuchColumn.*split_reports\.columns"):
        _run(repo_root, reports_csv, tmp_path / "x", **{"split_reports.columns.study": "NoSuchColumn"})


def test_with_concept_linker(repo_root, sample_reports, tmp_path_factory):
    """The linker on the sample vocabulary: its anatomy and finding CUIs join the lexicon's."""
    from flows.split_reports import stage_config
    from tasks.reports import stage as rs
    from tasks.sample import vocabulary
    from tasks.umls.index import build_index

    root = tmp_path_factory.mktemp("umls")
    params, reports_csv, _ = sample_reports
    vocabulary.generate_shard({"sample": {**params["sample"], "output_dir": str(root)}}, "vocabulary")
    build_index(root / "umls" / "META", root / "index", params["umls_index"],
                semantic_groups_file=root / "umls" / "SemGroups.txt")
    params = stage_params(repo_root, **{"split_reports.reports": reports_csv,
                                        "split_reports.linker_index": root / "index",
                                        "split_reports.linker": "true", "split_reports.linker_scope": "all"})
    cfg = {**stage_config(params), "run_root": str(repo_root)}
    assert cfg["linker_settings"]["stop_concepts"] == params["link_concepts"]["stop_concepts"]
    assert cfg["anatomies"] == list(params["segment"]["anatomies"])
    reports, _, _ = rs.build_inputs(rs.read_reports(cfg), cfg)
    out = rs.process_shard(reports, cfg)
    assert out["linker"] == "quickumls"
    linked = [c for s in out["sentences"] for c in s["linked_cuis"]]
    assert "C0024109" in linked and "C0018787" in linked  # lung, heart
    _check_against_truth(out["anatomy"], _truth(params))
    # lexicon alone and with the linker agree on the labels here
    cfg_plain = {**cfg, "linker": False}
    plain = rs.process_shard(reports, cfg_plain)
    assert plain["labels"] == out["labels"] and plain["linker"] == "none"
