"""The pipeline flow's -S: checked against the schema, written into params.yaml for DVC (one
line changed, comments kept), or refused with one line and exit status 2. No stage runs here."""
from __future__ import annotations

import shutil

import pytest

from flows import pipeline
from tasks.common.params import load_params


@pytest.fixture
def workspace(repo_root, tmp_path, monkeypatch):
    """A copy of params.yaml and dvc.yaml, the pipeline's working folder."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        pipeline.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def test_bad_overrides_are_refused_before_anything_runs(workspace, capsys):
    before = (workspace / "params.yaml").read_bytes()
    assert _refused(["-S", "ingest.max_member_byte=1"], capsys) == \
        "error: unknown key 'ingest.max_member_byte' (did you mean 'ingest.max_member_bytes'?)"
    assert _refused(["-S", "ingest.packages_per_task=abc"], capsys) == \
        "error: ingest.packages_per_task: expected an integer, got 'abc' (str)"
    assert (workspace / "params.yaml").read_bytes() == before


def test_overrides_that_would_not_reach_a_stage_are_refused(workspace, capsys):
    before = (workspace / "params.yaml").read_bytes()
    shutil.copy(workspace / "params.yaml", workspace / "other.yaml")
    assert "would not reach them" in _refused(["--params", "other.yaml"], capsys)
    # params.yaml writes segment.anatomies over several lines: not rewritten, DVC's own way named
    message = _refused(["-S", "segment.anatomies={lung: [lung_upper_lobe_left]}"], capsys)
    assert "several lines" in message and "dvc exp run -S segment.anatomies=" in message
    assert "{...} mapping" in _refused(["-S", "split_reports.anatomy_names.small_bowel=Bowel"], capsys)
    assert (workspace / "params.yaml").read_bytes() == before


def test_a_stage_override_is_written_into_params_yaml_for_dvc(workspace, repo_root):
    from dvc.utils.serialize import loads_yaml

    params, notes = pipeline.prepare_params(workspace, "params.yaml",
                                            ["ingest.source=/data/pmc", "pipeline.retries=3",
                                             "link_concepts.stop_concepts=[C0012634]"])
    assert params["pipeline"]["retries"] == 3 and params["ingest"]["source"] == "/data/pmc"
    assert notes == ["[pipeline] params.yaml: ingest.source = /data/pmc (read by ingest)",
                     "[pipeline] params.yaml: link_concepts.stop_concepts = [C0012634] "
                     "(read by link_concepts, split_reports)",
                     "[pipeline] they stay in params.yaml (as after `dvc exp run -S`), so dvc.lock and "
                     "params.yaml agree; `git diff params.yaml` shows them",
                     "[pipeline] -S pipeline.retries=3: this run only"]
    before = (repo_root / "params.yaml").read_text(encoding="utf-8").splitlines()
    after = (workspace / "params.yaml").read_text(encoding="utf-8").splitlines()
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(after) == len(before) and len(changed) == 2
    assert changed[0][1].startswith("  source: /data/pmc ") and changed[0][1].endswith(changed[0][0][-40:])
    assert changed[1][1].startswith("  stop_concepts: [C0012634]")
    # what the stages read (params schema) and what DVC reads (its YAML 1.2 loader) agree
    written = load_params(workspace / "params.yaml")
    assert written["ingest"]["source"] == "/data/pmc" and written["link_concepts"]["stop_concepts"] == ["C0012634"]
    assert written["pipeline"] == load_params(repo_root / "params.yaml")["pipeline"]  # this run only
    dvc_reads = loads_yaml("\n".join(after))
    assert dvc_reads["ingest"]["source"] == "/data/pmc" and dvc_reads["link_concepts"]["stop_concepts"] == ["C0012634"]


@pytest.mark.parametrize("value, text", [("on", '"on"'), ("1:20", '"1:20"'), ("a, b", '"a, b"'), (3e-4, "0.0003"),
                                         (1e20, "1.0e+20"), (None, "null"), ([".nxml", "yes"], '[.nxml, "yes"]')])
def test_values_are_written_as_both_readers_read_them(value, text):
    import yaml
    from dvc.utils.serialize import loads_yaml

    assert pipeline.yaml_text(value) == text
    assert yaml.safe_load(f"k: {text}")["k"] == value == loads_yaml(f"k: {text}")["k"]


def test_an_overlay_file_becomes_overrides_that_later_ones_win(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("ct_convert:\n  source: /data/ct_rate/dataset\n  ct_rate: {reconstructions: all}\n"
                       "train_fvlm:\n  max_steps: 5\n  keep_fov_cut: []\n")
    assert pipeline.overlay_overrides(overlay) == [
        "ct_convert.source=/data/ct_rate/dataset", "ct_convert.ct_rate.reconstructions=all",
        "train_fvlm.max_steps=5", "train_fvlm.keep_fov_cut=[]"]
    with pytest.raises(pipeline.ParamsError, match="no such file"):
        pipeline.overlay_overrides(tmp_path / "missing.yaml")


def test_a_target_runs_only_what_it_depends_on(repo_root):
    from tasks.lineage.dag import stage_order

    everything = stage_order(repo_root)
    fvlm = stage_order(repo_root, ["train_fvlm"])
    assert fvlm[-1] == "train_fvlm" and {"ct_convert", "segment", "split_reports"} <= set(fvlm)
    assert not {"ingest", "figures", "train_conceptclip"} & set(fvlm)
    assert [s for s in everything if s in fvlm] == fvlm  # same order as the whole DAG
    with pytest.raises(ValueError, match="no stage nope"):
        stage_order(repo_root, ["nope"])
