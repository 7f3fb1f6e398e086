"""Decoding a planned DICOM CT series to an int16 HU volume, already in RAS+ order.

Slice by slice (memory: the output volume plus one decoded slice); uneven spacing is
interpolated onto the planned positions, gantry tilt shifted onto an orthogonal grid (both
where a tilted series is unevenly spaced too). Float pixel data or a non-finite rescale that
gives NaN or infinite HU is refused or set to air (ct_convert.non_finite_voxels).
"""
from __future__ import annotations

import math

import numpy as np

from tasks.common.rejection import Rejected
from tasks.ct.dicom_geometry import Geometry
from tasks.ct.dicom_series import FileHeader, Series
from tasks.ct.hu import (AIR_HU, HU_AIR, fill_non_finite, non_finite_count, non_finite_detail, non_finite_note,
                         rescale_to_hu)
from tasks.ct.nifti_io import canonical_view


def _frame_pixels(frame: FileHeader, opener=None) -> np.ndarray:
    """Stored values of one frame, shape (rows, columns)."""
    from pydicom.pixels import pixel_array

    source = opener(frame.path) if opener else frame.path
    if frame.frame is None:
        arr = pixel_array(source)
    else:
        arr = pixel_array(source, index=frame.frame)
    if arr.shape != (frame.rows, frame.cols):
        raise Rejected("corrupt_pixel_data", f"decoded frame shape {arr.shape} != {(frame.rows, frame.cols)}")
    return arr


def decode_series(series: Series, geometry: Geometry, opener=None, non_finite: str = "reject",
                  notes: list[str] | None = None) -> np.ndarray:
    """int16 HU volume in RAS+ order (shape geometry.canonical_shape).

    non_finite: ct_convert.non_finite_voxels for float pixel data (Float/Double Float Pixel
    Data) or a non-finite rescale; a note on the air fill goes to `notes`.
    """
    out = np.empty(geometry.canonical_shape, dtype=np.int16)
    view, _ = canonical_view(out, geometry.source_affine)  # (columns, rows, slices) view of `out`
    if geometry.resample == "uneven":
        stack = np.empty((view.shape[0], view.shape[1], len(geometry.frames)), dtype=np.int16)
        replaced = _fill(stack, geometry.frames, opener, non_finite)
        if geometry.tilt_shift is not None:  # each slice shifted by its own distance from the first
            _untilt(stack, geometry.tilt_shift, (geometry.positions - geometry.positions[0]) / geometry.slice_step)
        _interpolate_slices(stack, geometry.positions, geometry.target_positions, view)
    else:
        replaced = _fill(view, geometry.frames, opener, non_finite)
        if geometry.resample == "tilt":
            _untilt(view, geometry.tilt_shift)
    if replaced and notes is not None:
        notes.append(non_finite_note(replaced))
    return out


def _fill(view: np.ndarray, frames: list[FileHeader], opener, non_finite: str) -> int:
    """Decode every frame into view[:, :, k]; returns how many non-finite HU values became air."""
    bad_total = 0
    for k, frame in enumerate(frames):
        try:
            stored = _frame_pixels(frame, opener)
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected("corrupt_pixel_data",
                                 f"slice {k + 1} of {len(frames)} cannot be decoded ({type(exc).__name__})") from exc
        if np.issubdtype(stored.dtype, np.floating) or not (math.isfinite(frame.slope)
                                                           and math.isfinite(frame.intercept)):
            with np.errstate(invalid="ignore", over="ignore"):
                hu = stored.astype(np.float64) * frame.slope + frame.intercept
            bad = non_finite_count(hu)
            bad_total += bad
            if bad and non_finite != "air":
                continue  # refused once every slice is read, so the detail counts them all
            view[:, :, k] = rescale_to_hu(fill_non_finite(hu, AIR_HU) if bad else hu, 1.0, 0.0).T
        else:
            view[:, :, k] = rescale_to_hu(stored, frame.slope, frame.intercept).T
    total = view.shape[0] * view.shape[1] * len(frames)
    if bad_total and (non_finite != "air" or bad_total == total):
        raise Rejected("non_finite_voxels", non_finite_detail(bad_total, total)
                       + (" (none is finite)" if bad_total == total and non_finite == "air" else ""))
    return bad_total


def _interpolate_slices(stack: np.ndarray, positions: np.ndarray, targets: np.ndarray, view: np.ndarray) -> None:
    """Linear interpolation along the slice axis onto evenly spaced target positions."""
    upper = np.clip(np.searchsorted(positions, targets, side="left"), 1, len(positions) - 1)
    lower = upper - 1
    for k, (lo, hi, z) in enumerate(zip(lower, upper, targets)):
        w = (z - positions[lo]) / (positions[hi] - positions[lo])
        w = min(max(w, 0.0), 1.0)
        view[:, :, k] = np.rint((1 - w) * stack[:, :, lo] + w * stack[:, :, hi]).astype(np.int16)


def _untilt(view: np.ndarray, shift: tuple, offsets: np.ndarray | None = None) -> None:
    """Shift slice k in-plane by offsets[k] * drift (default k * drift) so the slices stack
    orthogonally; offsets are in slice steps (uneven spacing gives fractional ones)."""
    from scipy import ndimage

    dc, dr = shift
    for k in range(1, view.shape[2]):
        offset = float(k if offsets is None else offsets[k])
        moved = ndimage.shift(view[:, :, k].astype(np.float32), (offset * dc, offset * dr), order=1,
                              mode="constant", cval=HU_AIR)
        view[:, :, k] = np.rint(moved).astype(np.int16)
