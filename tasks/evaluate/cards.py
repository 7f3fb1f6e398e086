"""Model cards (Markdown): use and limits, data, training configuration, metrics, lineage."""
from __future__ import annotations

import json
from collections import Counter


def _metric_line(name: str, entry) -> str:
    if entry is None:
        return f"| {name} | n/a | |"
    if isinstance(entry, dict) and "value" in entry:
        ci = entry.get("ci95")
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
        return f"| {name} | {entry['value']:.3f} | {ci_text} |"
    return f"| {name} | {entry:.3f} | |" if isinstance(entry, (int, float)) else f"| {name} | {entry} | |"


def _exclusions(lineage: dict) -> list[str]:
    lines = []
    for stage in lineage["stages"]:
        for path, counts in stage["counts"].items():
            reasons = counts.get("rejected_by_reason") or {}
            if reasons:
                text = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
                lines.append(f"- `{stage['stage']}` excluded {counts.get('rejected', sum(reasons.values()))} "
                             f"of {counts.get('items_in')} {counts.get('unit', 'items')}: {text}")
    return lines or ["- no exclusions recorded"]


def _lineage_table(lineage: dict) -> list[str]:
    rows = ["| stage | outputs (md5) |", "|---|---|"]
    for stage in lineage["stages"]:
        outs = "<br>".join(f"`{o['path']}` {str(o.get('md5'))[:12]}" for o in stage["outs"])
        rows.append(f"| {stage['stage']} | {outs} |")
    return rows


def model_card(title: str, intended_use: str, limits: list[str], data_lines: list[str], licences: Counter,
               training: dict, metrics: dict, metric_rows: list[tuple[str, object]], lineage: dict) -> str:
    code = lineage["code"]
    lines = [f"# {title}", "", "## Intended use", "", intended_use, "", "## Limits", ""]
    lines += [f"- {item}" for item in limits]
    lines += ["", "## Data", ""] + data_lines
    if licences:
        lines += ["", "Licence mix of the training articles:", ""]
        lines += [f"- {name}: {count}" for name, count in sorted(licences.items())]
    lines += ["", "Exclusions and why:", ""] + _exclusions(lineage)
    lines += ["", "## Training configuration", "", "```json", json.dumps(training, indent=2, sort_keys=True), "```"]
    lines += ["", "## Held-out metrics (95% bootstrap intervals)", "", "| metric | value | 95% CI |", "|---|---|---|"]
    lines += [_metric_line(name, entry) for name, entry in metric_rows]
    lines += ["", "## Lineage", "", f"Code: `{code['commit']}`"
              + (" (with uncommitted changes)" if code.get("uncommitted_changes") else ""), ""]
    lines += _lineage_table(lineage)
    lines += ["", "Full chain with params and hashes: `python -m flows.lineage "
              f"{lineage['artifact']}`.", ""]
    return "\n".join(lines)
