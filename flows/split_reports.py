"""`split_reports` stage: radiology reports -> clauses with anatomy and findings,
one description per (study, anatomy), the 18 CT-RATE labels per report, and their
agreement with a reference label table (CT-RATE's own) where one is given.

    python -m flows.split_reports [-S split_reports.reports=path.csv ...]

What the stage takes from other sections is settled here, at the boundary, and passed in
its cfg (tasks/reports/stage.py reads nothing else): the anatomies (its own list, else the
keys of `segment.anatomies`, else the lexicon's), the linker settings (`link_concepts`)
and the de-identification key (`deid` and the environment), so study ids join ct_convert's.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.ct.deid import deid_key
from tasks.linking.linker import linker_settings
from tasks.reports import stage
from tasks.reports.processor import load_lexicon

SPLIT_REPORTS = ShardedStage(name="split_reports", unit="reports", plan=stage.plan, work=stage.split_shard,
                             merge=stage.merge)


def stage_config(params: dict) -> dict:
    """The split_reports section plus the values it needs from other sections."""
    own = params["split_reports"]
    anatomies = own["anatomies"] or list(params["segment"]["anatomies"]) \
        or list(load_lexicon(own["lexicon"])["anatomy_terms"])
    return {**own, "anatomies": list(anatomies), "linker_settings": linker_settings(params["link_concepts"]),
            "deid_key": None if own["study_key_kind"] == "none" else deid_key(params)}


@flow(name="split_reports")
def split_reports_flow(params: dict) -> dict:
    return run_sharded(SPLIT_REPORTS, stage_config(params), params["split_reports"]["output_dir"])


if __name__ == "__main__":
    run_stage_cli(split_reports_flow)
