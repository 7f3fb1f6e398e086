"""Slice geometry and QA of a DICOM CT series: sort along the slice normal, check, plan the grid.

`plan_geometry(series, policy)` checks orientation, matrix, spacing, duplicates, gaps and
gantry tilt and returns a `Geometry` (with any resampling it needs), or raises
`Rejected(reason, detail)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tasks.common.rejection import Rejected
from tasks.ct.dicom_series import FileHeader, Series
from tasks.ct.nifti_io import canonical_shape, canonical_view

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Geometry:
    frames: list[FileHeader]  # sorted along the slice normal (inferior to superior for axial)
    source_affine: np.ndarray  # RAS affine of the (column, row, slice) grid
    canonical_affine: np.ndarray
    canonical_shape: tuple
    source_shape: tuple  # (columns, rows, slices) after any resampling
    positions: np.ndarray  # frame positions projected on the normal (mm)
    notes: list[str]
    resample: str | None = None  # None, "uneven" (a tilt then resampled too) or "tilt"
    tilt_shift: tuple | None = None  # in-plane drift (columns, rows) per output slice step, for tilt
    target_positions: np.ndarray | None = None  # for uneven resampling
    slice_step: float = 0.0  # mm between output slices


@dataclass(frozen=True)
class Policy:
    """What to do with imperfect series: params ct_convert.* (their defaults are in the
    schema, tasks/schema/ct.py), and two fixed rules that are not params."""

    min_slices: int
    uneven_spacing: str  # reject | resample  (gaps from missing slices included)
    gantry_tilt: str  # reject | resample
    duplicate_positions: str  # reject | drop (keep the first of each position)
    spacing_tolerance: float  # relative deviation of a slice step from the median
    tilt_tolerance_deg: float
    max_voxels: int
    orientation_tolerance: float = 1e-4  # direction cosines
    drop_localizers: bool = True

    @classmethod
    def from_params(cls, section: dict) -> "Policy":
        return cls(**{name: section[name] for name in PARAM_FIELDS})


PARAM_FIELDS = ("min_slices", "uneven_spacing", "gantry_tilt", "duplicate_positions", "spacing_tolerance",
                "tilt_tolerance_deg", "max_voxels")


def _first_value_problem(frames, attr, tolerance=None):
    ref = getattr(frames[0], attr)
    for frame in frames[1:]:
        value = getattr(frame, attr)
        if tolerance is None:
            if value != ref:
                return ref, value
        elif value is None or ref is None or np.max(np.abs(np.subtract(value, ref))) > tolerance:
            return ref, value
    return None


def plan_geometry(series: Series, policy: Policy) -> Geometry:
    frames = list(series.frames)
    first = frames[0]
    notes: list[str] = []
    if first.modality != "CT":
        raise Rejected("not_ct", f"modality {first.modality or 'missing'}, only CT is converted")
    if policy.drop_localizers:
        kept = [f for f in frames if "LOCALIZER" not in f.image_type]
        if not kept:
            raise Rejected("localizer", "series holds only localizer (scout) images")
        if len(kept) < len(frames):
            notes.append(f"dropped {len(frames) - len(kept)} localizer images")
        frames = kept
    if any(f.samples_per_pixel != 1 for f in frames) or any(
            f.photometric not in ("MONOCHROME2", "") for f in frames):
        raise Rejected("unsupported_photometric",
                             f"{first.photometric}, {first.samples_per_pixel} samples per pixel")
    if len(frames) < max(policy.min_slices, 2):
        what = "one-slice series" if len(frames) == 1 else f"{len(frames)} slices"
        reason = "single_slice" if len(frames) == 1 else "too_few_slices"
        raise Rejected(reason, f"{what}; at least {max(policy.min_slices, 2)} needed for a volume")
    if any(f.position is None or f.orientation is None or f.pixel_spacing is None for f in frames):
        raise Rejected("missing_geometry", "ImagePositionPatient, ImageOrientationPatient or PixelSpacing missing")
    mixed = _first_value_problem(frames, "rows") or _first_value_problem(frames, "cols")
    if mixed:
        sizes = sorted({(f.rows, f.cols) for f in frames})
        raise Rejected("inconsistent_matrix", f"slices of different sizes {sizes}")
    if _first_value_problem(frames, "orientation", policy.orientation_tolerance):
        raise Rejected("inconsistent_orientation", "slices with different ImageOrientationPatient")
    if _first_value_problem(frames, "pixel_spacing", 1e-4):
        raise Rejected("inconsistent_pixel_spacing", "slices with different PixelSpacing")
    rows, cols = first.rows, first.cols
    if rows * cols * len(frames) > policy.max_voxels:
        raise Rejected("too_large", f"{cols}x{rows}x{len(frames)} voxels above limit {policy.max_voxels}")

    iop = np.asarray(first.orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # row_dir: along a row (column index grows)
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(
            row_dir @ col_dir) > 1e-3:
        raise Rejected("invalid_orientation", "ImageOrientationPatient is not two orthonormal vectors")
    normal = np.cross(row_dir, col_dir)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    frames = [frames[i] for i in order]
    positions, along = positions[order], along[order]

    steps = np.diff(along)
    dup = steps < 1e-3
    if dup.any():
        if policy.duplicate_positions == "reject":
            raise Rejected("duplicate_positions", f"{int(dup.sum())} slices share a position")
        keep = np.concatenate([[True], ~dup])
        frames = [f for f, k in zip(frames, keep) if k]
        positions, along = positions[keep], along[keep]
        steps = np.diff(along)
        notes.append(f"dropped {int(dup.sum())} slices at duplicate positions")
        if len(frames) < max(policy.min_slices, 2):
            raise Rejected("too_few_slices", f"{len(frames)} distinct positions")

    row_spacing, col_spacing = first.pixel_spacing  # between rows, between columns
    nominal = usual_step(steps, policy.spacing_tolerance)
    deviation = np.abs(steps - nominal) / nominal
    resample = None
    target_positions = None
    if (deviation > policy.spacing_tolerance).any():
        reason, detail = spacing_problem(steps, nominal, policy.spacing_tolerance)
        if policy.uneven_spacing == "reject":
            raise Rejected(reason, detail)
        # Whole steps only: the last target stays inside the scanned range (no extrapolation).
        count = int(np.floor((along[-1] - along[0]) / nominal + policy.spacing_tolerance)) + 1
        target_positions = along[0] + nominal * np.arange(count)
        resample = "uneven"
        notes.append(f"resampled to uniform {nominal:.4g} mm ({reason}: {detail})")

    # Gantry tilt: the slice origins drift in-plane as they advance along the slice normal.
    extent = float(along[-1] - along[0])
    lateral = (positions[-1] - positions[0]) - extent * normal  # in-plane drift over the series
    tilt_deg = math.degrees(math.atan2(float(np.linalg.norm(lateral)), extent))
    tilt_shift = None
    if tilt_deg > policy.tilt_tolerance_deg:
        if policy.gantry_tilt == "reject":
            raise Rejected("gantry_tilt", f"slices sheared by {tilt_deg:.2f} degrees (gantry tilt)")
        step = nominal if resample else extent / (len(along) - 1)
        per_step = lateral * step / extent
        tilt_shift = (float(per_step @ row_dir) / col_spacing, float(per_step @ col_dir) / row_spacing)
        if resample:  # each slice is shifted by its own distance from the first, then interpolated
            notes.append(f"gantry tilt {tilt_deg:.2f} degrees resampled to an orthogonal grid, with the spacing")
        else:
            resample = "tilt"
            notes.append(f"gantry tilt {tilt_deg:.2f} degrees resampled to an orthogonal grid")

    slice_step = nominal if resample else (along[-1] - along[0]) / (len(along) - 1)
    n_slices = len(target_positions) if target_positions is not None else len(frames)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = normal * slice_step
    lps[:3, 3] = positions[0]
    source_affine = LPS_TO_RAS @ lps
    source_shape = (cols, rows, n_slices)
    canon_shape = canonical_shape(source_shape, source_affine)
    _view, canon_affine = canonical_view(np.empty(canon_shape, dtype=np.int8), source_affine)
    return Geometry(frames=frames, source_affine=source_affine, canonical_affine=canon_affine,
                    canonical_shape=canon_shape, source_shape=source_shape, positions=along, notes=notes,
                    resample=resample, tilt_shift=tilt_shift, target_positions=target_positions,
                    slice_step=float(slice_step))


def step_groups(steps: np.ndarray, tolerance: float) -> list[tuple[float, int]]:
    """Slice steps grouped by value (within `tolerance` relative to the median step):
    [(the group's median step, how many)], in the order the groups first occur along the series."""
    width = max(tolerance * float(np.median(steps)), 1e-3)
    order = np.argsort(steps, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and steps[i] - steps[groups[-1][0]] <= width:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    groups.sort(key=min)
    return [(float(np.median(steps[g])), len(g)) for g in groups]


def usual_step(steps: np.ndarray, tolerance: float) -> float:
    """The series' usual slice step: the most frequent step (the finer one on a tie)."""
    groups = step_groups(steps, tolerance)
    return min(groups, key=lambda g: (-g[1], g[0]))[0]


def _mm(value: float) -> str:
    text = f"{value:.3g}"
    return text if "." in text or "e" in text else text + ".0"


def spacing_problem(steps: np.ndarray, usual: float, tolerance: float) -> tuple[str, str]:
    """(reason, detail) for steps that deviate from the usual one. missing_slices only when
    every deviating step is a whole multiple of the usual step (slices left out of an even
    series); anything else is uneven_spacing, with the steps found."""
    multiple = np.rint(steps / usual)
    off = np.abs(steps - usual) > tolerance * usual
    whole = (multiple >= 2) & (np.abs(steps - multiple * usual) <= tolerance * usual * multiple)
    if np.all(whole[off]):
        missing = int(np.sum(multiple[off] - 1))
        return "missing_slices", (f"{missing} slice(s) missing: gap of {steps[off].max():.3g} mm "
                                  f"for {usual:.3g} mm spacing")
    shown = step_groups(steps, tolerance)
    listed = ", ".join(f"{_mm(value)} mm x{count}" for value, count in shown[:8])
    more = f", and {len(shown) - 8} other step values" if len(shown) > 8 else ""
    return "uneven_spacing", (f"steps {listed}{more} (slice positions along the normal; usual step "
                              f"{_mm(usual)} mm, tolerance {tolerance:.0%})")
