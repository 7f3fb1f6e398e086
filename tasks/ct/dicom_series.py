"""DICOM CT series: header scan, grouping, slice geometry and QA, decoding to HU.

Three steps, each a plain function so the flow can fan them out:

1. `scan_file(path)` reads one file's header (no pixels) into `FileHeader`s, one
   per frame (classic CT: one; enhanced multi-frame CT: one per frame).
2. `group_series(headers)` groups frames by SeriesInstanceUID.
3. `plan_geometry(series, policy)` sorts frames along the slice normal and checks
   orientation, matrix, spacing, duplicates, gaps and gantry tilt; it returns a
   `Geometry` or raises `SeriesRejected(reason, detail)`.
   `decode_series(series, geometry)` fills an int16 HU array, already in RAS+
   order, slice by slice (memory: the output volume plus one decoded slice).

Raw identifiers stay in memory between steps; nothing here writes them anywhere.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from tasks.ct.hu import HU_AIR, rescale_to_hu
from tasks.ct.nifti_io import canonical_shape, canonical_view

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SeriesRejected(Exception):
    """A series that cannot become a volume; `reason` is the rejected table's code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class FileHeader:
    """One frame of one file, with the few header values conversion needs."""

    path: str
    frame: int | None  # frame index in an enhanced multi-frame file, else None
    series_uid: str
    ids: dict  # raw PatientID, StudyInstanceUID, SeriesInstanceUID, AccessionNumber
    modality: str
    sop_class: str
    transfer_syntax: str
    rows: int
    cols: int
    position: tuple | None  # ImagePositionPatient (LPS, mm)
    orientation: tuple | None  # ImageOrientationPatient (6 direction cosines)
    pixel_spacing: tuple | None  # (between rows, between columns) mm
    slope: float
    intercept: float
    samples_per_pixel: int
    photometric: str
    image_type: tuple
    slice_thickness: float | None
    info: dict = field(default_factory=dict)  # non-identifying acquisition fields


@dataclass
class FileProblem:
    path: str
    reason: str
    detail: str


@dataclass
class Series:
    series_uid: str
    frames: list[FileHeader]

    @property
    def first(self) -> FileHeader:
        return self.frames[0]

    @property
    def files(self) -> list[str]:
        return sorted({f.path for f in self.frames})


@dataclass
class Geometry:
    frames: list[FileHeader]  # sorted along the slice normal (inferior to superior for axial)
    source_affine: np.ndarray  # RAS affine of the (column, row, slice) grid
    canonical_affine: np.ndarray
    canonical_shape: tuple
    source_shape: tuple  # (columns, rows, slices) after any resampling
    positions: np.ndarray  # frame positions projected on the normal (mm)
    notes: list[str]
    resample: str | None = None  # None, "uneven" or "tilt"
    tilt_shift: tuple | None = None  # per-slice in-plane shift (columns, rows) for tilt
    target_positions: np.ndarray | None = None  # for uneven resampling


# -- 1. header scan -----------------------------------------------------------

