"""split_reports throughput: reports per CPU-second (= per core) and peak RSS on the
800 CT-RATE reports; and the long-report case: CPU time per KB of one report from 1 KB
to 400 KB, which must stay flat (time linear in a report's length).

    python benchmarks/reports.py --data ../shared/data [--index-dir /tmp/reports-bench-index]
                                 [--cases throughput,long]

Three configurations, each in this one process on one core, reports in shards of
`split_reports.reports_per_task` as the stage's tasks get them: the lexicon alone
(linker false), and the concept linker (QuickUMLS on the sample vocabulary, built
once into --index-dir) with linker_scope `unresolved` (the default) and `all`.
Start-up (scispaCy tokenizer, QuickUMLS databases) is timed apart from throughput.
Rates are per CPU-second of this process, so other work on shared cores does not
count; wall seconds are reported beside them. Writes benchmarks/results/reports.json.

Long reports (lexicon alone, `max_report_chars` lifted above the largest size): two
shapes of one report, each a single findings segment (no headers or impression markers:
the worst case, every clause sharing one scan): CT-RATE's sentences in order, and one
short sentence group repeated (the shape of "8,000 short sentences"). Each size runs
until a second of CPU; `ratio_400kb_over_1kb` is the time per KB at 400 KB over that at
1 KB (1.0: flat). Writes benchmarks/results/reports_long.json.
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


LONG_REPORT_KB = (1, 4, 16, 64, 128, 256, 400)
SHORT_SENTENCES = ("No pleural effusion. A 3 mm nodule in the right upper lobe. The heart is normal in size. "
                   "Mediastinal lymph nodes are enlarged. Calcified plaques in the aorta. ")
MIN_CPU_SECONDS = 1.0


def one_segment(text: str) -> str:
    """Report text as one findings segment: no impression markers, no header colons."""
    for mark in ('"', "•", "·", ":"):
        text = text.replace(mark, " " if mark != ":" else ",")
    return text


def long_report_case(cfg: dict, reports: list) -> dict:
    from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon

    largest = max(LONG_REPORT_KB) * 1000
    processor = ReportProcessor({**cfg, "max_report_chars": largest}, load_lexicon(cfg["lexicon"]), None)
    shapes = {"ct_rate_sentences": one_segment(" ".join(r["report_text"] for r in reports)),
              "short_sentences": SHORT_SENTENCES * (largest // len(SHORT_SENTENCES) + 1)}
    processor.process([ReportInput("warm-up", shapes["short_sentences"][:2000])])
    out = {}
    for shape, source in shapes.items():
        if len(source) < largest:
            raise SystemExit(f"long-report case: {shape} has {len(source)} characters, fewer than {largest}")
        sizes = []
        for kb in LONG_REPORT_KB:
            text = source[:kb * 1000]
            reps, cpu = 0, 0.0
            with PeakRSS() as rss:
                while cpu < MIN_CPU_SECONDS or reps == 0:
                    start = time.process_time()
                    [result] = processor.process([ReportInput(f"long-{kb}", text)])
                    cpu += time.process_time() - start
                    reps += 1
            if result.rejection:
                raise SystemExit(f"long-report case: {shape} {kb} KB rejected: {result.rejection}")
            sizes.append({"kb": kb, "repetitions": reps, "cpu_seconds_per_report": round(cpu / reps, 4),
                          "cpu_ms_per_kb": round(1000 * cpu / reps / kb, 3), "clauses": len(result.clauses),
                          "peak_rss_mb": round(rss.peak_total / 2**20, 1)})
            print(f"[long report] {shape} {kb} KB: {sizes[-1]['cpu_ms_per_kb']} ms/KB ({reps} runs)", flush=True)
        first, last = sizes[0]["cpu_ms_per_kb"], sizes[-1]["cpu_ms_per_kb"]
        out[shape] = {"sizes": sizes, "ratio_400kb_over_1kb": round(last / first, 3)}
    return {"benchmark": "split_reports_long_report", "cores": 1, "linker": "none",
            "unit": "CPU ms per KB of one report", "sizes_kb": list(LONG_REPORT_KB), "shapes": out,
            "ratio_400kb_over_1kb": max(v["ratio_400kb_over_1kb"] for v in out.values()),
            "flat_means": "a ratio near 1 (time linear in length); quadratic work doubles it with each doubling"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MEDCONCEPT_TEST_DATA", "../shared/data"))
    parser.add_argument("--index-dir", default="/tmp/medconcept-reports-bench-index")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cases", default="throughput,long", help="comma-separated: throughput, long")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    if not cases <= {"throughput", "long"}:
        parser.error(f"--cases: unknown {sorted(cases - {'throughput', 'long'})}")

    from flows.split_reports import stage_config

    params = load_params(args.params)
    base = stage_config(params)
    with open(Path(args.data) / "reports" / "ct_rate" / "train.csv", newline="", encoding="utf-8") as handle:
        reports = list(csv.DictReader(handle))
    if "long" in cases:
        write_result("reports_long", long_report_case({**base, "linker": False}, reports))
    if "throughput" not in cases:
        return

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
