"""Hounsfield units: rescale stored values, clip padding, check plausibility, summarize."""
from __future__ import annotations

import numpy as np

HU_AIR = -1024
INT16_MIN, INT16_MAX = -32768, 32767


def rescale_to_hu(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored pixel values -> int16 HU (rounded, saturated at the int16 range)."""
    slope = float(slope)
    intercept = float(intercept)
    if slope == 1.0 and intercept == int(intercept) and np.issubdtype(stored.dtype, np.integer):
        hu = stored.astype(np.int32) + int(intercept)  # integer path: exact and cheaper
    else:
        hu = np.rint(stored.astype(np.float32) * slope + intercept)
    return np.clip(hu, INT16_MIN, INT16_MAX).astype(np.int16)


def clip_padding(volume: np.ndarray, floor: int = HU_AIR) -> int:
    """Raise values below `floor` (padding outside the reconstruction circle) in place.

    Returns how many voxels were changed, for the conversion notes.
    """
    below = volume < floor
    count = int(below.sum())
    if count:
        volume[below] = floor
    return count


def hu_stats(volume: np.ndarray, max_samples: int = 2_000_000) -> dict:
    """min, max, mean, 1st/50th/99th percentile (percentiles on a strided sample)."""
    flat = volume.reshape(-1)
    step = max(1, flat.size // max_samples)
    sample = flat[::step]
    p01, p50, p99 = np.percentile(sample, [1, 50, 99])
    return {
        "hu_min": int(volume.min()),
        "hu_max": int(volume.max()),
        "hu_mean": round(float(volume.mean(dtype=np.float64)), 3),
        "hu_p01": float(p01),
        "hu_p50": float(p50),
        "hu_p99": float(p99),
    }


def plausibility_problem(stats: dict, max_p01: float, max_p99: float) -> str | None:
    """Why a volume does not look like CT in HU, or None.

    A CT in HU always holds some air or fat, so its 1st percentile is well below
    zero; an MR or unrescaled image does not. Metal aside, the 99th percentile of a
    CT stays below a few thousand HU.
    """
    if stats["hu_p01"] > max_p01:
        return f"1st percentile {stats['hu_p01']:.0f} HU above {max_p01:.0f}: no air or fat, not CT in HU"
    if stats["hu_p99"] > max_p99:
        return f"99th percentile {stats['hu_p99']:.0f} HU above {max_p99:.0f}"
    return None
