"""ct_convert domain logic: input discovery, one series or NIfTI file to one volume
(CT-RATE volumes: tasks.ct.ct_rate, on the shared parts here).

Output table `studies.parquet`, one row per converted series (STUDIES_SCHEMA):

  patient_id, study_id, series_id, accession_id   keyed pseudonyms (tasks.ct.deid); accession_id
                                                  null when the input has no AccessionNumber
  volume            path of the NIfTI volume relative to ct_convert.output_dir
                    ("volumes/<series_id>.nii.gz"): int16 HU, RAS+, sform = qform = affine
  source_format     dicom | dicom-enhanced | nifti (plain NIfTI and CT-RATE volumes)
  transfer_syntax   DICOM transfer syntax UID of the first file ("" for NIfTI)
  n_files, n_slices_source   input files and frames used
  shape_x/y/z       voxels along RAS+ axes; spacing_x/y/z in mm
  orientation_source  axis code of the input grid (e.g. LPS); outputs are always RAS
  affine            the volume's 4x4 affine, row-major (16 floats, mm)
  hu_min, hu_max, hu_mean, hu_p01, hu_p50, hu_p99   after padding below -1024 HU is raised to -1024
  slice_thickness   mm (DICOM SliceThickness; null when absent)
  manufacturer, model, kvp, kernel, body_part, contrast   acquisition context (no serials, no names)
  hu_source         how stored values became HU: rescaled (slope*stored+intercept: DICOM, or CT-RATE
                    metadata) | already_hu (CT-RATE values used as stored) | header (the NIfTI
                    header's own scl_slope/scl_inter, as for every plain NIfTI input)
  geometry_source   where spacing/orientation came from: header (DICOM or NIfTI header) | metadata
                    (CT-RATE metadata CSV) | header=metadata (header used, metadata agrees)
  reconstruction    CT-RATE reconstruction number (valid_1_a_2 -> 2); null for other inputs
  notes             conversion notes joined by "; " (resampling, dropped localizers, clipped padding,
                    non-finite voxels set to air under non_finite_voxels: air)
  source            keyed pseudonym of the input path (or the path with deid.source_paths=plain)
  source_sha256     SHA-256 over the input files' SHA-256s in slice order
  stage             "ct_convert"
  source_split      the dataset's own split the volume came from (CT-RATE: train | valid), which
                    train_fvlm.split.test_source_splits can make the test side; null for other inputs
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import nibabel as nib
import numpy as np
import pyarrow as pa

from tasks.common.hashing import sha256_file
from tasks.common.locations import OPEN_ERRORS, UNREADABLE_SOURCE, is_url
from tasks.common.rejection import Rejected
from tasks.common.tables import Rejection
from tasks.ct.deid import pseudonyms, source_label
from tasks.ct.dicom_geometry import Policy, plan_geometry
from tasks.ct.dicom_pixels import decode_series
from tasks.ct.dicom_series import ENHANCED_CT_IMAGE_STORAGE, FileProblem, Series
from tasks.ct.hu import AIR_HU, clip_padding, hu_stats, non_finite_note, plausibility_problem, replace_non_finite
from tasks.ct.nifti_io import orientation_code, spacing, to_canonical, write_nifti

STAGE = "ct_convert"
NIFTI_SUFFIXES = (".nii", ".nii.gz")

STUDIES_SCHEMA = pa.schema([
    ("patient_id", pa.string()), ("study_id", pa.string()), ("series_id", pa.string()),
    ("accession_id", pa.string()), ("volume", pa.string()), ("source_format", pa.string()),
    ("transfer_syntax", pa.string()), ("n_files", pa.int32()), ("n_slices_source", pa.int32()),
    ("shape_x", pa.int32()), ("shape_y", pa.int32()), ("shape_z", pa.int32()),
    ("spacing_x", pa.float64()), ("spacing_y", pa.float64()), ("spacing_z", pa.float64()),
    ("orientation_source", pa.string()), ("affine", pa.list_(pa.float64())),
    ("hu_min", pa.int32()), ("hu_max", pa.int32()), ("hu_mean", pa.float64()), ("hu_p01", pa.float64()),
    ("hu_p50", pa.float64()), ("hu_p99", pa.float64()), ("slice_thickness", pa.float64()),
    ("manufacturer", pa.string()), ("model", pa.string()), ("kvp", pa.string()), ("kernel", pa.string()),
    ("body_part", pa.string()), ("contrast", pa.string()), ("hu_source", pa.string()),
    ("geometry_source", pa.string()), ("reconstruction", pa.int32()), ("notes", pa.string()), ("source", pa.string()),
    ("source_sha256", pa.string()), ("stage", pa.string()),
    ("source_split", pa.string()),  # the dataset's own split (CT-RATE: train, valid); null for files
])


def is_nifti(path: str) -> bool:
    return path.lower().endswith(NIFTI_SUFFIXES)


def discover(source: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(DICOM candidate files, NIfTI files) under a folder, sorted; any names, any nesting.

    JSON files beside a NIfTI of the same stem are its sidecars, not inputs; hidden
    files are skipped.
    """
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"ct_convert.source {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(
        root if root.is_dir() else root.parent).parts)]
    nifti = [str(p) for p in files if is_nifti(p.name)]
    stems = {_nifti_stem(p) for p in nifti}
    dicom = [str(p) for p in files if not is_nifti(p.name)
             and not (p.suffix.lower() == ".json" and str(p.with_suffix("")) in stems)]
    return dicom, nifti


