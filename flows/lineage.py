"""The auditor's command: which stages, data and code made an artifact.

    python -m flows.lineage data/train_conceptclip/model.safetensors            # text
    python -m flows.lineage <path> --json                                        # for machines
    python -m flows.lineage <path> --samples [--out samples.csv]                 # per-sample provenance
    python -m flows.lineage <path> --rev v1.0                                    # a past git revision
    python -m flows.lineage <path> --verify                                      # re-hash files vs dvc.lock

Also installed as `medconcept lineage ...`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tasks.lineage.provenance import Lineage, verify
from tasks.lineage.samples import sample_table


def _fmt_counts(counts: dict) -> list[str]:
    lines = []
    for path, c in counts.items():
        if "items_in" not in c:  # a metrics file that is not a stage summary (training curves' figures)
            continue
        reasons = ", ".join(f"{k}={v}" for k, v in (c.get("rejected_by_reason") or {}).items()) or "none"
        lines.append(f"    counts ({path}): in={c.get('items_in')} out={c.get('items_out')} "
                     f"rejected={c.get('rejected')} ({reasons})")
    return lines


def render_text(report: dict) -> str:
    code = report["code"]
    lines = [f"artifact: {report['artifact']}",
             f"code: {code['commit']} ({code['rev']}{', uncommitted changes' if code['uncommitted_changes'] else ''})",
             f"chain ({len(report['stages'])} stages, raw inputs first):"]
    for stage in report["stages"]:
        lines.append(f"  [{stage['stage']}]  cmd: {stage['cmd']}")
        lines.append(f"    upstream: {', '.join(stage['upstream']) or '(raw inputs)'}")
        for file, values in stage["params"].items():
            lines.append(f"    params ({file}): {json.dumps(values, sort_keys=True)}")
        for dep in stage["deps"]:
            lines.append(f"    dep  {dep['path']}  md5={dep.get('md5')}")
        for out in stage["outs"]:
            extra = f" nfiles={out['nfiles']}" if "nfiles" in out else ""
            lines.append(f"    out  {out['path']}  md5={out.get('md5')} size={out.get('size')}{extra}")
        lines += _fmt_counts(stage["counts"])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medconcept lineage", description="Trace an artifact's lineage.")
    parser.add_argument("path", help="a DVC-tracked artifact (checkpoint, shard, table) or a file inside one")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--samples", action="store_true", help="per-sample provenance table")
    parser.add_argument("--out", type=Path, help="with --samples: write the table (.csv or .parquet)")
    parser.add_argument("--rev", help="a git revision (tag, branch, commit) instead of the workspace")
    parser.add_argument("--verify", action="store_true", help="re-hash files on disk against dvc.lock")
    parser.add_argument("--repo", default=".", help="repository root (default: current folder)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lineage = Lineage(args.repo, rev=args.rev)
    try:
        report = lineage.report(args.path)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = 0
    if args.verify and args.rev:
        print("error: --verify checks the workspace; do not combine it with --rev", file=sys.stderr)
        return 2
    if not args.json and not args.samples:
        print(render_text(report))
    if args.samples:
        table = sample_table(lineage, args.path)
        if args.out:
            if args.out.suffix == ".parquet":
                table.to_parquet(args.out, index=False)
            else:
                table.to_csv(args.out, index=False)
        if args.json:
            report["samples"] = table.to_dict(orient="records")
        else:
            print(table.to_string(index=False, max_colwidth=40))
            print(f"{len(table)} samples")
    if args.verify:
        problems = verify(lineage, args.path)
        report["verify"] = {"ok": not problems, "mismatches": problems}
        status = 0 if not problems else 1
        if not args.json:
            for p in problems:
                print(f"MISMATCH [{p['stage']}] {p['kind']} {p['path']}: expected {p['expected']}, found {p['actual']}")
            print("verify: all hashes match dvc.lock" if not problems else f"verify: {len(problems)} mismatches")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
