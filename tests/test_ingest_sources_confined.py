"""OA file list entries are confined to the base: escapes, absolute paths, foreign URLs and
empty or repeated entries become rejected rows and are never opened, even where a valid
package sits at the place they name."""
import functools
import http.server
import threading

import fsspec
import pyarrow.parquet as pq
import pytest

from flows._stage import run_stage
from flows.ingest import ingest_flow
from tasks.common.rejection import Rejected
from tasks.ingest.package import Policy, inspect_package
from tasks.ingest.sources import confine, read_oa_list
from tests.conftest import stage_params
from tests.helpers.oa_packages import write_oa_list, write_package

BASE_URL = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"


@pytest.mark.parametrize("entry, uri, name", [
    ("oa_package/08/e0/PMC13900.tar.gz", BASE_URL + "oa_package/08/e0/PMC13900.tar.gz", "oa_package/08/e0/PMC13900.tar.gz"),
    ("./oa_package/a/../PMC1.tar.gz", BASE_URL + "oa_package/PMC1.tar.gz", "oa_package/PMC1.tar.gz"),
    (BASE_URL + "oa_package/PMC2.tar.gz", BASE_URL + "oa_package/PMC2.tar.gz", "oa_package/PMC2.tar.gz"),
])
def test_entries_under_the_base_url_resolve_below_it(entry, uri, name):
    assert confine(BASE_URL, entry) == (uri, name)


@pytest.mark.parametrize("entry, reason", [
    ("../elsewhere/x.tar.gz", "file_outside_base"),
    ("oa_package/../../x.tar.gz", "file_outside_base"),
    ("%2e%2e/%2e%2e/etc/passwd", "file_outside_base"),      # a server decodes the escapes
    ("oa_package/..%2f..%2fx.tar.gz", "file_outside_base"),
    ("oa_package\\..\\..\\x.tar.gz", "file_outside_base"),  # backslashes read as separators
    ("oa_package/..", "file_outside_base"),                 # the base itself is no file
    ("https://ftp.ncbi.nlm.nih.gov/etc/x.tar.gz", "file_outside_base"),
    ("/etc/passwd", "absolute_file_path"),
    ("\\\\server\\share\\x.tar.gz", "absolute_file_path"),
    ("C:\\x.tar.gz", "absolute_file_path"),
    ("https://evil.example/pub/pmc/x.tar.gz", "foreign_url"),
    ("http://ftp.ncbi.nlm.nih.gov/pub/pmc/x.tar.gz", "foreign_url"),  # another scheme
    ("s3://bucket/pub/pmc/x.tar.gz", "foreign_url"),
    ("", "empty_file_entry"),
    ("oa_package/x\x07.tar.gz", "invalid_file_entry"),
    ("simplecache::https://evil.example/x.tar.gz", "invalid_file_entry"),  # fsspec chaining
])
def test_entries_that_leave_the_base_url_are_refused(entry, reason):
    with pytest.raises(Rejected) as caught:
        confine(BASE_URL, entry)
    assert caught.value.reason == reason and caught.value.detail


@pytest.fixture
def layout(tmp_path):
    """base/ with one valid package; valid packages outside it that bad entries point at."""
    base = tmp_path / "base"
    write_package(base / "oa_package" / "aa" / "PMC1.tar.gz", "PMC1")
    outside = write_package(tmp_path / "elsewhere" / "PMC2.tar.gz", "PMC2")
    return {"base": base, "outside": outside}


@pytest.fixture
def foreign_server(layout):
    """An HTTP server holding a valid package; every request it gets is logged."""
    requests = []

    class Logged(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    handler = functools.partial(Logged, directory=str(layout["outside"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def bad_entries(layout, server_url) -> dict[str, str]:
    """reason -> an entry that names the valid package outside the base."""
    outside = layout["outside"]
    return {
        "file_outside_base": "../elsewhere/PMC2.tar.gz",
        "absolute_file_path": str(outside),
        "foreign_url": f"{server_url}/PMC2.tar.gz",
        "empty_file_entry": "",
        "invalid_file_entry": "oa_package/aa/PMC1.tar.gz\x07",
        "duplicate_file_entry": "oa_package/aa/../aa/PMC1.tar.gz",  # the valid entry again
    }


@pytest.fixture
def opened(monkeypatch):
    """Every location fsspec.open is asked for while ingesting."""
    seen = []
    real = fsspec.open

    def recording(uri, *args, **kwargs):
        seen.append(str(uri))
        return real(uri, *args, **kwargs)

    monkeypatch.setattr("tasks.ingest.sources.fsspec.open", recording)
    return seen


POLICY = Policy.from_params({
    "max_member_bytes": 1 << 20, "max_package_bytes": 1 << 24, "max_members": 100, "max_xml_bytes": 1 << 20,
    "keep_suffixes": [".nxml", ".jpg", ".txt"],
    "licences": {"allowed": ["cc-by"], "require_commercial_use": False},
})


@pytest.mark.parametrize("reason", ["file_outside_base", "absolute_file_path", "foreign_url", "empty_file_entry",
                                    "invalid_file_entry", "duplicate_file_entry"])
def test_each_bad_entry_is_rejected_with_its_reason_and_never_opened(reason, layout, foreign_server, opened):
    server_url, requests = foreign_server
    entry = bad_entries(layout, server_url)[reason]
    listing = write_oa_list(layout["base"] / "oa_file_list.csv", ["oa_package/aa/PMC1.tar.gz", entry])
    sources, skipped = read_oa_list(str(listing), None, None, None)
    assert skipped == 0 and len(sources) == 2
    good, bad = sorted(sources, key=lambda s: s.rejection is not None)
    assert good.rejection is None and good.name == "oa_package/aa/PMC1.tar.gz"
    assert bad.rejection and bad.rejection[0] == reason and bad.uri is None
    assert bad.name == (entry or "oa_file_list.csv line 3")
    opened.clear()
    with pytest.raises(Rejected) as caught:
        inspect_package(bad, POLICY)
    assert caught.value.reason == reason
    row, members = inspect_package(good, POLICY)
    assert row["pmcid"] == "PMC1" and "f1.jpg" in members
    assert opened == [good.uri]  # only the valid entry was ever opened
    assert requests == []


def test_ingest_of_a_list_with_bad_entries_rejects_each_and_accounts_for_all(layout, foreign_server, repo_root,
                                                                             tmp_path):
    server_url, requests = foreign_server
    bad = bad_entries(layout, server_url)
    entries = ["oa_package/aa/PMC1.tar.gz", *bad.values(), ""]  # two empty entries: two rows
    listing = write_oa_list(layout["base"] / "oa_file_list.csv", entries)
    out = tmp_path / "ingest"
    summary = run_stage(ingest_flow, stage_params(repo_root, **{
        "ingest.source": str(listing), "ingest.output_dir": str(out)}))
    articles = pq.read_table(out / "articles.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert [a["pmcid"] for a in articles] == ["PMC1"]  # PMC2, readable where bad entries point, never read
    assert sorted(r["reason"] for r in rejected) == sorted([*bad, "empty_file_entry"])
    assert len({r["item"] for r in rejected}) == len(rejected) == len(bad) + 1
    assert all(r["stage"] == "ingest" and r["detail"] for r in rejected)
    assert (summary["items_in"], summary["items_out"], summary["rejected"]) == (len(entries), 1, len(bad) + 1)
    assert summary["rejected_by_reason"]["file_outside_base"] == 1
    assert summary["rejected_by_reason"]["empty_file_entry"] == 2
    assert requests == []
