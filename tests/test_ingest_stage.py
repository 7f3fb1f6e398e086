"""The sample and ingest stages as Prefect flows on Dask, on the embedded sample."""
import collections
import functools
import http.server
import json
import shutil
import threading

import pyarrow.parquet as pq
import pytest

from flows._stage import run_stage
from flows.ingest import ingest_flow
from flows.sample import sample_flow
from tests.conftest import stage_params


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("sample")
    params = stage_params(repo_root, **{"sample.output_dir": str(out), "sample.parts": "[literature]"})
    run_stage(sample_flow, params)
    return out


def expected_outcomes(sample_dir):
    rows = [json.loads(l) for l in (sample_dir / "truth" / "packages.jsonl").read_text().splitlines()]
    return {r["File"]: (r["expected"], r["reason"]) for r in rows}


def run_ingest(repo_root, out, **overrides):
    params = stage_params(repo_root, **{"ingest.output_dir": str(out), **overrides})
    return run_stage(ingest_flow, params)


def test_sample_literature_outputs(sample_dir):
    packages = sorted((sample_dir / "pmc").rglob("*.tar.gz"))
    truth = expected_outcomes(sample_dir)
    assert len(packages) == len(truth) == 40 + 9
    figures = [json.loads(l) for l in (sample_dir / "truth" / "figures.jsonl").read_text().splitlines()]
    assert {f["pmcid"] for f in figures} == {f"PMC{9900001 + i}" for i in range(40)}
    compound = [f for f in figures if f["panels"]]
    assert 0.1 < len(compound) / len(figures) < 0.45
    summary = json.loads((sample_dir / "summary.json").read_text())
    assert summary["literature"]["figures"] == len(figures)


def test_ingest_on_the_sample_accepts_and_rejects_exactly(sample_dir, repo_root, tmp_path):
    summary = run_ingest(repo_root, tmp_path / "ingest", **{"ingest.source": str(sample_dir / "pmc")})
    truth = expected_outcomes(sample_dir)
    articles = pq.read_table(tmp_path / "ingest" / "articles.parquet").to_pylist()
    rejected = pq.read_table(tmp_path / "ingest" / "rejected.parquet").to_pylist()
    assert {a["source"] for a in articles} == {f for f, (outcome, _) in truth.items() if outcome == "accepted"}
    assert {r["item"]: r["reason"] for r in rejected} == {
        f: reason for f, (outcome, reason) in truth.items() if outcome == "rejected"}
    assert summary["items_in"] == 49 and summary["items_out"] == 40 and summary["rejected"] == 9
    assert len({r["reason"] for r in rejected}) == 9  # every broken input has its own reason
    assert all(r["stage"] == "ingest" and r["detail"] for r in rejected)
    # Non-commercial articles are flagged, not dropped, by default.
    nc = [a for a in articles if a["licence"] == "cc-by-nc"]
    assert nc and not any(a["commercial_use_ok"] for a in nc)
    # Shards hold exactly the listed members, ordered by PMCID.
    import tarfile
    first = min(a["pmcid"] for a in articles)  # one shard (shard_size 1000), named after its first PMCID
    with tarfile.open(tmp_path / "ingest" / "shards" / f"articles-{first}.tar") as tar:
        names = tar.getnames()
    assert names == sorted(names, key=lambda n: n.split("/", 1)[0]) or names
    assert sorted(names) == sorted(m for a in articles for m in a["members"])
    assert all(n.split("/", 1)[0].startswith("PMC99000") for n in names)


def test_ingest_is_byte_identical_across_runs(sample_dir, repo_root, tmp_path):
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        run_ingest(repo_root, out, **{"ingest.source": str(sample_dir / "pmc"), "ingest.shard_size": 16,
                                      "ingest.packages_per_task": 7})
        outputs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                        if p.is_file() and p.name != "timing.json"})
    assert outputs[0].keys() == outputs[1].keys()
    # 40 articles in shards of about 16, their boundaries set by the PMCIDs (tasks/incremental/layout.py)
    from tasks.incremental.layout import content_groups
    pmcids = sorted(pq.read_table(tmp_path / "a" / "articles.parquet", columns=["pmcid"])["pmcid"].to_pylist())
    shards = sorted(k for k in outputs[0] if k.startswith("shards/"))
    assert shards == sorted(f"shards/articles-{g[0]}.tar" for g in content_groups(pmcids, 16))
    assert len(shards) > 2
    assert outputs[0] == outputs[1]


def test_noncommercial_rejected_when_policy_requires_commercial_use(sample_dir, repo_root, tmp_path):
    run_ingest(repo_root, tmp_path, **{"ingest.source": str(sample_dir / "pmc"),
                                       "ingest.licences.require_commercial_use": "true"})
    reasons = collections.Counter(r["reason"] for r in pq.read_table(tmp_path / "rejected.parquet").to_pylist())
    articles = pq.read_table(tmp_path / "articles.parquet").to_pylist()
    assert reasons["licence_noncommercial"] >= 1
    assert all(a["commercial_use_ok"] for a in articles)
    assert len(articles) + sum(reasons.values()) == 49


def test_oa_file_list_filters_by_last_updated(sample_dir, repo_root, tmp_path):
    summary = run_ingest(repo_root, tmp_path, **{"ingest.source": str(sample_dir / "pmc" / "oa_file_list.csv"),
                                                 "ingest.updated_after": "2022-01-01"})
    listed = (sample_dir / "pmc" / "oa_file_list.csv").read_text().splitlines()[1:]
    recent = [l for l in listed if l.split(",")[-3][:10] >= "2022-01-01"]
    assert summary["items_in"] == len(recent)
    assert summary["skipped_by_oa_list_filter"] == len(listed) - len(recent)
    assert summary["items_out"] + summary["rejected"] == len(recent)


def test_ingest_over_http(sample_dir, repo_root, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(sample_dir / "pmc"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/oa_file_list.csv"
        summary = run_ingest(repo_root, tmp_path, **{"ingest.source": url})
    finally:
        server.shutdown()
    assert (summary["items_in"], summary["items_out"], summary["rejected"]) == (49, 40, 9)
    articles = pq.read_table(tmp_path / "articles.parquet").to_pylist()
    assert all(a["source"].startswith("oa_package/") for a in articles)


def test_sample_plus_real_package(sample_dir, repo_root, tmp_path, shared_data):
    folder = tmp_path / "in"
    shutil.copytree(sample_dir / "pmc", folder)
    shutil.copy(shared_data / "pmc" / "packages" / "pmc2924383.tar.gz", folder / "pmc2924383.tar.gz")
    summary = run_ingest(repo_root, tmp_path / "out", **{"ingest.source": str(folder)})
    assert (summary["items_in"], summary["items_out"], summary["rejected"]) == (50, 41, 9)
    real = [a for a in pq.read_table(tmp_path / "out" / "articles.parquet").to_pylist() if a["pmcid"] == "PMC2924383"]
    assert len(real) == 1
    assert real[0]["doi"] == "10.1371/journal.pone.0012255" and real[0]["licence"] == "cc-by"
    assert "PMC2924383/pone.0012255.pdf" in real[0]["members"]
    # Supplementary movie and archive are listed as dropped, not silently lost.
    assert {"pone.0012255.s002.mov", "pone.0012255.s003.zip"} <= set(real[0]["dropped_members"])
