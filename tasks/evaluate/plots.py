"""ROC curves (CSV for DVC plots, PNG for people) and explainability galleries."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def write_micro_roc_csv(labels: np.ndarray, scores: np.ndarray, path: Path) -> None:
    """Micro-averaged ROC over all (sample, label) cells; one curve a revision in `dvc plots`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fpr", "tpr"])
        if labels.size and 0 < labels.sum() < labels.size:
            fpr, tpr, _ = roc_curve(labels.ravel(), scores.ravel())
            for f, t in zip(fpr, tpr):
                writer.writerow([f"{f:.6f}", f"{t:.6f}"])


def roc_png(labels: np.ndarray, scores: np.ndarray, names: list[str], title: str, path: Path, max_curves: int = 12,
            valid: np.ndarray | None = None):
    """One ROC curve per label (the first max_curves); valid: the cells that carry truth."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    for j, name in enumerate(names[:max_curves]):
        rows = slice(None) if valid is None else valid[:, j]
        y = labels[rows, j]
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, scores[rows, j])
            ax.plot(fpr, tpr, lw=1.2, label=name[:40])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=6, loc="lower right")
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def patch_overlay_png(item: dict, path: Path) -> None:
    """The figure and, per concept, its patch-concept similarity upsampled over it; with
    `truth` (a mask per concept), the truth outline alone and over the map, side by side."""
    image = item["image"].permute(1, 2, 0).numpy()
    maps = item["maps"]
    truth = item.get("truth")
    n = len(item["concepts"])
    per = 2 if truth is not None else 1
    fig, axes = plt.subplots(1, per * n + 1, figsize=(3 * (per * n + 1), 3.4), dpi=100)
    axes[0].imshow(image)
    axes[0].set_title(item["key"][:30], fontsize=7)
    for k, (name, heat) in enumerate(zip(item["concepts"], maps)):
        if truth is not None:
            ax = axes[1 + per * k]
            ax.imshow(image)
            ax.contour(truth[k], levels=[0.5], colors=["#00ff66"], linewidths=1.2)
            ax.set_title(f"truth: {name}"[:30], fontsize=7)
        ax = axes[1 + per * k + per - 1]
        ax.imshow(image)
        ax.imshow(heat, cmap="inferno", alpha=0.5, extent=(0, image.shape[1], image.shape[0], 0),
                  interpolation="bilinear")
        if truth is not None:
            ax.contour(truth[k], levels=[0.5], colors=["#00ff66"], linewidths=0.8)
        ax.set_title(f"map: {name}"[:30], fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(item["caption"][:110], fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def study_png(volume: np.ndarray, masks: np.ndarray, anatomies: list[str], lines: list[str], title: str,
              path: Path) -> None:
    """Middle axial, coronal and sagittal slices with anatomy outlines and the model's top calls."""
    volume = volume.reshape((-1,) + volume.shape[-3:])[0]  # the first HU window's channel
    masks = masks.reshape((-1,) + masks.shape[-3:])
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.6), dpi=100)
    d, h, w = volume.shape
    cuts = [(volume[d // 2], masks[:, d // 2]), (volume[:, h // 2], masks[:, :, h // 2]),
            (volume[:, :, w // 2], masks[:, :, :, w // 2])]
    for ax, (img, m) in zip(axes, cuts):
        ax.imshow(img, cmap="gray")
        for k in range(m.shape[0]):
            if m[k].any():
                ax.contour(m[k].astype(float), levels=[0.5], linewidths=0.6,
                           colors=[plt.cm.tab20(k % 20)])
        ax.axis("off")
    fig.suptitle(title + "\n" + "; ".join(lines)[:160], fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
