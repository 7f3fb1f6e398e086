"""CT-RATE input for ct_convert (`ct_convert.input_kind: ct_rate`).

A CT-RATE folder holds `<split>/<patient>/<study>/<series>.nii.gz` volumes (names in
tasks.ct.ct_rate_names) and metadata CSVs keyed by `VolumeName` (the file name) with,
among others, `RescaleSlope`, `RescaleIntercept`, `XYSpacing` (text such as
"[0.75, 0.75]": x then y, in that order), `ZSpacing`, and optionally
`ImageOrientationPatient` (six direction cosines, DICOM LPS) and `ImagePositionPatient`
(mm, LPS). Here, per volume:

- metadata: every CSV matching `ct_rate.metadata_glob` under the source is read, in name
  order; a volume without a row is rejected (`no_metadata_row`), a row with unusable
  values too (`bad_metadata`).
- reconstructions: per study (scan), `first` keeps the lowest reconstruction number,
  `thinnest` the smallest metadata ZSpacing (ties: the lowest number), `all` every one;
  the others are rejected (`reconstruction_not_selected`, naming the kept one).
- HU, applied exactly once. A header with its own scaling (scl_slope/scl_inter other than
  1/0, as nibabel applies them) gives `header`, and the metadata rescale is NOT applied
  on top. Otherwise the two candidates "as stored" and "slope * stored + intercept"
  compete: the one with more voxels inside `air_window` plus `tissue_window` wins if its
  air fraction reaches `min_air_fraction` (`already_hu` or `rescaled`); an identity
  rescale is `already_hu`; no winner is `hu_undetermined`. Air alone does not decide:
  rescaling values already in HU by intercept -1024 moves soft tissue (0..100 HU) into
  the air window, and a chest CT often holds more soft tissue than air; the true scale is
  the one with both air and soft tissue where they belong. `hu: rescale` applies the metadata
  rescale to the stored values (ignoring any header scaling); `hu: as_stored` takes the
  values as nibabel reads them (`header` when the header scales them, else `already_hu`).
  Whatever decided, the result needs `min_air_fraction` of air (else `implausible_hu`),
  then the stage's own HU plausibility check.
- geometry. The header "lacks" spacing when its qform_code and sform_code are both 0,
  or its zooms are all 1 with an identity-like affine: the metadata spacing wins, with
  the orientation of ImageOrientationPatient (else the header's axes) and the origin of
  ImagePositionPatient (else the header's). A header that agrees with the metadata within
  `spacing_tolerance` (relative) is used (`header=metadata`); one that contradicts it is
  overruled by the metadata spacing (`spacing_conflict: metadata`, the header's axes and
  origin kept) or rejected (`spacing_contradiction`). A metadata row without spacing
  leaves the header's geometry (`header`), or `no_spacing` when the header lacks it too.

The ImageOrientationPatient convention (voxel axis 0 along the row cosine, axis 1 along
the column cosine, axis 2 along their cross product) is the one CT-RATE's own header
fix-up script uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tasks.common.hashing import sha256_file
from tasks.common.rejection import Rejected
from tasks.common.tables import Rejection
from tasks.ct.convert import STAGE, check_affine, load_nifti, read_voxels, relative, write_volume
from tasks.ct.ct_rate_metadata import VolumeMetadata, parse_metadata, read_metadata, select_reconstructions
from tasks.ct.ct_rate_names import VolumeName, parse_volume_name, raw_ids
from tasks.ct.deid import pseudonym, pseudonyms, source_label
from tasks.ct.hu import AIR_HU, check_non_finite, fill_non_finite, non_finite_note, rescale_to_hu
from tasks.ct.nifti_io import spacing

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
HU_SAMPLE = 4_000_000   # voxels looked at when deciding the HU scale (every n-th, deterministic)



@dataclass(frozen=True)
class CtRateVolume:
    """One planned CT-RATE volume: what a conversion shard receives."""
    path: str
    name: VolumeName
    metadata: VolumeMetadata



@dataclass(frozen=True)
class HuDecision:
    source: str          # rescaled | already_hu | header
    slope: float         # applied to the stored values
    intercept: float
    note: str


@dataclass(frozen=True)
class GeometryDecision:
    source: str          # header | metadata | header=metadata
    affine: np.ndarray
    note: str


# ---------------------------------------------------------------- HU

def header_scaling(dataobj) -> tuple[float, float] | None:
    """The scl_slope/scl_inter nibabel applies to this image's data, or None when it applies none."""
    slope, inter = float(dataobj.slope), float(dataobj.inter)
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def air_fraction(stored: np.ndarray, slope: float, intercept: float, window: Sequence[float]) -> float:
    """Fraction of voxels whose slope * stored + intercept lies inside `window` (HU; the air
    window, or any other)."""
    low, high = sorted(((window[0] - intercept) / slope, (window[1] - intercept) / slope))
    inside = np.count_nonzero((stored >= low) & (stored <= high))
    return inside / max(stored.size, 1)


