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
        return f"| {name} | n/a | | | |"
    if isinstance(entry, dict) and "value" in entry:
        value = f"{entry['value']:.3f}" if entry["value"] is not None else "n/a"
        return f"| {name} | {value} | {_ci_text(entry.get('ci95'))} | {entry.get('n', '')} | {entry.get('groups', '')} |"
    return f"| {name} | {entry:.3f} | | | |" if isinstance(entry, (int, float)) else f"| {name} | {entry} | | | |"


def splits_section(split: dict, unit: str, items: str, tuning: dict, training_steps: str) -> list[str]:
    """Markdown lines: the three sides with their sizes, what was chosen on validation (each
    candidate's validation score), and that test is scored once."""
    counts = split["counts"]
    lines = ["## Splits and what was tuned on what", "",
             f"Deterministic by {unit} (`split`: by {split['by']}, validation_fraction {split['validation_fraction']}, "
             f"test_fraction {split['test_fraction']}, salt `{split['salt']}`); no {unit} is on two sides.", "",
             f"| side | {items} | {unit}s | used for |", "|---|---|---|---|"]
    use = {"train": "gradient steps", "validation": "the training loss curve (curve.csv) and every choice below",
           "test": "the metrics of this card, scored once"}
    lines += [f"| {side} | {c['items']} | {c['units']} | {use[side]} |" for side, c in counts.items()]
    lines += ["", f"- Training: {training_steps}; it never reads the test side.",
              f"- Evaluation: chosen on validation ({tuning['validation_units']} {unit}s, {tuning['validation_items']} "
              f"{items}) by {tuning['criterion']}; test is scored once, with the choice.", "",
              "| candidate | validation macro AUC | chosen |", "|---|---|---|"]
    for c in tuning["candidates"]:
        shown = ", ".join(f"{k}={v}" for k, v in c["candidate"].items())
        auc = c["validation_macro_auc"]
        lines.append(f"| {shown} | {'n/a (single candidate)' if auc is None else f'{auc:.3f}'} | "
                     f"{'yes' if c['candidate'] == tuning['chosen'] else ''} |")
    return lines


def per_label_section(title: str, aucs: dict[str, float], support: dict[str, dict], unit: str) -> list[str]:
    """Markdown lines: each label's test AUC with the items, positives and units behind it."""
    lines = [f"## {title}", "", f"| label | AUC | positives / items | {unit}s |", "|---|---|---|---|"]
    for name, auc in aucs.items():
        s = support.get(name, {})
        lines.append(f"| {name} | {auc:.3f} | {s.get('positives', '')} / {s.get('items', '')} | {s.get('units', '')} |")
    return lines


def _ci_text(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def ct_rate_section(mapping: dict[str, list[str]], source: str, table: str, per_label: dict, not_scored: dict,
                    macro: dict | None, interval: str) -> list[str]:
    """Markdown lines: the label -> anatomy mapping, where the truth came from, each scored
    label's AUC with its interval, the macro, and the labels left out with the reason."""
    lines = ["## CT-RATE labels", "",
             "Each label is scored through one anatomy (`evaluate.ct_rate_label_anatomies`): the zero-shot "
             "probability of the label's prompt on that anatomy, on the test studies where it is usable.", ""]
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
               extra_sections: list[str], unit: str = "unit", items: str = "items") -> str:
    lines = [f"# {title}", "", "## Intended use", "", intended_use, "", "## Limits", ""]
    lines += [f"- {item}" for item in limits]
    lines += ["", "## Data", ""] + data_lines
    if licences:
        lines += ["", "Licence mix of the training articles:", ""]
        lines += [f"- {name}: {count}" for name, count in sorted(licences.items())]
    lines += ["", "## Training configuration", "", "```json", json.dumps(training, indent=2, sort_keys=True), "```"]
    lines += ["", f"## Test metrics (95% bootstrap intervals over {unit}s)", "",
              f"| metric | value | 95% CI | {items} | {unit}s |", "|---|---|---|---|---|"]
    lines += [_metric_line(name, entry) for name, entry in metric_rows]
    if extra_sections:
        lines += ["", *extra_sections]
    lines += ["", "## Lineage", "",
              f"Weights: `{artifact}`. The code version, every stage behind it with params, hashes and "
              f"exclusions by reason: `{lineage_record}` (rewritten at each run, not cached), or "
              f"`python -m flows.lineage {artifact}` (add `--verify` to re-hash the files).", ""]
    return "\n".join(lines)


def localisation_section(loc: dict | None) -> list[str]:
    """Markdown lines: pointing game and map AUC of the patch-concept maps against drawn
    findings, the model beside its two baselines, for all regions and the larger ones."""
    if not loc or not loc.get("all", {}).get("regions"):
        return ["## Localisation", "", "No drawn finding regions for the test figures (`evaluate.localisation.truth`)."]
    lines = ["## Localisation (test figures, drawn findings)", "",
             f"Patch grid {loc['grid']}x{loc['grid']}. Pointing game: the map's maximum cell holds finding pixels; "
             "map AUC: finding pixels ranked above the rest. Baselines: a centre prior and the untrained "
             "architecture. Intervals: bootstrap over articles.", "",
             "| regions | method | pointing game | 95% CI | map AUC | 95% CI | regions / figures / articles |",
             "|---|---|---|---|---|---|---|"]
    for subset in [k for k in loc if k == "all" or k.startswith("at_least_")]:
        s = loc[subset]
        for method in ("conceptclip", "untrained", "centre_prior"):
            if method not in s:
                continue
            p, a = s[method]["pointing_game"], s[method]["map_auc"]
            fmt = lambda e: "n/a" if e["value"] is None else f"{e['value']:.3f}"  # noqa: E731
            lines.append(f"| {subset.replace('_', ' ')} | {method} | {fmt(p)} | {_ci_text(p['ci95'])} | {fmt(a)} | "
                         f"{_ci_text(a['ci95'])} | {s['regions']} / {s['figures']} / {s['articles']} |")
    return lines
