"""Reports tables with bytes that lie: a NUL byte inside a CSV field (the C parser ends the
field there, so the report would pass as empty), a report over the length cap, HTML entities;
read and split by the stage's own functions (plan, split_shard), as a worker does."""
from __future__ import annotations

from pathlib import Path

from tasks.reports.input_tables import has_nul, read_tables
from tests.conftest import stage_params

HEADER = b"StudyInstanceUID,report\n"


def _csv(path: Path, rows: list[bytes]) -> Path:
    path.write_bytes(HEADER + b"".join(rows))
    return path


def test_a_nul_byte_is_kept_in_the_field(tmp_path):
    path = _csv(tmp_path / "r.csv", [b'1.2.3,"\x00\x01\x02PK binary"\n', b'1.2.4,"Lungs clear."\n'])
    assert has_nul(path) and not has_nul(_csv(tmp_path / "clean.csv", [b'1.2.4,"Lungs clear."\n']))
    [table] = read_tables(path, "reports", ["StudyInstanceUID", "report"], "split_reports.columns", tmp_path)
    assert table.frame["report"].tolist() == ["\x00\x01\x02PK binary", "Lungs clear."]


def test_binary_too_long_and_escaped_reports_through_the_stage(repo_root, tmp_path):
    from flows.split_reports import stage_config
    from tasks.reports import stage

    long_report = b"Lungs are clear. " * 20
    path = _csv(tmp_path / "reports.csv", [
        b'1.2.1,"\x00 No effusion."\n',                       # cut at the NUL by a C reader: would be empty
        b'1.2.2,"' + long_report + b'"\n',                     # 340 characters, over the cap below
        b'1.2.3,"No pleural effusion &amp; pericardial effusion."\n',
        b'1.2.4,""\n',                                         # really empty
    ])
    params = stage_params(repo_root, **{"split_reports.reports": path, "split_reports.reference_labels": "null",
                                        "split_reports.linker": "false", "split_reports.max_report_chars": 300,
                                        "split_reports.lexicon": repo_root / "tasks" / "reports" / "lexicon.yaml"})
    cfg = {**stage_config(params), "run_root": str(tmp_path)}
    plan = stage.plan(cfg, tmp_path / "out")
    assert len(plan.items) == 4
    results = [stage.split_shard(shard, cfg, str(tmp_path / "out")) for shard in plan.shards]
    reasons = sorted((r["reason"], r["detail"].split(" ")[0]) for res in results for r in res.rejected)
    assert reasons == [("binary_content", "a"), ("empty_report", "no"), ("report_too_long", "340")]
    positives = {k: sum(res.value[1][k] for res in results) for k in cfg["labels"]}
    assert positives["Pericardial effusion"] == 0 and positives["Pleural effusion"] == 0  # one negation over both
