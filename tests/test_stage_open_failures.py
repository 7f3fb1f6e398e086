"""A stage whose every item fails to open its source stops with a configuration error
naming the source param (flows._runner.check_sources_opened); one that rejects everything
for the items' content still ends normally with its rejected table."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from flows._runner import ShardedStage, check_sources_opened
from flows._stage import run_stage, run_stage_cli
from flows.ingest import ingest_flow
from tasks.common.sharding import Merged, Plan, StageConfigError
from tests.conftest import stage_params

OA_LIST_HEADER = "File,Article Citation,Accession ID,Last Updated,PMID,License\n"


def _stage(**kwargs) -> ShardedStage:
    return ShardedStage(name="demo", unit="packages", plan=None, work=None, merge=None, **kwargs)


def _rows(*reasons: str) -> list[dict]:
    return [{"item": f"p{i}", "reason": r, "detail": f"detail {i}"} for i, r in enumerate(reasons)]


def test_every_item_unopenable_is_a_configuration_error_naming_the_source():
    stage = _stage(open_failures=("unreadable_source",), source_params=("source", "nested.where"))
    plan = Plan(items=["p0", "p1"], shards=[])
    with pytest.raises(StageConfigError) as error:
        check_sources_opened(stage, {"source": "/data/pmc", "nested": {"where": None}}, plan,
                             Merged(items_out=0, accounted=set()), _rows("unreadable_source", "unreadable_source"))
    message = str(error.value)
    assert "demo.source = '/data/pmc'" in message and "nested.where" not in message  # unset params unnamed
    assert "none of the 2 packages" in message and "p0: detail 0" in message


@pytest.mark.parametrize("case", ["one opened", "one kept", "no open reasons declared", "nothing entered"])
def test_content_rejections_or_one_opened_item_end_normally(case):
    stage = _stage(open_failures=() if case == "no open reasons declared" else ("unreadable_source",),
                   source_params=("source",))
    reasons = ("unreadable_source", "corrupt_archive") if case == "one opened" else ("unreadable_source",) * 2
    merged = Merged(items_out=1 if case == "one kept" else 0, accounted={"p1"} if case == "one kept" else set())
    plan = Plan(items=[] if case == "nothing entered" else ["p0", "p1"], shards=[])
    check_sources_opened(stage, {"source": "x"}, plan, merged, [] if case == "nothing entered" else _rows(*reasons))


def test_ingest_of_an_oa_list_whose_packages_cannot_be_opened_exits_2_naming_the_source(tmp_path, capsys):
    listing = tmp_path / "oa_file_list.csv"
    listing.write_text(OA_LIST_HEADER + "".join(
        f"oa_package/aa/PMC{n}.tar.gz,Cite,PMC{n},2024-01-01 00:00:00,{n},CC BY\n" for n in (1, 2, 3)))
    argv = ["-S", f"ingest.source={listing}", "-S", f"ingest.output_dir={tmp_path / 'ingest'}",
            "-S", "dask.n_workers=1", "-S", "dask.processes=false"]
    with pytest.raises(SystemExit) as exited:
        run_stage_cli(ingest_flow, argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"ingest.source = '{listing}'" in err and "none of the 3 packages" in err
    assert "unreadable_source" in err and "oa_package/aa/PMC1.tar.gz" in err
    assert not (tmp_path / "ingest").exists()  # nothing was swapped in


def test_ingest_rejecting_every_package_for_its_content_ends_normally(tmp_path, repo_root):
    source = tmp_path / "pmc"
    source.mkdir()
    (source / "not_gzip.tar.gz").write_bytes(b"these bytes are no archive")
    (source / "not_tar.tar.gz").write_bytes(gzip.compress(b"a gzip stream holding no tar"))
    out = tmp_path / "ingest"
    summary = run_stage(ingest_flow, stage_params(repo_root, **{"ingest.source": str(source),
                                                                "ingest.output_dir": str(out)}))
    assert summary["items_in"] == 2 and summary["items_out"] == 0
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert sorted(r["item"] for r in rejected) == ["not_gzip.tar.gz", "not_tar.tar.gz"]
    assert all(r["reason"] != "unreadable_source" for r in rejected)
    assert json.loads((out / "summary.json").read_text())["items_out"] == 0


def test_ct_readers_tell_a_missing_path_from_a_corrupt_file(tmp_path):
    """ct_convert and segment reject a path that is not there as unreadable_source (what the
    runner counts as 'cannot open'), and a file with bad bytes for its content."""
    from tasks.common.rejection import Rejected
    from tasks.ct.convert import load_nifti
    from tasks.ct.dicom_series import scan_file
    from tasks.ct.provided_backend import load_mask

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a volume")
    missing = tmp_path / "missing.nii.gz"
    assert scan_file(str(missing)).reason == "unreadable_source"
    assert scan_file(str(corrupt)).reason != "unreadable_source"
    for read in (lambda p: load_nifti(p, 10 ** 9), lambda p: load_mask(p, (2, 2, 2), None, set())):
        with pytest.raises(Rejected) as gone:
            read(str(missing))
        with pytest.raises(Rejected) as bad:
            read(str(corrupt))
        assert gone.value.reason == "unreadable_source" and bad.value.reason != "unreadable_source"
