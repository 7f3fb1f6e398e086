"""DICOM CT series: header scan (no pixels) and grouping by SeriesInstanceUID.

1. `scan_file(path)` reads one file's header into `FileHeader`s, one per frame
   (classic CT: one; enhanced multi-frame CT: one per frame).
2. `group_series(headers)` groups frames by SeriesInstanceUID.
Geometry checks follow in `dicom_geometry`, decoding to HU in `dicom_pixels`.

Raw identifiers stay in memory between steps; nothing here writes them anywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import pydicom
from pydicom.errors import InvalidDicomError

from tasks.common.locations import OPEN_ERRORS, UNREADABLE_SOURCE

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


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
    except OPEN_ERRORS as exc:  # not the file's content: the path is not there for this worker
        return FileProblem(path, UNREADABLE_SOURCE, f"the file cannot be opened ({type(exc).__name__})")
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
