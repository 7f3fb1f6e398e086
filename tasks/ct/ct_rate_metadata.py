"""CT-RATE metadata CSVs and the choice of reconstruction per scan.

Metadata CSVs are keyed by `VolumeName` (the file name, scheme in
tasks.ct.ct_rate_names) with, among others, `RescaleSlope`, `RescaleIntercept`,
`XYSpacing` (text such as "[0.75, 0.75]": x then y, in that order), `ZSpacing`, and
optionally `ImageOrientationPatient` (six direction cosines, DICOM LPS) and
`ImagePositionPatient` (mm, LPS). Every CSV matching `ct_rate.metadata_glob` is read in
name order; a row with unusable values raises Rejected("bad_metadata").

Reconstructions: per study (scan), `first` keeps the lowest reconstruction number,
`thinnest` the smallest metadata ZSpacing (ties: the lowest number), `all` every one.
"""
from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tasks.common.rejection import Rejected
from tasks.ct.convert import relative
from tasks.ct.ct_rate_names import VolumeName, parse_volume_name

REQUIRED_COLUMNS = ("VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing")
# studies-row column -> metadata column (DICOM keyword); acquisition context only
CONTEXT_COLUMNS = (("manufacturer", "Manufacturer"), ("model", "ManufacturerModelName"), ("kvp", "KVP"),
                   ("kernel", "ConvolutionKernel"), ("body_part", "BodyPartExamined"),
                   ("contrast", "ContrastBolusAgent"))
_ABSENT = {"", "nan", "none", "null"}


@dataclass(frozen=True)
class VolumeMetadata:
    slope: float
    intercept: float
    spacing: tuple[float, float, float] | None        # mm along voxel axes 0, 1, 2 (XYSpacing x, y; ZSpacing)
    orientation: tuple[float, ...] | None             # ImageOrientationPatient, unit row then column cosines (LPS)
    position: tuple[float, float, float] | None       # ImagePositionPatient (mm, LPS)
    slice_thickness: float | None
    context: tuple[tuple[str, str | None], ...]       # (studies column, value) per CONTEXT_COLUMNS



@dataclass
class MetadataTable:
    rows: dict[VolumeName, list[dict]]   # raw rows per volume (several when CSVs repeat a name)
    files: int
    rows_read: int
    rows_bad_name: int                   # rows whose VolumeName is not in CT-RATE's scheme



# ---------------------------------------------------------------- metadata

def read_metadata(root: str | Path, pattern: str) -> MetadataTable:
    """Every CSV matching `pattern` under `root` (name order), rows grouped by volume."""
    root = Path(root)
    paths = sorted((p for p in root.glob(pattern) if p.is_file()), key=lambda p: (p.name, str(p)))
    if not paths:
        raise FileNotFoundError(f"no metadata CSV matches ct_convert.ct_rate.metadata_glob {pattern!r} "
                                f"under ct_convert.source {root}")
    rows: dict[VolumeName, list[dict]] = defaultdict(list)
    read = bad_name = 0
    for path in paths:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"metadata CSV {relative(str(path), str(root))} lacks columns {missing} "
                                 f"(ct_convert.ct_rate.metadata_glob {pattern!r})")
            for row in reader:
                read += 1
                try:
                    name = parse_volume_name(row["VolumeName"] or "")
                except Rejected:
                    bad_name += 1
                    continue
                rows[name].append({k: (v or "").strip() for k, v in row.items() if k is not None})
    return MetadataTable(rows=dict(rows), files=len(paths), rows_read=read, rows_bad_name=bad_name)


def _values(row: Mapping[str, str], column: str, count: int) -> tuple[float, ...] | None:
    """`count` finite numbers from a cell ("[0.75, 0.75]", "1.5", "1\\0\\0..."); None if empty."""
    value = row.get(column)
    text = "" if value is None else str(value).strip()
    if text.lower() in _ABSENT:
        return None
    inner = text[1:-1] if text[:1] + text[-1:] in ("[]", "()") else text
    tokens = [t for t in re.split(r"[,\s\\]+", inner.strip()) if t]
    try:
        values = tuple(float(t) for t in tokens)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise Rejected("bad_metadata", f"{column} {text[:60]!r} is not {count} finite number(s)")
    return values


def _positive(values: tuple[float, ...] | None, column: str) -> tuple[float, ...] | None:
    if values is not None and min(values) <= 0:
        raise Rejected("bad_metadata", f"{column} {list(values)} must be positive")
    return values


def _orientation(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    row, col = np.array(values[:3]), np.array(values[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise Rejected("bad_metadata", f"ImageOrientationPatient {list(values)} is not two orthogonal unit vectors")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return tuple(round(float(v), 9) for v in (*row, *col))


def parse_metadata(rows: Sequence[Mapping[str, str]]) -> VolumeMetadata:
    """The usable values of a volume's metadata row(s); raises Rejected("bad_metadata")."""
    distinct = {tuple(sorted(r.items())) for r in rows}
    if len(distinct) > 1:
        raise Rejected("bad_metadata", f"{len(rows)} metadata rows for this volume disagree")
    row = rows[0]
    slope, intercept = (_values(row, c, 1) for c in ("RescaleSlope", "RescaleIntercept"))
    if slope is None or intercept is None:
        raise Rejected("bad_metadata", "RescaleSlope or RescaleIntercept is empty")
    if slope[0] == 0:
        raise Rejected("bad_metadata", "RescaleSlope is 0")
    xy = _positive(_values(row, "XYSpacing", 2), "XYSpacing")
    z = _positive(_values(row, "ZSpacing", 1), "ZSpacing")
    if (xy is None) != (z is None):
        raise Rejected("bad_metadata", "XYSpacing and ZSpacing must be given together")
    thickness = _positive(_values(row, "SliceThickness", 1), "SliceThickness")
    context = tuple((col, row.get(tag) or None) for col, tag in CONTEXT_COLUMNS)
    return VolumeMetadata(
        slope=slope[0], intercept=intercept[0],
        spacing=(xy[0], xy[1], z[0]) if xy is not None else None,
        orientation=_orientation(_values(row, "ImageOrientationPatient", 6)),
        position=_values(row, "ImagePositionPatient", 3),
        slice_thickness=thickness[0] if thickness else None, context=context)


# ---------------------------------------------------------------- reconstructions

def select_reconstructions(candidates: Mapping[VolumeName, VolumeMetadata], rule: str) -> dict[VolumeName, VolumeName]:
    """For every candidate, the reconstruction of its study that is kept (itself when kept;
    with rule `all`, every candidate is kept)."""
    by_study: dict[str, list[VolumeName]] = defaultdict(list)
    for name in candidates:
        by_study[name.study].append(name)
    kept: dict[VolumeName, VolumeName] = {}
    for study in sorted(by_study):
        names = sorted(by_study[study], key=lambda n: n.reconstruction)
        if rule == "all":
            kept.update({n: n for n in names})
            continue
        if rule == "first":
            winner = names[0]
        elif rule == "thinnest":
            def z_spacing(n: VolumeName) -> float:
                found = candidates[n].spacing
                return found[2] if found else math.inf
            winner = min(names, key=lambda n: (z_spacing(n), n.reconstruction))
        else:
            raise ValueError(f"ct_convert.ct_rate.reconstructions: unknown rule {rule!r} (first | all | thinnest)")
        kept.update({n: winner for n in names})
    return kept
