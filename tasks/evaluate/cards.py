"""Model cards (Markdown): use and limits, data, training configuration, metrics, lineage.

A card is a cached output, so it holds only what the evaluate stage's declared deps and
params determine: no git commit and nothing read from dvc.lock. The code version, the
chain of stages and their exclusions are in the uncached lineage record it points to.
"""
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


def model_card(title: str, intended_use: str, limits: list[str], data_lines: list[str], licences: Counter,
               training: dict, metric_rows: list[tuple[str, object]], artifact: str, lineage_record: str) -> str:
    lines = [f"# {title}", "", "## Intended use", "", intended_use, "", "## Limits", ""]
    lines += [f"- {item}" for item in limits]
    lines += ["", "## Data", ""] + data_lines
    if licences:
        lines += ["", "Licence mix of the training articles:", ""]
        lines += [f"- {name}: {count}" for name, count in sorted(licences.items())]
    lines += ["", "## Training configuration", "", "```json", json.dumps(training, indent=2, sort_keys=True), "```"]
    lines += ["", "## Held-out metrics (95% bootstrap intervals)", "", "| metric | value | 95% CI |", "|---|---|---|"]
    lines += [_metric_line(name, entry) for name, entry in metric_rows]
    lines += ["", "## Lineage", "",
              f"Weights: `{artifact}`. The code version, every stage behind it with params, hashes and "
              f"exclusions by reason: `{lineage_record}` (rewritten at each run, not cached), or "
              f"`python -m flows.lineage {artifact}` (add `--verify` to re-hash the files).", ""]
    return "\n".join(lines)
