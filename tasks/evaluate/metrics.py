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


def per_label_auc(labels: np.ndarray, scores: np.ndarray, names: list[str]) -> dict[str, float]:
    """labels, scores: (n_samples, n_labels). Labels lacking a class are left out."""
    out = {}
    for j, name in enumerate(names):
        value = auc_or_none(labels[:, j], scores[:, j])
        if value is not None:
            out[name] = value
    return out


def column_aucs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of every column at once (Mann-Whitney on tie-averaged ranks); NaN without both classes.

    Bootstrapping calls this thousands of times, so it avoids a per-label sklearn call.
    """
    labels = np.asarray(labels).astype(bool)
    ranks = rankdata(np.asarray(scores, dtype=float), axis=0)
    n_pos = labels.sum(axis=0)
    n_neg = labels.shape[0] - n_pos
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if labels.size == 0:
        return None
    values = column_aucs(labels, scores)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def recall_at_k(similarity: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """similarity[i, j]: query i against candidate j; the match of query i is candidate i."""
    ranks = (similarity > similarity[np.arange(len(similarity)), np.arange(len(similarity))][:, None]).sum(axis=1)
    return {f"R@{k}": float(np.mean(ranks < k)) for k in ks}


def bootstrap_ci(statistic, n: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile interval of statistic(indices) over resampled sample indices.

    `statistic` returns None on a resample where it is undefined; those are skipped.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        value = statistic(rng.integers(0, n, size=n))
        if value is not None:
            values.append(value)
    if len(values) < max(10, n_boot // 10):
        return None
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def macro_auc_with_ci(labels: np.ndarray, scores: np.ndarray, n_boot: int, seed: int) -> dict:
    point = macro_auc(labels, scores)
    ci = bootstrap_ci(lambda idx: macro_auc(labels[idx], scores[idx]), len(labels), n_boot, seed)
    return {"value": point, "ci95": list(ci) if ci else None, "n": int(len(labels))}


def auc_metrics(prefix: str, labels: np.ndarray, scores: np.ndarray, names: list[str], n_boot: int,
                seed: int) -> dict:
    """`<prefix>_macro_auc` with its bootstrap interval (None without labels) and `<prefix>_auc` per label."""
    return {
        f"{prefix}_macro_auc": macro_auc_with_ci(labels, scores, n_boot, seed) if names else None,
        f"{prefix}_auc": per_label_auc(labels, scores, names),
    }
