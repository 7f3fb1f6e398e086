"""Negation/assertion engines on captions and reports: the measures that chose the one kept.

    python benchmarks/assertion_engines.py --data ../shared/data [--base REV] [--index-dir DIR]

Engines: `assertion` (tasks/common/assertion.py, the one in use) and the two it replaced,
read from git at --base, the last commit that had them: `negex` (tasks/reports/assertion.py,
regex triggers on report clauses) and `context` (tasks/linking/context.py, ConText on
tokens; here fed the linker's scispaCy tokens). Each runs behind the interface the report
processor and the linker call (scan, within, flags, decide), with the settings its
stage gave it: the processor's clause scope, the linker's `link_concepts` values.

Measures, per engine:
- ct_rate: split_reports labels against CT-RATE's manual labels, macro-F1 (all 800 reports,
  and the held-out quarter of tests/test_reports_ctrate.py);
- caption_cases / report_cases: the negation cases of tests/test_linking.py and
  tests/test_reports_rules.py, how many the engine gets right;
- sample_captions: the linker on generated captions (tests/test_linking.py's recovery test):
  affirmed findings against the truth, and present findings marked negated;
- medpix: on 145 real MedPix captions (MeSH 2017 index), mentions marked negated or
  uncertain, and the mentions whose flags differ from the kept engine's (no gold: to read).
BC5CDR scores mention spans and IDs only, never the negation flags: it is run once with
negation on and once off, and the figures must agree. Writes benchmarks/results/assertion_engines.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401  (offline defaults)
from benchmarks._measure import write_result  # noqa: E402
from tasks.common.assertion import ABSENT, PRESENT, UNCERTAIN, AssertionRules  # noqa: E402
from tasks.common.params import load_params  # noqa: E402

BASE = "7f210523fe89522b4628d3c1b499751243a50916"  # both former engines, before they were folded
FLAG_OF = {ABSENT: (True, False), UNCERTAIN: (False, True), PRESENT: (False, False)}


def module_at(rev: str, path: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType(f"_at_{rev[:7]}_" + path.replace("/", "_")[:-3])
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev[:7]}:{path}", "exec"), module.__dict__)
    return module


class _Engine:
    """flags() per engine; decide() and classify() follow from it."""

    def decide(self, scan, start, end):
        negated, uncertain = self.flags(scan, start, end)
        return ABSENT if negated else UNCERTAIN if uncertain else PRESENT

    def classify(self, text, start, end):
        return self.decide(self.scan(text), start, end)


class LegacyNegex(_Engine):
    class Scan:
        def __init__(self, found, terms):
            self.found, self.terms = found, terms

        def within(self, start, end):
            clause = [t for t in self.found if start <= t.start and t.end <= end]
            return LegacyNegex.Scan(clause, [x for x in self.terms if start <= x[0] and x[1] <= end])

    def __init__(self, module):
        from tasks.common.terms import ascii_lower

        self.classifier, self.lower = module.AssertionClassifier(), ascii_lower

    def scan(self, text):
        return self.Scan(*self.classifier.triggers_in(self.lower(text)))

    def flags(self, scan, start, end):
        return FLAG_OF[self.classifier.decide(scan.found, scan.terms, start, end)]


class LegacyContext(_Engine):
    class Scan:
        def __init__(self, tokens, rules):
            self.tokens, self.rules, self._status = tokens, rules, None

        def within(self, start, end):
            return LegacyContext.Scan([t for t in self.tokens if start <= t[0] and t[1] <= end], self.rules)

        def status(self):
            if self._status is None:
                self._status = self.rules.token_status([t[2] for t in self.tokens])
            return self._status

    def __init__(self, module, rules, max_scope):
        from tasks.common.nlp import make_pipeline

        self.rules = module.ContextRules(rules, max_scope)
        self.tokenizer = make_pipeline(None, split_hyphens=True, sentencizer=None).tokenizer

    def scan(self, text):
        return self.Scan([(t.idx, t.idx + len(t), t.lower_) for t in self.tokenizer(text)], self.rules)

    def flags(self, scan, start, end):
        # as the linker did: the mention's first token decides
        first = next((i for i, t in enumerate(scan.tokens) if t[0] < end and start < t[1]), None)
        if first is None:
            return False, False
        negated, uncertain = scan.status()
        return negated[first], uncertain[first]


def engines(base: str, link: dict) -> dict:
    """name -> (engine for report clauses, engine for caption sentences)."""
    negex = LegacyNegex(module_at(base, "tasks/reports/assertion.py"))
    context = module_at(base, "tasks/linking/context.py")
    return {
        "assertion": (AssertionRules(), AssertionRules(link["context_rules"], link["context_max_scope"])),
        "negex": (negex, negex),
        "context": (LegacyContext(context, {}, link["context_max_scope"]),
                    LegacyContext(context, link["context_rules"], link["context_max_scope"])),
    }


def ct_rate(engine, data: Path, params: dict) -> dict:
    from flows.split_reports import stage_config
    from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon
    from tests.helpers.report_scores import heldout, score_labels

    with open(data / "reports" / "ct_rate" / "train.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cfg = stage_config(params)
    processor = ReportProcessor(cfg, load_lexicon(ROOT / cfg["lexicon"]))
    processor.assertion = engine
    results = processor.process([ReportInput(r["AccessionNo"], r["report_text"]) for r in rows])
    labels = list(cfg["labels"])
    out = {}
    for part in ("all", "heldout"):
        keep = [part == "all" or heldout(r["AccessionNo"]) for r in rows]
        out[f"macro_f1_{part}"] = score_labels(
            [{k: int(r[k]) for k in labels} for r, k in zip(rows, keep) if k],
            [res.labels for res, k in zip(results, keep) if k], labels)["macro_f1"]
    return out


def unit_cases(caption_engine, report_engine) -> dict:
    from tests.test_linking import CAPTION_NEGATION_CASES, word_span
    from tests.test_reports_rules import REPORT_ASSERTION_CASES

    caption_wrong = [f"{w} in {s!r}" for s, w, want in CAPTION_NEGATION_CASES
                     if caption_engine.flags(caption_engine.scan(s), *word_span(s, w)) != want]
    report_wrong = [f"{w} in {s!r}" for s, w, want in REPORT_ASSERTION_CASES
                    if report_engine.classify(s, s.index(w), s.index(w) + len(w)) != want]
    return {"caption_cases": f"{len(CAPTION_NEGATION_CASES) - len(caption_wrong)}/{len(CAPTION_NEGATION_CASES)}",
            "caption_wrong": caption_wrong,
            "report_cases": f"{len(REPORT_ASSERTION_CASES) - len(report_wrong)}/{len(REPORT_ASSERTION_CASES)}",
            "report_wrong": report_wrong}


def sample_captions(linker) -> dict:
    import numpy as np

    from tasks.sample import captions
    from tasks.sample.catalogue import FINDINGS, IMAGE_KINDS

    finding_cuis = {f.cui for f in FINDINGS.values()}
    rng = np.random.default_rng(7)  # tests/test_linking.py's captions
    tp = fp = fn = negated = negated_present = 0
    for kind in IMAGE_KINDS:
        for _ in range(40):
            present = captions.choose_findings(rng, kind)
            mentions = linker.link(captions.panel_sentence(rng, kind, present, n_negated=int(rng.integers(0, 3))))
            truth = set(captions.finding_cuis(present))
            affirmed = {m.cui for m in mentions if not m.negated and not m.uncertain} & finding_cuis
            marked = {m.cui for m in mentions if m.negated}
            negated, negated_present = negated + len(marked), negated_present + len(marked & truth)
            tp, fp, fn = tp + len(affirmed & truth), fp + len(affirmed - truth), fn + len(truth - affirmed)
    return {"affirmed_tp": tp, "affirmed_fp": fp, "affirmed_fn": fn, "negated": negated,
            "present_marked_negated": negated_present}


def medpix_flags(linker, captions: list[str]) -> dict[tuple, tuple[bool, bool]]:
    return {(i, m.start, m.end, m.text): (m.negated, m.uncertain)
            for i, mentions in enumerate(linker.link_many(captions)) for m in mentions}


def build_indexes(index_dir: Path, data: Path, params: dict) -> tuple[Path, Path]:
    from tasks.sample import vocabulary
    from tasks.umls.index import build_index
    from tasks.umls.mesh import mesh_to_rrf

    sample, mesh = index_dir / "sample", index_dir / "mesh"
    if not (sample / "index" / "concepts.parquet").is_file():
        vocabulary.generate_shard({"sample": {**params["sample"], "output_dir": str(sample)}}, "vocabulary")
        build_index(sample / "umls" / "META", sample / "index", params["umls_index"],
                    semantic_groups_file=sample / "umls" / "SemGroups.txt")
    if not (mesh / "index" / "concepts.parquet").is_file():
        mesh_to_rrf(data / "umls" / "mesh2017" / "2017MeshTree.txt", mesh / "META", True)
        build_index(mesh / "META", mesh / "index", params["umls_index"],
                    semantic_groups_file=mesh / "META" / "SemGroups.txt")
    return sample / "index", mesh / "index"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MEDCONCEPT_TEST_DATA", "../shared/data"))
    parser.add_argument("--base", default=BASE, help="git revision holding the two former engines")
    parser.add_argument("--index-dir", default="/tmp/medconcept-assertion-bench")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = parser.parse_args()

    from tasks.linking.linker import ConceptLinker
    from tests.helpers import bc5cdr

    data, params = Path(args.data), load_params(args.params)
    link = params["link_concepts"]
    sample_index, mesh_index = build_indexes(Path(args.index_dir), data, params)
    every_group = {**link, "semantic_groups": None, "stop_concepts": []}  # as tests/test_linking.py
    sample_linker = ConceptLinker.from_index(sample_index, every_group)
    mesh_linker = ConceptLinker.from_index(mesh_index, every_group)
    medpix_file = data / "captions" / "medpix" / "descriptions.jsonl"
    medpix = [json.loads(line)["Description"]["Caption"].lstrip(">")
              for line in medpix_file.read_text(encoding="utf-8").splitlines()]

    out = {"benchmark": "assertion_engines", "base": args.base, "engines": {}}
    kept_flags = None
    for name, (report_engine, caption_engine) in engines(args.base, link).items():
        row = {**ct_rate(report_engine, data, params), **unit_cases(caption_engine, report_engine)}
        sample_linker.assertion = mesh_linker.assertion = caption_engine
        row["sample_captions"] = sample_captions(sample_linker)
        flags = medpix_flags(mesh_linker, medpix)
        kept_flags = kept_flags or flags
        differ = sorted(key for key in flags if flags[key] != kept_flags.get(key))
        row["medpix"] = {"mentions": len(flags), "negated": sum(n for n, _ in flags.values()),
                         "uncertain": sum(u for _, u in flags.values()), "differ_from_kept": len(differ),
                         "differing (negated, uncertain): kept -> this": sorted({
                             f"{text!r} in '...{medpix[i][max(0, s - 70):e + 70]}...': "
                             f"{kept_flags.get(key)} -> {flags[key]}"
                             for key in differ for i, s, e, text in [key]})}
        out["engines"][name] = row
        print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'medpix'})}", flush=True)

    docs = bc5cdr.read_pubtator(data / "umls" / "bc5cdr" / "CDR_dev.PubTator")
    bc5 = {**link, "semantic_groups": ["DISO", "CHEM"], "stop_concepts": ["D004194", "D013577"]}
    scores = {}
    for negation in (True, False):
        linker = ConceptLinker.from_index(mesh_index, {**bc5, "negation": negation})
        result = bc5cdr.evaluate(docs, bc5cdr.linker_predictor(linker))
        scores[f"negation_{'on' if negation else 'off'}"] = {k: v["f1"] for k, v in result.items()}
    scores["negation_ignored"] = scores["negation_on"] == scores["negation_off"]
    out["bc5cdr_f1"] = scores
    write_result("assertion_engines", out)


if __name__ == "__main__":
    main()
