"""dvc.yaml's code deps are exactly what each stage's command imports (and reads) in the code."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tasks.lineage.code_deps import command_module, module_closure, paths_named_in_code
from tasks.lineage.stage_deps import DvcYamlLayoutError, compare_all, rewrite_deps, sync_dvc_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGES = list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_deps_are_the_code_the_stage_runs(stage):
    [result] = [s for s in compare_all(REPO_ROOT) if s.stage == stage]
    assert result.in_sync, result.message()


def test_repository_files_named_in_code_are_params_values():
    """A path written out in code is a params default, so the stage declaring that param reads it."""
    params_text = (REPO_ROOT / "params.yaml").read_text()
    modules = {m for s in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].values()
               for m in module_closure(REPO_ROOT, command_module(s["cmd"]))}
    unattributed = {path: where for path, where in paths_named_in_code(REPO_ROOT, modules).items()
                    if path not in params_text}
    assert not unattributed, f"repository files read at a path params.yaml does not name: {unattributed}"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


DVC_YAML = """\
stages:
  run:
    cmd: python -m flows.run
    deps:
      - flows/__init__.py
      - flows/run.py
      - tasks/__init__.py
      - tasks/work/__init__.py
      - tasks/work/helpers.py
      - tasks/work/rules.yaml
      - tasks/work/steps.py
      - data/input.csv       # the raw input
    params:
      - run
    outs:
      - data/out.parquet
"""


@pytest.fixture
def fixture_repo(tmp_path) -> Path:
    """flows.run -> (inside a function) tasks.work.steps -> (relative) .helpers; rules.yaml via params."""
    write(tmp_path, {
        "flows/__init__.py": "",
        "flows/run.py": """\
            def main():
                from tasks.work import steps
                return steps.go()
            """,
        "tasks/__init__.py": "",
        "tasks/work/__init__.py": "",
        "tasks/work/steps.py": """\
            from . import helpers

            def go():
                return helpers.twice(1)
            """,
        "tasks/work/helpers.py": "def twice(x):\n    return 2 * x\n",
        "tasks/work/unused.py": "VALUE = 1\n",
        "tasks/work/rules.yaml": "a: 1\n",
        "params.yaml": "run:\n  rules: tasks/work/rules.yaml\n  output_dir: data\n",
        "dvc.yaml": DVC_YAML,
    })
    return tmp_path


def test_fixture_stage_in_sync(fixture_repo):
    [result] = compare_all(fixture_repo)
    assert result.in_sync, result.message()
    assert "tasks/work/unused.py" not in result.expected


def test_an_undeclared_import_fails_with_the_stage_and_module(fixture_repo):
    helpers = fixture_repo / "tasks/work/helpers.py"
    helpers.write_text(helpers.read_text() + "\n\ndef late():\n    import tasks.work.unused\n")
    [result] = compare_all(fixture_repo)
    assert not result.in_sync
    assert result.missing == ["tasks/work/unused.py"] and result.excess == []
    message = result.message()
    print(message)  # the failing message the deps test shows
    assert "stage 'run'" in message and "missing (run or read, not declared): tasks/work/unused.py" in message


def test_a_dropped_import_shows_as_excess(fixture_repo):
    (fixture_repo / "tasks/work/steps.py").write_text("def go():\n    return 2\n")
    [result] = compare_all(fixture_repo)
    assert result.excess == ["tasks/work/helpers.py"] and result.missing == []
    assert "excess (declared, not run or read): tasks/work/helpers.py" in result.message()


def test_a_declared_folder_counts_as_its_files(fixture_repo):
    dvc_yaml = fixture_repo / "dvc.yaml"
    lines = [line for line in DVC_YAML.splitlines() if "tasks/work/" not in line]
    lines.insert(lines.index("      - tasks/__init__.py") + 1, "      - tasks/work")
    dvc_yaml.write_text("\n".join(lines) + "\n")
    [result] = compare_all(fixture_repo)
    assert result.excess == ["tasks/work/unused.py"] and result.missing == []


def test_sync_rewrites_only_the_repository_deps(fixture_repo):
    (fixture_repo / "tasks/work/steps.py").write_text("from tasks.work import helpers, unused\n")
    dvc_yaml = fixture_repo / "dvc.yaml"
    before = dvc_yaml.read_text()
    _, changed = sync_dvc_yaml(fixture_repo)
    after = dvc_yaml.read_text()
    assert changed
    assert "      - tasks/work/unused.py\n" in after
    assert "      - data/input.csv       # the raw input\n" in after  # data dep and its comment kept
    assert before.replace("      - tasks/work/steps.py\n", "      - tasks/work/steps.py\n"
                          "      - tasks/work/unused.py\n") == after
    assert compare_all(fixture_repo)[0].in_sync
    assert sync_dvc_yaml(fixture_repo)[1] is False  # a second run changes nothing


def test_rewrite_adds_a_deps_list_where_there_was_none():
    text = "stages:\n  a:\n    cmd: python -m flows.a\n    outs:\n      - data/a\n"
    new = rewrite_deps(text, {"a": ["flows/__init__.py", "flows/a.py"]})
    assert yaml.safe_load(new)["stages"]["a"]["deps"] == ["flows/__init__.py", "flows/a.py"]
    assert new.endswith("    outs:\n      - data/a\n")


def test_rewrite_refuses_deps_with_options():
    text = "stages:\n  a:\n    cmd: python -m flows.a\n    deps:\n      - data/x:\n          foo: 1\n"
    with pytest.raises(DvcYamlLayoutError, match="has options"):
        rewrite_deps(text, {"a": ["flows/a.py", "data/x"]})


# Inputs a user points at their own data: dvc.yaml must follow the param, not a fixed path.
EXTERNAL_INPUTS = {
    "ingest": ["ingest.source"],
    "ct_convert": ["ct_convert.source"],
    "segment": ["segment.provided.masks_dir"],
    "split_reports": ["split_reports.reports", "split_reports.reference_labels"],
}


def test_external_inputs_are_deps_that_follow_their_params(repo_root):
    import re

    from tasks.common.params import load_params

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    params = load_params(repo_root / "params.yaml")
    for stage, keys in EXTERNAL_INPUTS.items():
        deps = [d for d in stages[stage]["deps"] if isinstance(d, str)]
        for key in keys:
            assert "${" + key + "}" in deps, f"{stage}: {key} is not a templated dep"
    for stage, entry in stages.items():
        declared = [p for p in entry.get("params", []) if isinstance(p, str)]
        for dep in entry.get("deps", []):
            for key in re.findall(r"\$\{([^}]+)\}", str(dep)):
                value = params
                for part in key.split("."):
                    value = value[part]
                assert isinstance(value, str) and value, f"{stage}: {key} must name a location, not {value!r}"
                assert any(key == d or key.startswith(d + ".") for d in declared), f"{stage}: {key} not in its params"
