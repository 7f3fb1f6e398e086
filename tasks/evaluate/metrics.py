"""Ranking metrics with bootstrap confidence intervals (numpy + scikit-learn only)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score


def auc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=1) == labels.max(initial=0) or len(np.unique(labels)) < 2:
        return None  # AUC is undefined without both classes
    return float(roc_auc_score(labels, scores))


def per_label_auc(labels: np.ndarray, scores: np.ndarray, names: list[str],
                  valid: np.ndarray | None = None) -> dict[str, float]:
    """labels, scores: (n_samples, n_labels); valid: the cells that carry truth (all when
    None). Labels lacking a class are left out."""
    out = {}
    for j, name in enumerate(names):
        rows = slice(None) if valid is None else np.asarray(valid[:, j], dtype=bool)
        value = auc_or_none(labels[rows, j], scores[rows, j])
        if value is not None:
            out[name] = value
    return out


def column_aucs(labels: np.ndarray, scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """AUC of every column at once (Mann-Whitney on tie-averaged ranks); NaN without both classes.

    valid [N, L]: the cells that carry truth (an fVLM anatomy cut by the field of view has
    none); the others take no part in their column. Bootstrapping calls this thousands of
    times, so it avoids a per-label sklearn call.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    if valid is None:
        valid = np.ones(labels.shape, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    # Cells without truth rank below every real score: each real rank moves up by their count.
    excluded = (~valid).sum(axis=0)
    ranks = rankdata(np.where(valid, scores, -np.inf), axis=0) - excluded
    positive = labels & valid
    n_pos = positive.sum(axis=0)
    n_neg = valid.sum(axis=0) - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def macro_auc(labels: np.ndarray, scores: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    if labels.size == 0:
        return None
    values = column_aucs(labels, scores, valid)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def recall_at_k(similarity: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """similarity[i, j]: query i against candidate j; the match of query i is candidate i."""
    ranks = (similarity > similarity[np.arange(len(similarity)), np.arange(len(similarity))][:, None]).sum(axis=1)
    return {f"R@{k}": float(np.mean(ranks < k)) for k in ks}


def resampled_rows(groups, n_boot: int, seed: int):
    """Row indices of `n_boot` bootstrap resamples drawn by group: the groups (the split
    unit: a patient, an article) are drawn with replacement and every row of a drawn group
    comes along. Rows of one patient are not independent, so resampling them one by one
    would make intervals too narrow. With one group per row this is the plain bootstrap."""
    keys, inverse = np.unique(np.asarray(groups), return_inverse=True)  # sorted: no order dependence
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1])
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        picks = rng.integers(0, len(keys), size=len(keys))
        yield np.concatenate([members[k] for k in picks]) if len(keys) else np.zeros(0, dtype=int)


def n_groups(groups) -> int:
    return int(len(np.unique(np.asarray(groups)))) if len(groups) else 0


def _enough(values: list, n_boot: int) -> bool:
    return len(values) >= max(10, n_boot // 10)


def bootstrap_ci(statistic, groups, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile interval of statistic(row indices) over resamples of whole groups.

    groups: the resampling unit of each row (patient, article); `statistic` returns None on
    a resample where it is undefined; those are skipped.
    """
    values = []
    for rows in resampled_rows(groups, n_boot, seed):
        value = statistic(rows)
        if value is not None:
            values.append(value)
    if not _enough(values, n_boot):
        return None
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def macro_auc_with_ci(labels: np.ndarray, scores: np.ndarray, groups, n_boot: int, seed: int,
                      valid: np.ndarray | None = None) -> dict:
    """Macro AUC over the columns with its interval by a bootstrap over `groups`."""
    point = macro_auc(labels, scores, valid)
    mask = np.ones(labels.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    ci = bootstrap_ci(lambda rows: macro_auc(labels[rows], scores[rows], mask[rows]), groups, n_boot, seed)
    columns = int(np.isfinite(column_aucs(labels, scores, mask)).sum()) if labels.size else 0
    return {"value": point, "ci95": list(ci) if ci else None, "n": int(len(labels)), "groups": n_groups(groups),
            "columns": columns}


def column_aucs_with_ci(labels: np.ndarray, scores: np.ndarray, groups, n_boot: int, seed: int,
                        valid: np.ndarray | None = None, alpha: float = 0.05) -> list[dict]:
    """Per column: {"auc", "ci95"} (None where undefined), every column from the same
    group resamples as macro_auc_with_ci with the same seed."""
    mask = np.ones(labels.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    point = column_aucs(labels, scores, mask)
    draws = np.array([column_aucs(labels[rows], scores[rows], mask[rows])
                      for rows in resampled_rows(groups, n_boot, seed)]).reshape(-1, labels.shape[1])
    out = []
    for j in range(labels.shape[1]):
        values = draws[:, j][np.isfinite(draws[:, j])]
        ci = np.quantile(values, [alpha / 2, 1 - alpha / 2]) if _enough(list(values), n_boot) else None
        out.append({"auc": float(point[j]) if np.isfinite(point[j]) else None,
                    "ci95": [float(ci[0]), float(ci[1])] if ci is not None else None})
    return out


def column_support(labels: np.ndarray, groups, valid: np.ndarray | None = None) -> list[dict]:
    """Per column: the items (rows with truth), positives and units (groups) behind its figure."""
    labels = np.asarray(labels).astype(bool)
    mask = np.ones(labels.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    groups = np.asarray(groups)
    return [{"items": int(mask[:, j].sum()), "positives": int((labels[:, j] & mask[:, j]).sum()),
             "units": n_groups(groups[mask[:, j]])} for j in range(labels.shape[1])]


def auc_metrics(prefix: str, labels: np.ndarray, scores: np.ndarray, names: list[str], groups, n_boot: int,
                seed: int, valid: np.ndarray | None = None) -> dict:
    """`<prefix>_macro_auc` with its interval by group bootstrap (None without labels),
    `<prefix>_auc` per label and `<prefix>_support` per label (items, positives, units)."""
    aucs = per_label_auc(labels, scores, names, valid)
    support = dict(zip(names, column_support(labels, groups, valid))) if names else {}
    return {
        f"{prefix}_macro_auc": macro_auc_with_ci(labels, scores, groups, n_boot, seed, valid) if names else None,
        f"{prefix}_auc": aucs,
        f"{prefix}_support": {name: support[name] for name in aucs},
    }
