"""Decoding a planned DICOM CT series to an int16 HU volume, already in RAS+ order.

Slice by slice (memory: the output volume plus one decoded slice); uneven spacing is
interpolated onto the planned positions, gantry tilt shifted onto an orthogonal grid.
"""
from __future__ import annotations

import numpy as np

from tasks.common.rejection import Rejected
from tasks.ct.dicom_geometry import Geometry
from tasks.ct.dicom_series import FileHeader, Series
from tasks.ct.hu import HU_AIR, rescale_to_hu
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


def decode_series(series: Series, geometry: Geometry, opener=None) -> np.ndarray:
    """int16 HU volume in RAS+ order (shape geometry.canonical_shape)."""
    out = np.empty(geometry.canonical_shape, dtype=np.int16)
    view, _ = canonical_view(out, geometry.source_affine)  # (columns, rows, slices) view of `out`
    if geometry.resample == "uneven":
        stack = np.empty((view.shape[0], view.shape[1], len(geometry.frames)), dtype=np.int16)
        _fill(stack, geometry.frames, opener)
        _interpolate_slices(stack, geometry.positions, geometry.target_positions, view)
        return out
    _fill(view, geometry.frames, opener)
    if geometry.resample == "tilt":
        _untilt(view, geometry.tilt_shift)
    return out


def _fill(view: np.ndarray, frames: list[FileHeader], opener) -> None:
    for k, frame in enumerate(frames):
        try:
            stored = _frame_pixels(frame, opener)
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected("corrupt_pixel_data",
                                 f"slice {k + 1} of {len(frames)} cannot be decoded ({type(exc).__name__})") from exc
        view[:, :, k] = rescale_to_hu(stored, frame.slope, frame.intercept).T


def _interpolate_slices(stack: np.ndarray, positions: np.ndarray, targets: np.ndarray, view: np.ndarray) -> None:
    """Linear interpolation along the slice axis onto evenly spaced target positions."""
    upper = np.clip(np.searchsorted(positions, targets, side="left"), 1, len(positions) - 1)
    lower = upper - 1
    for k, (lo, hi, z) in enumerate(zip(lower, upper, targets)):
        w = (z - positions[lo]) / (positions[hi] - positions[lo])
        w = min(max(w, 0.0), 1.0)
        view[:, :, k] = np.rint((1 - w) * stack[:, :, lo] + w * stack[:, :, hi]).astype(np.int16)


def _untilt(view: np.ndarray, shift: tuple) -> None:
    """Shift slice k in-plane by k * drift so the slices stack orthogonally."""
    from scipy import ndimage

    dc, dr = shift
    for k in range(1, view.shape[2]):
        moved = ndimage.shift(view[:, :, k].astype(np.float32), (k * dc, k * dr), order=1,
                              mode="constant", cval=HU_AIR)
        view[:, :, k] = np.rint(moved).astype(np.int16)
