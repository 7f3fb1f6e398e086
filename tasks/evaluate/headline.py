"""The few figures per model that `dvc metrics show/diff data/evaluate/metrics.json` prints.

Flat scalars only (DVC leaves lists out of its tables): zero-shot macro AUC with its 95%
interval as two numbers, the test items, units and labels it rests on (the test split,
scored once), ConceptCLIP's
retrieval R@K and fVLM's macro AUC over CT-RATE's labels with its interval. Everything else (per-label AUCs, retrieval intervals, PC-Align annotation
AUC, CT-RATE per label) stays in metrics_detail.json beside it.
"""
from __future__ import annotations


def _interval(entry: dict | None) -> dict:
    entry = entry or {}
    ci = entry.get("ci95") or [None, None]
    return {"macro_auc": entry.get("value"), "macro_auc_ci_low": ci[0], "macro_auc_ci_high": ci[1]}


def conceptclip_headline(m: dict) -> dict:
    out = _interval(m.get("zero_shot_macro_auc"))
    out.update(n_figures=m["test_figures"], n_articles=m["test_articles"], n_concepts=m["concepts_evaluated"])
    for name, entry in sorted((m.get("retrieval") or {}).items()):  # image_to_text_R@1 -> i2t_R@1
        short = name.replace("image_to_text_", "i2t_").replace("text_to_image_", "t2i_")
        out[short] = entry["value"] if isinstance(entry, dict) else entry
    return out


def fvlm_headline(m: dict) -> dict:
    out = _interval(m.get("zero_shot_macro_auc"))
    out.update(n_studies=m["test_studies"], n_patients=m["test_patients"], n_pairs=m["pairs_evaluated"])
    # the macro over CT-RATE's labels, each through its anatomy (per label: metrics_detail.json);
    # left out where undefined (no label scored): DVC's tables hold numbers only
    out.update({f"ct_rate_{k}": v for k, v in _interval(m["ct_rate_macro_auc"]).items() if v is not None})
    out["n_ct_rate_labels"] = len(m["ct_rate_labels"])
    return out


HEADLINES = {"conceptclip": conceptclip_headline, "fvlm": fvlm_headline}


def headline(metrics_by_model: dict[str, dict]) -> dict[str, dict]:
    """{model: full metrics} -> {model: headline figures}."""
    unknown = sorted(set(metrics_by_model) - set(HEADLINES))
    if unknown:
        raise ValueError(f"no headline figures defined for model(s) {unknown}; known: {sorted(HEADLINES)}")
    return {name: HEADLINES[name](m) for name, m in sorted(metrics_by_model.items())}