def decide_hu(stored: np.ndarray, scaling: tuple[float, float] | None, meta: VolumeMetadata,
              rate: Mapping) -> HuDecision:
    """How the stored values become HU, exactly once (see the module docstring). Whatever
    decided it, the HU must hold `min_air_fraction` of air, else Rejected("implausible_hu"):
    a forced rescale of values already in HU puts air near -2000 and is caught here."""
    flat = stored.ravel(order="K")  # a view in memory order; fractions on a strided sample bound the cost
    stored = flat[:: max(1, flat.size // HU_SAMPLE)]
    decision = _choose_hu(stored, scaling, meta, rate)
    window, minimum = rate["air_window"], rate["min_air_fraction"]
    air = air_fraction(stored, decision.slope, decision.intercept, window)
    if air < minimum:
        raise Rejected("implausible_hu", f"{decision.note}: only {air:.4f} of voxels in [{window[0]:g}, "
                                         f"{window[1]:g}] HU, at least {minimum:g} needed")
    return decision


def _choose_hu(stored: np.ndarray, scaling: tuple[float, float] | None, meta: VolumeMetadata,
               rate: Mapping) -> HuDecision:
    mode = rate["hu"]
    rescale = f"metadata slope {meta.slope:g} and intercept {meta.intercept:g}"
    if mode == "rescale":
        ignored = f"; header scl_slope {scaling[0]:g}/scl_inter {scaling[1]:g} ignored" if scaling else ""
        return HuDecision("rescaled", meta.slope, meta.intercept, f"hu: {rescale} applied (hu=rescale){ignored}")
    if scaling is not None and mode in ("auto", "as_stored"):
        return HuDecision("header", scaling[0], scaling[1],
                          f"hu: header scl_slope {scaling[0]:g}/scl_inter {scaling[1]:g} applied, "
                          f"{rescale} not applied again")
    if mode == "as_stored":
        return HuDecision("already_hu", 1.0, 0.0, f"hu: values as stored (hu=as_stored), {rescale} not applied")
    if mode != "auto":
        raise ValueError(f"ct_convert.ct_rate.hu: unknown mode {mode!r} (auto | rescale | as_stored)")
    if (meta.slope, meta.intercept) == (1.0, 0.0):
        return HuDecision("already_hu", 1.0, 0.0, "hu: identity rescale in the metadata, values as stored")
    air, tissue, minimum = rate["air_window"], rate["tissue_window"], rate["min_air_fraction"]
    scores = {}
    for label, slope, intercept in (("as stored", 1.0, 0.0), ("rescaled", meta.slope, meta.intercept)):
        scores[label] = (air_fraction(stored, slope, intercept, air), air_fraction(stored, slope, intercept, tissue))
    fractions = (f"air/soft-tissue fractions: {scores['as stored'][0]:.4f}/{scores['as stored'][1]:.4f} as stored, "
                 f"{scores['rescaled'][0]:.4f}/{scores['rescaled'][1]:.4f} rescaled")
    stored_score, rescaled_score = (sum(scores[label]) for label in ("as stored", "rescaled"))
    winner = "rescaled" if rescaled_score > stored_score else "as stored"
    if stored_score == rescaled_score or scores[winner][0] < minimum:
        raise Rejected("hu_undetermined", f"neither candidate wins ({fractions}; air at least {minimum:g} needed)")
    if winner == "rescaled":
        return HuDecision("rescaled", meta.slope, meta.intercept, f"hu: {rescale} applied ({fractions})")
    return HuDecision("already_hu", 1.0, 0.0, f"hu: already in HU, {rescale} not applied ({fractions})")


# ---------------------------------------------------------------- geometry

def header_lacks_spacing(header, affine: np.ndarray) -> str | None:
    """Why the header's spacing cannot be trusted, or None."""
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return "qform_code and sform_code are 0"
    zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    if np.allclose(zooms, 1.0) and np.allclose(np.abs(affine[:3, :3]), np.eye(3), atol=1e-6):
        return "unit zooms with an identity affine"
    return None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _with_spacing(affine: np.ndarray, new_spacing: Sequence[float]) -> np.ndarray:
    """`affine` with its axes rescaled to `new_spacing` mm, origin kept."""
    out = np.array(affine, dtype=float)
    axes = out[:3, :3] / np.linalg.norm(out[:3, :3], axis=0)
    out[:3, :3] = axes * np.asarray(new_spacing, dtype=float)
    return out


def metadata_affine(meta: VolumeMetadata, header_affine: np.ndarray) -> tuple[np.ndarray, str]:
    """The affine from the metadata spacing, its orientation and position where given
    (else the header's axes and origin), and a note saying which."""
    out = _with_spacing(header_affine, meta.spacing)
    said = []
    if meta.orientation is not None:
        row, col = np.array(meta.orientation[:3]), np.array(meta.orientation[3:])
        axes_lps = np.stack([row, col, np.cross(row, col)], axis=1)
        out[:3, :3] = LPS_TO_RAS @ axes_lps * np.asarray(meta.spacing)
        said.append("orientation from ImageOrientationPatient")
    else:
        said.append("orientation from the header's axes")
    if meta.position is not None:
        out[:3, 3] = LPS_TO_RAS @ np.asarray(meta.position)
        said.append("origin from ImagePositionPatient")
    else:
        said.append("origin from the header")
    return out, ", ".join(said)


def decide_geometry(header, header_affine: np.ndarray, meta: VolumeMetadata, rate: Mapping) -> GeometryDecision:
    """Spacing and orientation: header, metadata or both agreeing (see the module docstring)."""
    lacks = header_lacks_spacing(header, header_affine)
    if meta.spacing is None:
        if lacks:
            raise Rejected("no_spacing", f"the NIfTI header has no usable spacing ({lacks}) and the metadata row "
                                         "has no XYSpacing/ZSpacing")
        return GeometryDecision("header", np.array(header_affine, dtype=float),
                                "geometry: header (the metadata row gives no spacing)")
    if lacks:
        affine, how = metadata_affine(meta, header_affine)
        return GeometryDecision("metadata", affine,
                                f"geometry: metadata spacing {_fmt(meta.spacing)} mm, header lacks it ({lacks}); {how}")
    found = spacing(header_affine)
    tolerance = rate["spacing_tolerance"]
    differ = max(abs(h - m) / m for h, m in zip(found, meta.spacing))
    if differ <= tolerance:
        return GeometryDecision("header=metadata", np.array(header_affine, dtype=float),
                                f"geometry: header, metadata spacing agrees within {tolerance:g}")
    conflict = (f"header spacing {_fmt(round(v, 6) for v in found)} mm vs metadata {_fmt(meta.spacing)} mm "
                f"(differ by up to {differ:.1%}, tolerance {tolerance:.1%})")
    if rate["spacing_conflict"] == "reject":
        raise Rejected("spacing_contradiction", conflict)
    if rate["spacing_conflict"] != "metadata":
        raise ValueError(f"ct_convert.ct_rate.spacing_conflict: unknown value {rate['spacing_conflict']!r}")
    return GeometryDecision("metadata", _with_spacing(header_affine, meta.spacing),
                            f"geometry: metadata spacing wins over the header's ({conflict}); "
                            "header axes and origin kept")


# ---------------------------------------------------------------- one volume

def convert_ct_rate_volume(volume: CtRateVolume, cfg: dict, key: str, out_dir: str | Path,
                           root: str) -> dict | Rejection:
    """One CT-RATE volume -> volumes/<series_id>.nii.gz (int16 HU, RAS+) and its studies row."""
    ids = pseudonyms(raw_ids(volume.name), key)
    src = source_label(relative(volume.path, root), key, cfg["source_paths"])
    rate, meta = cfg["ct_rate"], volume.metadata
    try:
        img, shape = load_nifti(volume.path, cfg["max_voxels"])
        geometry = decide_geometry(img.header, img.affine, meta, rate)
        check_affine(geometry.affine)
        stored = read_voxels(img, shape, scaled=False)
        bad = check_non_finite(stored, cfg["non_finite_voxels"])  # raises under non_finite_voxels: reject
        hu = decide_hu(stored, header_scaling(img.dataobj), meta, rate)  # NaN counts as neither air nor tissue
    except Rejected as exc:
        return exc.as_rejection(ids["series_id"], src, STAGE)
    notes = [hu.note, geometry.note]
    mask = None
    if bad:  # non_finite_voxels: air, filled after rescaling (air in stored units depends on the scale)
        mask = ~np.isfinite(stored)
        stored = fill_non_finite(stored, 0)
        notes.append(non_finite_note(bad))
    data = rescale_to_hu(stored, hu.slope, hu.intercept)
    del stored
    if mask is not None:
        data[mask] = AIR_HU
    return write_volume(data, geometry.affine, ids, src, cfg, out_dir, notes,
                        source_format="nifti", transfer_syntax="", n_files=1, n_slices_source=int(shape[2]),
                        slice_thickness=meta.slice_thickness, hu_source=hu.source, geometry_source=geometry.source,
                        reconstruction=volume.name.reconstruction, source_sha256=sha256_file(volume.path),
                        source_split=volume.name.split, **dict(meta.context))


# ---------------------------------------------------------------- planning

def volume_files(root: str | Path) -> list[str]:
    """Every .nii.gz under `root` (hidden files and folders skipped), sorted."""
    root = Path(root)
    return sorted(str(p) for p in root.rglob("*.nii.gz")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def plan_volumes(cfg: dict) -> tuple[list[tuple[str, CtRateVolume]], list[dict], dict]:
    """(series_id, volume) to convert, rejected rows and counts, for every .nii.gz under
    cfg["root"]: each file ends as one of the two (item: its series id, or `file:<source>`
    when its name is not CT-RATE's or names a series another file already took)."""
    root, key, mode, rate = cfg["root"], cfg["deid_key"], cfg["source_paths"], cfg["ct_rate"]
    files = volume_files(root)
    table = read_metadata(root, rate["metadata_glob"])
    rejected: list[dict] = []
    candidates: dict[VolumeName, tuple[str, VolumeMetadata, str, str]] = {}
    taken: dict[VolumeName, str] = {}
    for path in files:
        src = source_label(relative(path, root), key, mode)
        try:
            name = parse_volume_name(path)
        except Rejected as exc:
            rejected.append(exc.as_rejection(f"file:{src}", src, STAGE).as_row())
            continue
        series_id = pseudonym("series", name.series, key)
        if name in taken:  # the same VolumeName twice (e.g. two copies of a split): one volume
            rejected.append(Rejection(f"file:{src}", src, "duplicate_series",
                                      f"series id {series_id} already taken by CT-RATE file {taken[name]}",
                                      STAGE).as_row())
            continue
        taken[name] = src
        rows = table.rows.get(name)
        if not rows:
            rejected.append(Rejection(series_id, src, "no_metadata_row",
                                      f"no VolumeName row for this file in the {table.files} metadata CSV(s) "
                                      f"matching {rate['metadata_glob']!r}", STAGE).as_row())
            continue
        try:
            candidates[name] = (path, parse_metadata(rows), series_id, src)
        except Rejected as exc:
            rejected.append(exc.as_rejection(series_id, src, STAGE).as_row())
    kept = select_reconstructions({n: c[1] for n, c in candidates.items()}, rate["reconstructions"])
    inputs = []
    for name, (path, meta, series_id, src) in sorted(candidates.items(), key=lambda item: item[1][0]):
        winner = kept[name]
        if winner == name:
            inputs.append((series_id, CtRateVolume(path=path, name=name, metadata=meta)))
        else:
            rejected.append(Rejection(series_id, src, "reconstruction_not_selected",
                                      f"reconstructions={rate['reconstructions']} keeps reconstruction "
                                      f"{winner.reconstruction} of this study ({candidates[winner][2]}), "
                                      f"not {name.reconstruction}", STAGE).as_row())
    counts = {"files": len(files), "metadata_csvs": table.files, "metadata_rows": table.rows_read,
              "metadata_rows_bad_name": table.rows_bad_name,
              "metadata_rows_without_volume": sum(len(r) for n, r in table.rows.items() if n not in taken)}
    return inputs, rejected, counts
