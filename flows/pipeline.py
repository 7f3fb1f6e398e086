"""End-to-end flow: every dvc.yaml stage in DVC's order, each as a named Prefect sub-run.

Stages DVC finds up to date are skipped; the others are reproduced through DVC's
own API, so dvc.lock ends exactly as `dvc repro` leaves it.

    python -m flows.pipeline [--params FILE] [-S pipeline.retries=2]
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows._runtime import REPO_ROOT, ensure_prefect_api
from flows._stage import build_arg_parser
from tasks.common.params import load_params
from tasks.lineage.dag import reproduce_stage, stale_stages, stage_order


def _stage_summaries(root: Path, stage: str) -> dict:
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    summaries = {}
    for metric in stages[stage].get("metrics", []):
        path = root / (next(iter(metric)) if isinstance(metric, dict) else metric)
        if path.is_file() and path.suffix == ".json":
            summaries[str(path.relative_to(root))] = json.loads(path.read_text(encoding="utf-8"))
    return summaries


def _markdown(stage: str, status: str, summaries: dict) -> str:
    lines = [f"# {stage}: {status}", ""]
    for path, summary in summaries.items():
        lines += [f"## {path}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in summary.items()]
        lines.append("")
    return "\n".join(lines)


def run_stage_step(root: Path, stage: str) -> dict:
    logger = get_run_logger()
    changes = stale_stages(root, stage)
    if not changes:
        status = "up to date (skipped)"
    else:
        logger.info("%s is stale: %s", stage, changes)
        reproduce_stage(root, stage)
        status = "reproduced"
    summaries = _stage_summaries(root, stage)
    create_markdown_artifact(key=stage.replace("_", "-"), markdown=_markdown(stage, status, summaries),
                             description=f"medconcept stage {stage}")
    print(f"[pipeline] {stage}: {status}", flush=True)
    return {"stage": stage, "status": status, "summaries": summaries}


@flow(name="pipeline")
def pipeline_flow(params: dict, root: str = str(REPO_ROOT)) -> list[dict]:
    settings = params.get("pipeline") or {}
    retries = int(settings.get("retries", 1))
    delay = float(settings.get("retry_delay_seconds", 10))
    results = []
    for stage in stage_order(root):
        # One named sub-run per stage: Prefect's UI shows each with its summary artifact.
        step = flow(name=f"stage-{stage}", retries=retries, retry_delay_seconds=delay)(run_stage_step)
        results.append(step(Path(root), stage))
    return results


def main(argv=None) -> None:
    args = build_arg_parser("pipeline").parse_args(argv)
    params = load_params(args.params, args.overrides)
    ensure_prefect_api()
    results = pipeline_flow(params=params, root=str(Path.cwd()))
    ran = [r["stage"] for r in results if r["status"] == "reproduced"]
    print(f"[pipeline] done: {len(results)} stages, {len(ran)} reproduced ({', '.join(ran) or 'none'})")


if __name__ == "__main__":
    main()
