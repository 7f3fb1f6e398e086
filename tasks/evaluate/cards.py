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
        value = f"{entry['value']:.3f}" if entry["value"] is not None else "n/a"
        return f"| {name} | {value} | {_ci_text(entry.get('ci95'))} |"
    return f"| {name} | {entry:.3f} | |" if isinstance(entry, (int, float)) else f"| {name} | {entry} | |"


def _ci_text(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def ct_rate_section(mapping: dict[str, list[str]], source: str, table: str, per_label: dict, not_scored: dict,
                    macro: dict | None, interval: str) -> list[str]:
    """Markdown lines: the label -> anatomy mapping, where the truth came from, each scored
    label's AUC with its interval, the macro, and the labels left out with the reason."""
    lines = ["## CT-RATE labels", "",
             "Each label is scored through one anatomy (`evaluate.ct_rate_label_anatomies`): the zero-shot "
             "probability of the label's prompt on that anatomy, on the held-out studies where it is usable.", ""]
    lines += [f"- {anatomy}: {', '.join(labels)}" for anatomy, labels in mapping.items()] or ["- none mapped"]
    what = ("CT-RATE's own label table" if source == "reference"
            else "the labels split_reports derives from the report text")
    lines += ["", f"Label source: {source} (`evaluate.label_source`), {what}: `{table}`. Intervals: {interval}.", "",
              "| label | anatomy | AUC | 95% CI | positives / studies |", "|---|---|---|---|---|"]
    for label, e in per_label.items():
        auc = f"{e['auc']:.3f}" if e["auc"] is not None else "n/a"
        lines.append(f"| {label} | {e['anatomy']} | {auc} | {_ci_text(e['ci'])} | {e['positives']} / {e['n']} |")
    if macro and macro.get("value") is not None:
        lines.append(f"| **macro ({len(per_label)} labels)** | | {macro['value']:.3f} | {_ci_text(macro.get('ci95'))} | |")
    if not_scored:
        lines += ["", "Not scored:", ""]
        lines += [f"- {label}: {e['reason']} ({e['detail']})" for label, e in not_scored.items()]
    return lines


def model_card(title: str, intended_use: str, limits: list[str], data_lines: list[str], licences: Counter,
               training: dict, metric_rows: list[tuple[str, object]], artifact: str, lineage_record: str,
               extra_sections: list[str]) -> str:
    lines = [f"# {title}", "", "## Intended use", "", intended_use, "", "## Limits", ""]
    lines += [f"- {item}" for item in limits]
    lines += ["", "## Data", ""] + data_lines
    if licences:
        lines += ["", "Licence mix of the training articles:", ""]
        lines += [f"- {name}: {count}" for name, count in sorted(licences.items())]
    lines += ["", "## Training configuration", "", "```json", json.dumps(training, indent=2, sort_keys=True), "```"]
    lines += ["", "## Held-out metrics (95% bootstrap intervals)", "", "| metric | value | 95% CI |", "|---|---|---|"]
    lines += [_metric_line(name, entry) for name, entry in metric_rows]
    if extra_sections:
        lines += ["", *extra_sections]
    lines += ["", "## Lineage", "",
              f"Weights: `{artifact}`. The code version, every stage behind it with params, hashes and "
              f"exclusions by reason: `{lineage_record}` (rewritten at each run, not cached), or "
              f"`python -m flows.lineage {artifact}` (add `--verify` to re-hash the files).", ""]
    return "\n".join(lines)
