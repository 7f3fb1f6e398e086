"""The installed QuickUMLS has what tasks/linking/quickumls_adapter.py uses, at the pinned version."""
from __future__ import annotations

import re
from importlib.metadata import version

from tasks.linking import quickumls_adapter as qa
from tests.conftest import REPO_ROOT


def test_installed_quickumls_has_what_the_adapter_uses():
    assert qa.problems() == []


def test_the_check_fails_when_quickumls_changes(monkeypatch):
    from quickumls import QuickUMLS, install

    monkeypatch.delattr(QuickUMLS, "_make_ngrams")
    monkeypatch.setattr(install, "extract_from_mrconso", lambda path, opts: iter(()))
    found = qa.problems()
    assert "quickumls.core.QuickUMLS._make_ngrams is missing" in found
    assert any(p.startswith("quickumls.install.extract_from_mrconso(") for p in found)


def test_the_check_fails_when_quickumls_behaves_otherwise(monkeypatch):
    from quickumls import QuickUMLS

    original = QuickUMLS._get_all_matches
    monkeypatch.setattr(QuickUMLS, "_get_all_matches",
                        lambda self, ngrams: [[{k: v for k, v in m.items() if k != "preferred"} for m in g]
                                              for g in original(self, ngrams)])
    assert [p for p in qa.problems() if "_get_all_matches returned" in p]


def test_no_module_but_the_adapter_reaches_into_quickumls():
    """QuickUMLS's private methods and its installer/toolbox are used through the adapter only."""
    offenders = []
    for path in sorted([*(REPO_ROOT / "tasks").rglob("*.py"), *(REPO_ROOT / "flows").rglob("*.py"),
                        *(REPO_ROOT / "benchmarks").rglob("*.py"), *(REPO_ROOT / "tests" / "helpers").rglob("*.py")]):
        if path.name == "quickumls_adapter.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"(from|import) quickumls[\s.]|\._(get_all_matches|make_ngrams|match)\(|\._stopwords\b", text):
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []


def test_constraints_pin_the_checked_versions():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO_ROOT / "constraints.txt").read_text(), re.M))
    assert pins["quickumls"] == qa.QUICKUMLS_VERSION == version("quickumls")
    assert pins["quickumls-simstring"] == version("quickumls-simstring")