def stage_source(source: str, staging_dir: str | Path) -> str:
    """A local folder holding the input: `source` itself, or a copy of an fsspec URL.

    DICOM decoding and NIfTI reading want seekable local files, so remote inputs
    (s3://, gcs://, http:// with a listing, memory://, ...) are copied once into
    `staging_dir` keeping their relative layout.
    """
    if not is_url(source):
        return str(source).replace("file://", "", 1)
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    staging = Path(staging_dir)
    staging.mkdir(parents=True, exist_ok=True)
    base = path.rstrip("/")
    for remote in sorted(fs.find(base)):
        rel = remote[len(base):].lstrip("/") or Path(remote).name
        target = (staging / rel).resolve()
        if not str(target).startswith(str(staging.resolve())):  # no path escape from odd names
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    return str(staging)


@contextmanager
def local_source(source: str, parent: str | None = None) -> Iterator[str]:
    """The input as a local folder while the stage runs: `source` itself, or a temporary
    copy of an fsspec URL under `parent` (a folder every Dask worker sees), removed afterwards."""
    if not is_url(source):
        yield stage_source(source, "")
        return
    staging = tempfile.mkdtemp(prefix="ct_convert_src_", dir=parent)
    try:
        yield stage_source(source, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _nifti_stem(path: str) -> str:
    return path[:-7] if path.lower().endswith(".nii.gz") else path[:-4]


def relative(path: str, root: str) -> str:
    try:
        return PurePosixPath(Path(path).resolve().relative_to(Path(root).resolve())).as_posix()
    except ValueError:
        return Path(path).name


def _files_sha(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def _common_folder(paths: list[str], root: str) -> str:
    rels = [relative(p, root) for p in paths]
    if len(rels) == 1:
        return rels[0]
    parent = os.path.commonpath(rels) if rels else ""
    return parent or "."


def _finish(volume: np.ndarray, affine: np.ndarray, cfg: dict, notes: list[str]) -> tuple[dict, str | None]:
    clipped = clip_padding(volume)
    if clipped:
        notes.append(f"{clipped} padding voxels below -1024 HU set to -1024")
    stats = hu_stats(volume)
    problem = plausibility_problem(stats, cfg["max_p01_hu"], cfg["max_p99_hu"])
    return stats, problem


def _row(ids: dict, volume: np.ndarray, affine: np.ndarray, stats: dict, **extra) -> dict:
    sx, sy, sz = spacing(affine)
    row = {
        **ids,
        "volume": f"volumes/{ids['series_id']}.nii.gz",
        "shape_x": int(volume.shape[0]), "shape_y": int(volume.shape[1]), "shape_z": int(volume.shape[2]),
        "spacing_x": round(sx, 6), "spacing_y": round(sy, 6), "spacing_z": round(sz, 6),
        "affine": [round(float(v), 6) for v in np.asarray(affine).reshape(-1)],
        "stage": STAGE,
        **stats,
    }
    row.update(extra)
    return row


def convert_dicom_series(series: Series, cfg: dict, key: str, out_dir: str | Path, root: str,
                         opener=None) -> dict | Rejection:
    """One DICOM series -> volumes/<series_id>.nii.gz and its studies row, or a Rejection."""
    ids = pseudonyms(series.first.ids, key)
    src = source_label(_common_folder(series.files, root), key, cfg["source_paths"])
    try:
        geometry = plan_geometry(series, Policy.from_params(cfg))
        notes = list(geometry.notes)
        volume = decode_series(series, geometry, opener, cfg["non_finite_voxels"], notes)
    except Rejected as exc:
        return exc.as_rejection(ids["series_id"], src, STAGE)
    stats, problem = _finish(volume, geometry.canonical_affine, cfg, notes)
    if problem:
        return Rejection(ids["series_id"], src, "implausible_hu", problem, STAGE)
    out_path = Path(out_dir) / "volumes" / f"{ids['series_id']}.nii.gz"
    write_nifti(volume, geometry.canonical_affine, out_path)
    first = series.first
    files = []
    for frame in geometry.frames:  # files in slice order, each once
        if not files or files[-1] != frame.path:
            files.append(frame.path)
    enhanced = first.frame is not None or first.sop_class == ENHANCED_CT_IMAGE_STORAGE
    return _row(
        ids, volume, geometry.canonical_affine, stats,
        source_format="dicom-enhanced" if enhanced else "dicom",
        transfer_syntax=first.transfer_syntax,
        n_files=len(set(files)), n_slices_source=len(geometry.frames),
        orientation_source=_source_code(geometry.source_affine),
        slice_thickness=first.slice_thickness,
        manufacturer=first.info.get("Manufacturer"), model=first.info.get("ManufacturerModelName"),
        kvp=first.info.get("KVP"), kernel=first.info.get("ConvolutionKernel"),
        body_part=first.info.get("BodyPartExamined"), contrast=first.info.get("ContrastBolusAgent"),
        hu_source="rescaled", geometry_source="header", reconstruction=None,
        notes="; ".join(notes), source=src,
        source_sha256=_files_sha(list(dict.fromkeys(files))) if opener is None else None,
    )


def _source_code(affine: np.ndarray) -> str:
    return orientation_code(affine)


def read_sidecar(path: str) -> dict:
    sidecar = Path(_nifti_stem(path) + ".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}
    return {}


def nifti_ids(path: str, root: str) -> dict:
    """Raw identifiers of a NIfTI input: its JSON sidecar, else its relative path."""
    meta = read_sidecar(path)
    rel = relative(path, root)
    fallback = f"path:{_nifti_stem(rel)}"
    return {
        "PatientID": str(meta.get("PatientID") or fallback),
        "StudyInstanceUID": str(meta.get("StudyInstanceUID") or fallback),
        "SeriesInstanceUID": str(meta.get("SeriesInstanceUID") or Path(_nifti_stem(rel)).name),
        "AccessionNumber": str(meta.get("AccessionNumber") or ""),
        "Modality": str(meta.get("Modality") or "CT").upper(),
    }


def load_nifti(path: str, max_voxels: int) -> tuple[nib.Nifti1Image, tuple[int, ...]]:
    """The image (header read, data not yet) and its 3-D shape; raises Rejected
    (unreadable_source, unreadable_file, not_3d, single_slice, too_large, invalid_affine)."""
    try:
        img = nib.load(path)
    except OPEN_ERRORS as exc:  # not the file's content: the path is not there for this worker
        raise Rejected(UNREADABLE_SOURCE, f"NIfTI cannot be opened ({type(exc).__name__})") from None
    except Exception as exc:
        raise Rejected("unreadable_file", f"NIfTI cannot be read ({type(exc).__name__})") from None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise Rejected("not_3d", f"NIfTI of shape {tuple(img.shape)}; a 3-D volume is needed")
    if min(shape) < 2:
        raise Rejected("single_slice", f"NIfTI of shape {tuple(shape)}")
    if int(np.prod(shape)) > max_voxels:
        raise Rejected("too_large", f"{int(np.prod(shape))} voxels above limit {max_voxels}")
    check_affine(img.affine)
    return img, tuple(shape)


def check_affine(affine: np.ndarray) -> None:
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise Rejected("invalid_affine", "affine is singular or not finite")


def read_voxels(img: nib.Nifti1Image, shape: tuple[int, ...], scaled: bool = True) -> np.ndarray:
    """The voxel array: with the header's scl_slope/scl_inter applied (as nibabel does) or
    the values as stored; raises Rejected("unreadable_file") for truncated or corrupt data."""
    try:
        data = np.asanyarray(img.dataobj) if scaled else img.dataobj.get_unscaled()
        return np.asarray(data).reshape(shape)
    except Exception as exc:
        raise Rejected("unreadable_file", f"NIfTI data cannot be read ({type(exc).__name__})") from None


def write_volume(data: np.ndarray, affine: np.ndarray, ids: dict, src: str, cfg: dict, out_dir: str | Path,
                 notes: list[str], **extra) -> dict | Rejection:
    """int16 HU voxels on `affine` -> RAS+ volumes/<series_id>.nii.gz and its studies row, or
    Rejection("implausible_hu"); `extra` fills the row's input-specific columns."""
    source_code = orientation_code(affine)
    volume, canon_affine = to_canonical(data, affine)
    volume = np.ascontiguousarray(volume, dtype=np.int16)
    if source_code != "RAS":
        notes.append(f"reoriented from {source_code}")
    stats, problem = _finish(volume, canon_affine, cfg, notes)
    if problem:
        return Rejection(ids["series_id"], src, "implausible_hu", problem, STAGE)
    write_nifti(volume, canon_affine, Path(out_dir) / "volumes" / f"{ids['series_id']}.nii.gz")
    return _row(ids, volume, canon_affine, stats, orientation_source=source_code, notes="; ".join(notes),
                source=src, **extra)


def to_int16(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.int16:
        return data
    return np.clip(np.rint(np.asarray(data, dtype=np.float32)), -32768, 32767).astype(np.int16)


def convert_nifti(path: str, cfg: dict, key: str, out_dir: str | Path, root: str) -> dict | Rejection:
    """One NIfTI file -> canonical int16 HU volume and its studies row, or a Rejection.

    Without a sidecar, the series identifier is the file name stem (so masks named
    like the volume match it in the segment stage).
    """
    raw = nifti_ids(path, root)
    ids = pseudonyms(raw, key)
    src = source_label(relative(path, root), key, cfg["source_paths"])
    if raw["Modality"] != "CT":
        return Rejection(ids["series_id"], src, "not_ct", f"sidecar modality {raw['Modality']}, only CT is converted",
                         STAGE)
    notes: list[str] = []
    try:
        img, shape = load_nifti(path, cfg["max_voxels"])
        # NaN or infinity would become an arbitrary int16 (0 HU on most machines): refuse or fill first
        voxels, replaced = replace_non_finite(read_voxels(img, shape), cfg["non_finite_voxels"], AIR_HU)
        data = to_int16(voxels)
        del voxels
    except Rejected as exc:
        return exc.as_rejection(ids["series_id"], src, STAGE)
    if replaced:
        notes.append(non_finite_note(replaced))
    return write_volume(data, img.affine, ids, src, cfg, out_dir, notes, source_format="nifti", transfer_syntax="",
                        n_files=1, n_slices_source=int(shape[2]), slice_thickness=None, hu_source="header",
                        geometry_source="header", reconstruction=None, source_sha256=sha256_file(path))


def file_problem_rejection(problem: FileProblem, key: str, root: str, mode: str) -> Rejection:
    src = source_label(relative(problem.path, root), key, mode)
    return Rejection(f"file:{src}", src, problem.reason, problem.detail, STAGE)