# Tags read for acquisition context; none identifies a person, place or device.
# Free-text tags (descriptions, protocol names) are left out: they sometimes carry names.
_INFO_TAGS = ("Manufacturer", "ManufacturerModelName", "KVP", "ConvolutionKernel", "BodyPartExamined",
              "ContrastBolusAgent")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _floats(value, n: int) -> tuple | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _float(value, default: float | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _functional(ds, index: int, sequence: str):
    """Item of a functional group for frame `index`: per-frame first, then shared."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        item = groups[index] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        seq = item.get(sequence)
        if seq:
            return seq[0]
    return None


def scan_file(path: str, opener=None, missing_uid: str = "folder", root: str | None = None
              ) -> list[FileHeader] | FileProblem:
    """Header of one file (pixels not read). `opener(path)` gives a file object for URLs.

    missing_uid: what to do with files whose SeriesInstanceUID was blanked (some
    anonymizers do this): "folder" groups them by their folder (and SeriesNumber),
    which then also stands in for the missing patient and study; "reject" rejects them.
    """
    try:
        source = opener(path) if opener else path
        ds = pydicom.dcmread(source, stop_before_pixels=True)
    except InvalidDicomError as exc:
        return FileProblem(path, "not_dicom", f"not a DICOM file ({type(exc).__name__})")
    except Exception as exc:  # truncated headers raise many kinds of errors
        return FileProblem(path, "unreadable_file", f"header cannot be read ({type(exc).__name__})")
    series_uid = _text(ds.get("SeriesInstanceUID"))
    ids = {
        "PatientID": _text(ds.get("PatientID")),
        "StudyInstanceUID": _text(ds.get("StudyInstanceUID")),
        "SeriesInstanceUID": series_uid,
        "AccessionNumber": _text(ds.get("AccessionNumber")),
    }
    if not series_uid:
        if missing_uid != "folder":
            return FileProblem(path, "missing_series_uid", "no SeriesInstanceUID")
        folder = os.path.dirname(os.path.relpath(path, root) if root else path).replace(os.sep, "/")
        if folder in ("", "."):  # files directly in the input folder: name them after it
            folder = os.path.basename(os.path.abspath(root or os.path.dirname(path)))
        number = _text(ds.get("SeriesNumber"))
        # like a NIfTI input's stem, the folder name is what provided masks are named after
        series_uid = f"{folder}#{number}" if number else folder
        ids["SeriesInstanceUID"] = series_uid
        ids["StudyInstanceUID"] = ids["StudyInstanceUID"] or f"folder:{folder}"
        ids["PatientID"] = ids["PatientID"] or f"folder:{folder}"
    meta = getattr(ds, "file_meta", None)
    common = dict(
        path=path,
        series_uid=series_uid,
        ids=ids,
        modality=_text(ds.get("Modality")).upper(),
        sop_class=_text(ds.get("SOPClassUID")),
        transfer_syntax=_text(meta.get("TransferSyntaxUID")) if meta is not None else "",
        rows=int(ds.get("Rows") or 0),
        cols=int(ds.get("Columns") or 0),
        samples_per_pixel=int(ds.get("SamplesPerPixel") or 1),
        photometric=_text(ds.get("PhotometricInterpretation")),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        info={tag: _text(ds.get(tag)) for tag in _INFO_TAGS if ds.get(tag) not in (None, "")},
    )
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if ds.get("PerFrameFunctionalGroupsSequence") is not None or (
            common["sop_class"] == ENHANCED_CT_IMAGE_STORAGE):
        headers = []
        for index in range(n_frames):
            plane = _functional(ds, index, "PlanePositionSequence")
            orient = _functional(ds, index, "PlaneOrientationSequence")
            measures = _functional(ds, index, "PixelMeasuresSequence")
            transform = _functional(ds, index, "PixelValueTransformationSequence")
            headers.append(FileHeader(
                frame=index,
                position=_floats(plane.get("ImagePositionPatient") if plane else None, 3),
                orientation=_floats(orient.get("ImageOrientationPatient") if orient else None, 6),
                pixel_spacing=_floats(measures.get("PixelSpacing") if measures else None, 2),
                slope=_float(transform.get("RescaleSlope") if transform else None, 1.0),
                intercept=_float(transform.get("RescaleIntercept") if transform else None, 0.0),
                slice_thickness=_float(measures.get("SliceThickness") if measures else None, None),
                **common,
            ))
        return headers
    if n_frames > 1:
        return FileProblem(path, "unsupported_multiframe", f"{n_frames} frames without functional groups")
    return [FileHeader(
        frame=None,
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        slope=_float(ds.get("RescaleSlope"), 1.0),
        intercept=_float(ds.get("RescaleIntercept"), 0.0),
        slice_thickness=_float(ds.get("SliceThickness"), None),
        **common,
    )]


def scan_files(paths: Iterable[str], opener=None, missing_uid: str = "folder", root: str | None = None
               ) -> tuple[list[FileHeader], list[FileProblem]]:
    headers: list[FileHeader] = []
    problems: list[FileProblem] = []
    for path in paths:
        result = scan_file(path, opener, missing_uid, root)
        if isinstance(result, FileProblem):
            problems.append(result)
        else:
            headers.extend(result)
    return headers, problems


# -- 2. grouping --------------------------------------------------------------

def group_series(headers: Iterable[FileHeader]) -> list[Series]:
    """Frames grouped by SeriesInstanceUID; series and frames in a stable order."""
    groups: dict[str, list[FileHeader]] = {}
    for header in headers:
        groups.setdefault(header.series_uid, []).append(header)
    return [Series(uid, sorted(frames, key=lambda f: (f.path, f.frame if f.frame is not None else -1)))
            for uid, frames in sorted(groups.items())]


# -- 3. geometry and QA -------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """What to do with imperfect series (params ct_convert.*)."""

    min_slices: int = 2
    uneven_spacing: str = "reject"  # reject | resample  (gaps from missing slices included)
    gantry_tilt: str = "resample"  # reject | resample
    duplicate_positions: str = "reject"  # reject | drop (keep the first of each position)
    spacing_tolerance: float = 0.02  # relative deviation of a slice step from the median
    orientation_tolerance: float = 1e-4  # direction cosines
    tilt_tolerance_deg: float = 0.05
    max_voxels: int = 1024 * 1024 * 2048
    drop_localizers: bool = True

    @classmethod
    def from_params(cls, section: dict) -> "Policy":
        names = cls.__dataclass_fields__
        policy = cls(**{k: v for k, v in section.items() if k in names})
        for name, allowed in (("uneven_spacing", ("reject", "resample")), ("gantry_tilt", ("reject", "resample")),
                              ("duplicate_positions", ("reject", "drop"))):
            if getattr(policy, name) not in allowed:
                raise ValueError(f"ct_convert.{name} must be one of {allowed}, got {getattr(policy, name)!r}")
        return policy


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
        raise SeriesRejected("not_ct", f"modality {first.modality or 'missing'}, only CT is converted")
    if policy.drop_localizers:
        kept = [f for f in frames if "LOCALIZER" not in f.image_type]
        if not kept:
            raise SeriesRejected("localizer", "series holds only localizer (scout) images")
        if len(kept) < len(frames):
            notes.append(f"dropped {len(frames) - len(kept)} localizer images")
        frames = kept
    if any(f.samples_per_pixel != 1 for f in frames) or any(
            f.photometric not in ("MONOCHROME2", "") for f in frames):
        raise SeriesRejected("unsupported_photometric",
                             f"{first.photometric}, {first.samples_per_pixel} samples per pixel")
    if len(frames) < max(policy.min_slices, 2):
        what = "one-slice series" if len(frames) == 1 else f"{len(frames)} slices"
        reason = "single_slice" if len(frames) == 1 else "too_few_slices"
        raise SeriesRejected(reason, f"{what}; at least {max(policy.min_slices, 2)} needed for a volume")
    if any(f.position is None or f.orientation is None or f.pixel_spacing is None for f in frames):
        raise SeriesRejected("missing_geometry", "ImagePositionPatient, ImageOrientationPatient or PixelSpacing missing")
    mixed = _first_value_problem(frames, "rows") or _first_value_problem(frames, "cols")
    if mixed:
        sizes = sorted({(f.rows, f.cols) for f in frames})
        raise SeriesRejected("inconsistent_matrix", f"slices of different sizes {sizes}")
    if _first_value_problem(frames, "orientation", policy.orientation_tolerance):
        raise SeriesRejected("inconsistent_orientation", "slices with different ImageOrientationPatient")
    if _first_value_problem(frames, "pixel_spacing", 1e-4):
        raise SeriesRejected("inconsistent_pixel_spacing", "slices with different PixelSpacing")
    rows, cols = first.rows, first.cols
    if rows * cols * len(frames) > policy.max_voxels:
        raise SeriesRejected("too_large", f"{cols}x{rows}x{len(frames)} voxels above limit {policy.max_voxels}")

    iop = np.asarray(first.orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # row_dir: along a row (column index grows)
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(
            row_dir @ col_dir) > 1e-3:
        raise SeriesRejected("invalid_orientation", "ImageOrientationPatient is not two orthonormal vectors")
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
            raise SeriesRejected("duplicate_positions", f"{int(dup.sum())} slices share a position")
        keep = np.concatenate([[True], ~dup])
        frames = [f for f, k in zip(frames, keep) if k]
        positions, along = positions[keep], along[keep]
        steps = np.diff(along)
        notes.append(f"dropped {int(dup.sum())} slices at duplicate positions")
        if len(frames) < max(policy.min_slices, 2):
            raise SeriesRejected("too_few_slices", f"{len(frames)} distinct positions")

    row_spacing, col_spacing = first.pixel_spacing  # between rows, between columns
    nominal = float(np.median(steps))
    deviation = np.abs(steps - nominal) / nominal
    resample = None
    target_positions = None
    if (deviation > policy.spacing_tolerance).any():
        gaps = steps > 1.5 * nominal
        if gaps.any():
            missing = int(np.sum(np.rint(steps[gaps] / nominal) - 1))
            reason, detail = "missing_slices", (
                f"{missing} slice(s) missing: gap of {steps[gaps].max():.3g} mm for {nominal:.3g} mm spacing")
        else:
            reason, detail = "uneven_spacing", (
                f"slice steps {steps.min():.3g}-{steps.max():.3g} mm deviate more than "
                f"{policy.spacing_tolerance:.0%} from {nominal:.3g} mm")
        if policy.uneven_spacing == "reject":
            raise SeriesRejected(reason, detail)
        count = int(round((along[-1] - along[0]) / nominal)) + 1
        target_positions = along[0] + nominal * np.arange(count)
        resample = "uneven"
        notes.append(f"resampled to uniform {nominal:.4g} mm ({reason}: {detail})")

    # Gantry tilt: the step between slice origins is not along the slice normal.
    step_vec = (positions[-1] - positions[0]) / (len(positions) - 1)
    step_len = float(np.linalg.norm(step_vec))
    tilt_deg = math.degrees(math.acos(min(1.0, abs(step_vec @ normal) / step_len)))
    tilt_shift = None
    if tilt_deg > policy.tilt_tolerance_deg:
        if policy.gantry_tilt == "reject":
            raise SeriesRejected("gantry_tilt", f"slices sheared by {tilt_deg:.2f} degrees (gantry tilt)")
        if resample is not None:
            raise SeriesRejected("gantry_tilt", f"gantry tilt {tilt_deg:.2f} degrees together with uneven spacing")
        lateral = step_vec - (step_vec @ normal) * normal  # in-plane drift per slice
        tilt_shift = (float(lateral @ row_dir) / col_spacing, float(lateral @ col_dir) / row_spacing)
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
                    resample=resample, tilt_shift=tilt_shift, target_positions=target_positions)


# -- 4. decoding ----------------------------------------------------------------

def _frame_pixels(frame: FileHeader, opener=None) -> np.ndarray:
    """Stored values of one frame, shape (rows, columns)."""
    from pydicom.pixels import pixel_array

    source = opener(frame.path) if opener else frame.path
    if frame.frame is None:
        arr = pixel_array(source)
    else:
        arr = pixel_array(source, index=frame.frame)
    if arr.shape != (frame.rows, frame.cols):
        raise SeriesRejected("corrupt_pixel_data", f"decoded frame shape {arr.shape} != {(frame.rows, frame.cols)}")
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
        except SeriesRejected:
            raise
        except Exception as exc:
            raise SeriesRejected("corrupt_pixel_data",
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
