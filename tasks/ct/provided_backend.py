"""Segmentation backend `provided`: label maps that come with the input.

Masks are files `<SeriesInstanceUID>.nii.gz` (or named like a NIfTI input's stem)
in segment.provided.masks_dir, holding TotalSegmentator v2 class ids. Raw names are
mapped to series pseudonyms with the same key as ct_convert, so no raw identifier is
needed downstream. A mask is used only when, reoriented to RAS+, it lies on exactly
the volume's grid.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tasks.common.locations import OPEN_ERRORS, UNREADABLE_SOURCE
from tasks.common.rejection import Rejected
from tasks.ct.deid import pseudonym
from tasks.ct.nifti_io import same_grid, to_canonical


def _stem(name: str) -> str:
    return name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else name


def index_masks(masks_dir: str | Path, key: str) -> dict[str, str]:
    """series_id pseudonym -> mask path, for every NIfTI file in masks_dir."""
    root = Path(masks_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"segment.provided.masks_dir {root} does not exist")
    out = {}
    for path in sorted(root.iterdir()):
        if path.name.endswith((".nii", ".nii.gz")):
            out[pseudonym("series", _stem(path.name), key)] = str(path)
    return out


def load_mask(path: str, shape, affine, valid_ids, tol_mm: float = 1e-3) -> np.ndarray:
    """The mask as uint8 on the volume's RAS+ grid, or Rejected."""
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except OPEN_ERRORS as exc:  # not the mask's content: the path is not there for this worker
        raise Rejected(UNREADABLE_SOURCE, f"mask cannot be opened ({type(exc).__name__})") from exc
    except Exception as exc:
        raise Rejected("unreadable_mask", f"mask cannot be read ({type(exc).__name__})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise Rejected("mask_not_3d", f"mask of shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.array_equal(data, np.rint(data)):
            raise Rejected("mask_not_integer", "mask holds non-integer values")
    labels = np.unique(data)
    unknown = sorted(int(v) for v in labels if v != 0 and int(v) not in valid_ids)
    if unknown:
        raise Rejected("unknown_label_ids", f"label ids not in TotalSegmentator's class map: {unknown[:10]}")
    data, canon_affine = to_canonical(data.astype(np.uint8), img.affine)
    problem = same_grid(data.shape, canon_affine, shape, affine, tol_mm)
    if problem:
        raise Rejected("mask_geometry_mismatch", f"mask and volume grids differ: {problem}")
    return np.ascontiguousarray(data)
