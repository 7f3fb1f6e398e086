"""Hounsfield units: rescale stored values, replace or refuse non-finite voxels, clip padding,
check plausibility, summarize."""
from __future__ import annotations

import numpy as np

from tasks.common.rejection import Rejected

HU_AIR = -1024  # padding floor: values below it are outside the reconstruction circle
AIR_HU = -1000  # air by the definition of the Hounsfield scale: the fill for non-finite voxels
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


def non_finite_count(values: np.ndarray) -> int:
    """NaN and infinite values (0 for integer data, which cannot hold them)."""
    if not np.issubdtype(values.dtype, np.floating):
        return 0
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def non_finite_detail(count: int, total: int, where: str = "voxels") -> str:
    return f"{count} of {total} {where} are NaN or infinite"


def check_non_finite(values: np.ndarray, policy: str, where: str = "voxels") -> int:
    """How many values are NaN or infinite, under ct_convert.non_finite_voxels.

    reject: any of them raises Rejected("non_finite_voxels"); air: they are counted, to be
    filled. A volume with no finite value is refused under either policy: filling it would
    invent an all-air scan.
    """
    count = non_finite_count(values)
    if count and (policy == "reject" or count == values.size):
        raise Rejected("non_finite_voxels", non_finite_detail(count, values.size, where)
                       + (" (none is finite)" if count == values.size and policy != "reject" else ""))
    return count


def fill_non_finite(values: np.ndarray, fill: float) -> np.ndarray:
    """`values` with NaN and infinities set to `fill`, in place where the array is writable."""
    if not values.flags.writeable:
        values = np.array(values)
    values[~np.isfinite(values)] = fill
    return values


def replace_non_finite(values: np.ndarray, policy: str, fill: float, where: str = "voxels"
                       ) -> tuple[np.ndarray, int]:
    """check_non_finite, then fill_non_finite: (values, how many were replaced)."""
    count = check_non_finite(values, policy, where)
    return (fill_non_finite(values, fill) if count else values), count


def non_finite_note(count: int) -> str:
    return f"{count} non-finite voxels (NaN or infinite) set to air ({AIR_HU} HU)"


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
