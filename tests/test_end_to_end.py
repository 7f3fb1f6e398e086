"""End to end: clone the repository into a temporary folder and run `dvc repro` there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("MEDCONCEPT_DASK_ADDRESS", None)
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, repo_root) -> Path:
    """A fresh clone of the committed repository after `dvc repro`."""
    clone = tmp_path_factory.mktemp("e2e") / "medconcept"
    run(["git", "clone", "--quiet", str(repo_root), str(clone)], cwd=clone.parent)
    run([sys.executable, "-m", "dvc", "repro"], cwd=clone)
    return clone


def test_dvc_repro_runs_every_stage_and_ends_up_to_date(reproduced):
    stages = yaml.safe_load((reproduced / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages)
    status = run([sys.executable, "-m", "dvc", "status"], cwd=reproduced).stdout
    assert "up to date" in status, status
    for name, stage in stages.items():
        for metric in stage.get("metrics", []):
            path = next(iter(metric)) if isinstance(metric, dict) else metric
            assert (reproduced / path).is_file(), f"{name} did not write {path}"


def test_ingest_counts_in_the_pipeline(reproduced):
    summary = json.loads((reproduced / "data" / "ingest" / "summary.json").read_text())
    assert (summary["items_in"], summary["items_out"], summary["rejected"]) == (49, 40, 9)


def test_second_repro_runs_nothing(reproduced):
    out = run([sys.executable, "-m", "dvc", "repro"], cwd=reproduced).stdout
    assert "Running stage" not in out, out


def lineage(clone: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.lineage", *args], cwd=clone, env=_env(),
                          capture_output=True, text=True, timeout=300)


def test_lineage_of_an_ingest_table(reproduced):
    result = lineage(reproduced, "data/ingest/articles.parquet", "--json", "--verify")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["stage"] for s in report["stages"]] == ["sample", "ingest"]
    ingest = report["stages"][-1]
    assert ingest["params"]["params.yaml"]["ingest"]["source"] == "data/sample/pmc"
    assert any(o["path"] == "data/ingest/shards" and o["md5"].endswith(".dir") for o in ingest["outs"])
    assert ingest["counts"]["data/ingest/summary.json"]["rejected_by_reason"]["duplicate_pmcid"] == 1
    assert report["verify"]["ok"] is True


def test_lineage_at_a_git_revision(reproduced):
    env_git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    run([*env_git, "add", "dvc.lock"], cwd=reproduced)
    run([*env_git, "commit", "-q", "-m", "lock"], cwd=reproduced)
    head = json.loads(lineage(reproduced, "data/ingest/articles.parquet", "--json", "--rev", "HEAD").stdout)
    work = json.loads(lineage(reproduced, "data/ingest/articles.parquet", "--json").stdout)
    assert head["code"]["rev"] == "HEAD" and head["code"]["commit"] == work["code"]["commit"]
    assert [s["outs"] for s in head["stages"]] == [s["outs"] for s in work["stages"]]


def test_pipeline_flow_skips_up_to_date_and_keeps_the_lock(reproduced):
    lock_before = (reproduced / "dvc.lock").read_text()
    out = run([sys.executable, "-m", "flows.pipeline"], cwd=reproduced).stdout
    stages = yaml.safe_load((reproduced / "dvc.yaml").read_text())["stages"]
    assert out.count("up to date (skipped)") == len(stages), out
    assert (reproduced / "dvc.lock").read_text() == lock_before


def test_pipeline_flow_reruns_only_what_changed(reproduced):
    params = reproduced / "params.yaml"
    params.write_text(params.read_text().replace("packages_per_task: 250", "packages_per_task: 7"))
    out = run([sys.executable, "-m", "flows.pipeline"], cwd=reproduced).stdout
    assert "[pipeline] ingest: reproduced" in out
    # Ingest's outputs are byte-identical, so DVC finds nothing downstream to redo.
    assert out.count(": reproduced") == 1, out
    lock = (reproduced / "dvc.lock").read_text()
    assert "packages_per_task: 7" in lock
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], cwd=reproduced).stdout
    again = run([sys.executable, "-m", "dvc", "repro"], cwd=reproduced).stdout
    assert "Running stage" not in again
    assert (reproduced / "dvc.lock").read_text() == lock


def test_verify_detects_a_tampered_output(reproduced):
    target = reproduced / "data" / "ingest" / "rejected.parquet"
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"tampered")
        result = lineage(reproduced, "data/ingest/articles.parquet", "--verify")
        assert result.returncode == 1
        assert "MISMATCH [ingest] out data/ingest/rejected.parquet" in result.stdout
    finally:
        target.write_bytes(original)


def test_both_models_learn_the_sample(reproduced):
    evaluate = reproduced / "data" / "evaluate"
    metrics = json.loads((evaluate / "metrics.json").read_text())
    # the sample is built to be learnable: on the test split, scored once (train smaller by the
    # validation side), ConceptCLIP reached 0.90 and fVLM 0.84 (2026-12-04)
    for model, bar in (("conceptclip", 0.85), ("fvlm", 0.8)):
        figures = metrics[model]
        assert figures["macro_auc"] >= bar, (model, figures)
        assert figures["macro_auc_ci_low"] <= figures["macro_auc"] <= figures["macro_auc_ci_high"]
    assert {"i2t_R@1", "t2i_R@10", "n_figures", "n_articles"} <= set(metrics["conceptclip"])
    assert {"n_studies", "n_patients"} <= set(metrics["fvlm"])
    assert all(isinstance(v, (int, float)) for m in metrics.values() for v in m.values())  # DVC tables drop the rest
    detail = json.loads((evaluate / "metrics_detail.json").read_text())
    assert detail["conceptclip"]["zero_shot_auc"] and detail["fvlm"]["zero_shot_auc"]
    assert detail["conceptclip"]["zero_shot_macro_auc"]["value"] == metrics["conceptclip"]["macro_auc"]
    lineage_record = json.loads((evaluate / "lineage.json").read_text())
    commit = lineage_record["conceptclip"]["code"]["commit"]
    assert commit and lineage_record["conceptclip"]["stages"][-1]["stage"] == "train_conceptclip"
    for model in ("conceptclip", "fvlm"):
        text = (evaluate / model / "model_cards" / f"{model}.md").read_text()
        assert "## Test metrics" in text and "## Splits and what was tuned on what" in text and "## Lineage" in text and "lineage.json" in text
        assert commit not in text  # a cached card never carries the code version
    # the card names the prompts the metrics were scored with
    assert "shows no significant abnormality" in (evaluate / "fvlm" / "model_cards" / "fvlm.md").read_text()
    assert list((evaluate / "conceptclip" / "galleries").glob("*.png"))
    assert list((evaluate / "fvlm" / "galleries").glob("*.png"))
    roc = (evaluate / "conceptclip" / "roc" / "roc_conceptclip.csv").read_text().splitlines()
    assert roc[0] == "fpr,tpr" and len(roc) > 3


def test_dvc_metrics_and_plots_render(reproduced):
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "data/evaluate/metrics.json"], cwd=reproduced).stdout
    header = shown.splitlines()[0].split()
    assert "conceptclip.macro_auc" in header and "fvlm.macro_auc" in header
    assert len(header) <= 25, shown  # a table a researcher reads, not every stage's counts
    plots = run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=reproduced).stdout
    assert "roc_conceptclip.csv" in plots


def test_lineage_of_the_conceptclip_checkpoint(reproduced):
    checkpoint = "data/train_conceptclip/model.safetensors"
    result = lineage(reproduced, checkpoint, "--json", "--verify", "--samples")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    chain = [s["stage"] for s in report["stages"]]
    assert chain[-1] == "train_conceptclip"
    assert {"sample", "ingest", "figures", "umls_index", "link_concepts"} <= set(chain)
    assert all(o.get("md5") for s in report["stages"] for o in s["outs"])
    assert report["verify"]["ok"] is True
    pmcids = {row.get("pmcid") for row in report["samples"]}
    assert len(pmcids) >= 20 and all(str(p).startswith("PMC") for p in pmcids)


# -- CT-RATE: the README's recipe on a CT-RATE-shaped fixture ------------------------------------
CT_RATE_COMMAND = ["-m", "flows.pipeline", "--overlay", "params/ct_rate.yaml",
                   "--overlay", "params/ct_rate_fixture.yaml", "--target", "evaluate_fvlm"]
# The suite's budget: fewer patients and steps than the README's fixture run (the recipe is
# the same; what the model learns is not asserted here)
CT_RATE_TEST_SIZE = (["--patients", "16"],
                     ["-S", "train_fvlm.max_steps=20", "-S", "train_fvlm.split.validation_fraction=0.5"])


@pytest.fixture(scope="session")
def ct_rate_run(reproduced, tmp_path_factory) -> tuple[Path, dict, str]:
    """A copy of the reproduced clone, a CT-RATE-shaped fixture at data/ct_rate, and the
    README's CT-RATE command run there (the sample's branches are up to date already)."""
    import shutil

    clone = tmp_path_factory.mktemp("ct_rate") / "medconcept"
    shutil.copytree(reproduced, clone, symlinks=True)
    patients, steps = CT_RATE_TEST_SIZE
    run([sys.executable, "scripts/make_ct_rate_fixture.py", "data/ct_rate", *patients], cwd=clone)
    manifest = json.loads((clone / "data" / "ct_rate" / "manifest.json").read_text())
    out = run([sys.executable, *CT_RATE_COMMAND, *steps], cwd=clone).stdout
    return clone, manifest, out


def _table(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_ct_rate_recipe_runs_only_the_ct_branch(ct_rate_run):
    clone, _, out = ct_rate_run
    for stage in ("ct_convert", "segment", "split_reports", "fvlm_prepare", "train_fvlm", "evaluate_fvlm"):
        assert f"[pipeline] {stage}: reproduced" in out, out[-3000:]
    for stage in ("ingest", "figures", "train_conceptclip", "evaluate_conceptclip"):
        assert f"[pipeline] {stage}:" not in out


def test_ct_rate_every_volume_converts_once_in_hu(ct_rate_run):
    clone, manifest, _ = ct_rate_run
    studies = _table(clone / "data" / "ct_convert" / "studies.parquet")
    rejected = _table(clone / "data" / "ct_convert" / "rejected.parquet")
    volumes = sorted((clone / "data" / "ct_rate" / "dataset").rglob("*.nii.gz"))
    assert len(studies) + len(rejected) == len(volumes)
    summary = json.loads((clone / "data" / "ct_convert" / "summary.json").read_text())
    assert summary["items_in"] == len(volumes)
    # one row per scan (reconstructions: first); the others and the volume without metadata rejected
    metadata = {r["VolumeName"] for f in ("train", "validation")
                for r in _rows(clone / "data" / "ct_rate" / "dataset" / "metadata" / f"{f}_metadata.csv")}
    unlisted = {v.name for v in volumes} - metadata
    assert unlisted
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons.count("no_metadata_row") == len(unlisted)
    assert "reconstruction_not_selected" in reasons and all(r["detail"] for r in rejected)
    already = {v["volume_name"] for v in manifest["volumes"] if v.get("trap") == "already_hu"}
    assert already and summary["by_hu_source"]["already_hu"] == len(already)
    assert summary["by_hu_source"]["rescaled"] == len(studies) - len(already)
    # raw and already-HU inputs alike end with air near -1000 HU: nothing rescaled twice
    for row in studies:
        assert -1030 <= row["hu_p01"] <= -950, row
    assert {r["hu_source"] for r in studies} == {"rescaled", "already_hu"}


def test_ct_rate_pairs_every_study_with_a_volume_and_a_report(ct_rate_run):
    clone, _, _ = ct_rate_run
    from tasks.ct.ct_rate_names import parse_volume_name

    dataset = clone / "data" / "ct_rate" / "dataset"
    converted_studies = {row["study_id"] for row in _table(clone / "data" / "ct_convert" / "studies.parquet")}
    # counted from the inputs, not from the stage: studies that have a converted volume and a report
    metadata = {r["VolumeName"] for f in ("train", "validation") for r in _rows(dataset / "metadata" / f"{f}_metadata.csv")}
    with_volume = {parse_volume_name(v.name).study for v in dataset.rglob("*.nii.gz") if v.name in metadata}
    with_report = {parse_volume_name(r["VolumeName"]).study for f in ("train", "validation")
                   for r in _rows(dataset / "radiology_text_reports" / f"{f}_reports.csv")}
    both = with_volume & with_report
    assert len(converted_studies) == len(with_volume)
    summary = json.loads((clone / "data" / "train_fvlm" / "summary.json").read_text())
    assert summary["studies_paired"] == len(both) > 0, summary
    rejected = _table(clone / "data" / "train_fvlm" / "rejected.parquet")
    reasons = {r["reason"] for r in rejected}
    assert {"no_descriptions", "report_without_volume", "label_without_volume"} <= reasons, reasons
    assert sum(r["reason"] == "no_descriptions" for r in rejected) == len(with_volume - with_report)
    assert sum(r["reason"] == "report_without_volume" for r in rejected) == len(with_report - with_volume)


def test_ct_rate_test_side_is_its_own_valid_split(ct_rate_run):
    """params/ct_rate.yaml: CT-RATE's valid set is the test side, its train patients train and validation."""
    clone, _, _ = ct_rate_run
    source = {r["study_id"]: r["source_split"] for r in _table(clone / "data" / "ct_convert" / "studies.parquet")}
    assert set(source.values()) == {"train", "valid"}
    sides = {r["study_id"]: r["split"] for r in _table(clone / "data" / "train_fvlm" / "split.parquet")}
    assert sides and {sid: side == "test" for sid, side in sides.items()} == \
        {sid: source[sid] == "valid" for sid in sides}
    assert {"train", "validation"} <= set(sides.values())
    config = json.loads((clone / "data" / "train_fvlm" / "config.json").read_text())
    assert config["split"]["test_source_splits"] == ["valid"] and config["split"]["test_fraction"] is None
    detail = json.loads((clone / "data" / "evaluate" / "fvlm" / "metrics_detail.json").read_text())
    assert detail["split"]["test_source_splits"] == ["valid"]


def test_ct_rate_labels_agree_and_score_per_label(ct_rate_run):
    clone, _, _ = ct_rate_run
    agreement = _table(clone / "data" / "split_reports" / "label_agreement.parquet")
    assert len(agreement) == 18 and all(r["n"] > 0 for r in agreement)
    scored = [r for r in agreement if r["reference_positives"]]
    assert scored and all(r["agreement"] >= 0.9 for r in scored), scored
    detail = json.loads((clone / "data" / "evaluate" / "fvlm" / "metrics_detail.json").read_text())
    per_label = detail["ct_rate_labels"]
    assert per_label, detail.keys()
    for label, figures in per_label.items():
        if figures.get("auc") is not None:
            assert 0.0 <= figures["auc"] <= 1.0 and figures["anatomy"] in ("lung", "heart", "esophagus", "aorta")
    card = (clone / "data" / "evaluate" / "fvlm" / "model_cards" / "fvlm.md").read_text()
    assert "reference_labels" in card or "multi_abnormality_labels" in card
