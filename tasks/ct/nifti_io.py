"""NIfTI reading and writing: canonical (RAS+) orientation, deterministic files.

Every volume and label map this project writes is RAS+ ("canonical" in nibabel's
sense: voxel axis i grows towards the patient's right, j anterior, k superior),
with sform = qform = the affine, units mm, and an empty description.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import (apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation,
                                  ornt_transform)

RAS = axcodes2ornt(("R", "A", "S"))


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter axis code of an affine, e.g. 'LPS' (nibabel convention)."""
    return "".join(nib.aff2axcodes(affine))


def canonical_view(target: np.ndarray, source_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A view of `target` (canonical shape) indexed in the source's voxel order.

    Returns (view, canonical_affine). Writing source-ordered data into `view` fills
    `target` in RAS order with no extra copy; used to decode DICOM slices straight
    into the output array.
    """
    ornt = io_orientation(source_affine)
    to_ras = ornt_transform(ornt, RAS)
    # shape of the source grid: invert the permutation applied by to_ras
    src_shape = [0, 0, 0]
    for src_axis, (dst_axis, _flip) in enumerate(to_ras):
        src_shape[src_axis] = target.shape[int(dst_axis)]
    canonical_affine = source_affine @ inv_ornt_aff(to_ras, src_shape)
    back = ornt_transform(RAS, ornt)
    view = apply_orientation(target, back)
    assert view.shape == tuple(src_shape)
    return view, canonical_affine


def canonical_shape(source_shape, source_affine) -> tuple[int, int, int]:
    to_ras = ornt_transform(io_orientation(source_affine), RAS)
    shape = [0, 0, 0]
    for src_axis, (dst_axis, _flip) in enumerate(to_ras):
        shape[int(dst_axis)] = int(source_shape[src_axis])
    return tuple(shape)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) reoriented to RAS+ by flips and transposes only (no resampling)."""
    img = nib.Nifti1Image(data, affine)
    canon = nib.as_closest_canonical(img)
    return np.asanyarray(canon.dataobj), canon.affine


def spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def make_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    header = img.header
    header.set_data_dtype(data.dtype)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b""
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def write_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, compresslevel: int = 1) -> Path:
    """Write a NIfTI-1 file; .nii.gz with gzip mtime 0 so bytes depend on content only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = make_image(data, affine)
    tmp = path.with_name(path.name + ".tmp")
    if path.name.endswith(".gz"):
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                  compresslevel=compresslevel, mtime=0) as gz:
            file_map = img.make_file_map({"image": gz, "header": gz})
            img.to_file_map(file_map)
    else:
        with open(tmp, "wb") as raw:
            img.to_file_map(img.make_file_map({"image": raw, "header": raw}))
    tmp.replace(path)
    return path


def read_nifti(path: str | Path, mmap: bool = True) -> nib.Nifti1Image:
    return nib.load(str(path), mmap=mmap)


def same_grid(shape_a, affine_a, shape_b, affine_b, tol_mm: float = 1e-3) -> str | None:
    """None when two grids coincide in world space; otherwise what differs."""
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        return f"shape {tuple(shape_a[:3])} != {tuple(shape_b[:3])}"
    # compare world positions of the grid corners: covers rotation, spacing and origin
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_a[0] - 1) for j in (0, shape_a[1] - 1)
                        for k in (0, shape_a[2] - 1)]).T
    diff = np.abs(np.asarray(affine_a) @ corners - np.asarray(affine_b) @ corners).max()
    if diff > tol_mm:
        return f"grids differ by up to {diff:.4g} mm"
    return None
