"""split_reports throughput: reports per CPU-second (= per core) and peak RSS on the
800 CT-RATE reports.

    python benchmarks/reports.py --data ../shared/data [--index-dir /tmp/reports-bench-index]

Three configurations, each in this one process on one core, reports in shards of
`split_reports.reports_per_task` as the stage's tasks get them: the lexicon alone
(linker false), and the concept linker (QuickUMLS on the sample vocabulary, built
once into --index-dir) with linker_scope `unresolved` (the default) and `all`.
Start-up (scispaCy tokenizer, QuickUMLS databases) is timed apart from throughput.
Rates are per CPU-second of this process, so other work on shared cores does not
count; wall seconds are reported beside them. Writes benchmarks/results/reports.json.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flows  # noqa: E402,F401  (offline defaults)
from benchmarks._measure import PeakRSS, write_result  # noqa: E402
from tasks.common.params import load_params  # noqa: E402


def ensure_index(index_dir: Path, params: dict) -> Path:
    from tasks.sample import vocabulary
    from tasks.umls.index import build_index

    if not (index_dir / "index" / "concepts.parquet").is_file():
        vocabulary.generate_shard({"sample": {**params["sample"], "output_dir": str(index_dir)}}, "vocabulary")
        build_index(index_dir / "umls" / "META", index_dir / "index", params["umls_index"],
                    semantic_groups_file=index_dir / "umls" / "SemGroups.txt")
    return index_dir / "index"


def run(cfg: dict, link_params: dict, reports: list, linker) -> dict:
    from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon
    from tasks.reports.sentences import sentence_pipeline
    from tests.helpers.report_scores import score_labels

    wall, cpu = time.perf_counter(), time.process_time()
    sentence_pipeline(bool(cfg.get("scispacy_tokenizer", True)))
    processor = ReportProcessor(cfg, load_lexicon(cfg["lexicon"]), linker)
    startup_cpu = time.process_time() - cpu
    size = int(cfg.get("reports_per_task") or 200)
    wall, cpu = time.perf_counter(), time.process_time()
    results = []
    for i in range(0, len(reports), size):
        results.extend(processor.process([ReportInput(r["AccessionNo"], r["report_text"])
                                          for r in reports[i:i + size]]))
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    labels = list(cfg["labels"])
    scores = score_labels([{k: int(r[k]) for k in labels} for r in reports], [r.labels for r in results], labels)
    return {"reports": len(reports), "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
            "reports_per_cpu_second": round(len(reports) / cpu, 1), "startup_cpu_seconds": round(startup_cpu, 2),
            "clauses": sum(len(r.clauses) for r in results), "macro_f1": scores["macro_f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MEDCONCEPT_TEST_DATA", "../shared/data"))
    parser.add_argument("--index-dir", default="/tmp/medconcept-reports-bench-index")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    from flows.split_reports import stage_config

    params = load_params(args.params)
    base = stage_config(params)
    with open(Path(args.data) / "reports" / "ct_rate" / "train.csv", newline="", encoding="utf-8") as handle:
        reports = list(csv.DictReader(handle))

    out = {"benchmark": "split_reports", "data": "CT-RATE train.csv (800 reports)", "cores": 1, "runs": {}}
    with PeakRSS() as rss:
        out["runs"]["lexicon_only"] = run({**base, "linker": "false"}, {}, reports, None)
        peak_lexicon = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        from tasks.linking.linker import get_linker

        index = ensure_index(Path(args.index_dir), params)
        cpu = time.process_time()
        linker = get_linker(index, params["link_concepts"])
        linker_startup = round(time.process_time() - cpu, 2)
        for scope in ("unresolved", "all"):
            run_out = run({**base, "linker_scope": scope}, params.get("link_concepts") or {}, reports, linker)
            run_out["linker_startup_cpu_seconds"] = linker_startup
            out["runs"][f"linker_{scope}"] = run_out
    out["default"] = f"linker_{base.get('linker_scope', 'all')}"
    out["peak_rss_mb_lexicon_only"] = round(peak_lexicon / 1024, 1)
    out["peak_rss_mb"] = round(rss.peak_total / 2**20, 1)
    out["target_reports_per_cpu_second"] = 50
    write_result("reports", out)


if __name__ == "__main__":
    main()
