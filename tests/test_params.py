import pytest

from tasks.common.params import ParamsError, apply_overrides, load_params, parse_override


def test_override_values_are_yaml_typed():
    assert parse_override("ingest.shard_size=5") == (["ingest", "shard_size"], 5)
    assert parse_override("dask.address=null") == (["dask", "address"], None)
    assert parse_override("a.b=[x, y]") == (["a", "b"], ["x", "y"])
    assert parse_override("a.b=tcp://h:8786") == (["a", "b"], "tcp://h:8786")


def test_overrides_apply_without_touching_the_original():
    params = {"ingest": {"shard_size": 1000, "licences": {"require_commercial_use": False}}}
    result = apply_overrides(params, ["ingest.shard_size=10", "ingest.licences.require_commercial_use=true"])
    assert result["ingest"]["shard_size"] == 10
    assert result["ingest"]["licences"]["require_commercial_use"] is True
    assert params["ingest"]["shard_size"] == 1000


@pytest.mark.parametrize("bad", ["nosection", "ingest.shard_size.deeper=1", "=3"])
def test_bad_overrides_are_clear_errors(bad):
    with pytest.raises(ParamsError):
        apply_overrides({"ingest": {"shard_size": 1}}, [bad])


def test_an_unknown_section_is_added_for_the_schema_to_name(repo_root):
    """apply_overrides adds it; load_params refuses it with the closest known section."""
    assert apply_overrides({"ingest": {}}, ["missing.key=1"])["missing"] == {"key": 1}
    with pytest.raises(ParamsError, match="unknown params section 'missing'"):
        load_params(repo_root / "params.yaml", ["missing.key=1"])


def test_repository_params_load(repo_root):
    params = load_params(repo_root / "params.yaml", ["ingest.output_dir=/tmp/x"])
    assert params["ingest"]["output_dir"] == "/tmp/x"
    assert params["sample"]["seed"] == load_params(repo_root / "params.yaml")["sample"]["seed"]


def test_dvc_pipeline_files_are_not_git_ignored(repo_root):
    """DVC refuses to write a git-ignored dvc.lock ('is git-ignored'), so `dvc repro` would fail."""
    import subprocess

    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=repo_root).returncode == 0
        assert not ignored, f"{name} is git-ignored"
