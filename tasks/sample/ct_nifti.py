"""The phantom written as NIfTI: a volume in the study's orientation, a BIDS-style JSON
sidecar of identifiers, and its label map (gzip mtime 0: bytes depend on content only)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform

from tasks.ct.nifti_io import write_nifti
from tasks.sample.ct_body import Phantom


def write_nifti_study(ph: Phantom, spec: dict, input_dir: Path, mask_path: Path) -> Path:
    t = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(spec["orientation"])))
    img = nib.Nifti1Image(ph.hu, ph.affine).as_reoriented(t)
    path = input_dir / f"{spec['case']}.nii.gz"
    write_nifti(np.asanyarray(img.dataobj).astype(np.int16), img.affine, path)
    sidecar = {k: spec[k] for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber")}
    sidecar["Modality"] = "CT"
    (input_dir / f"{spec['case']}.json").write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    lab = nib.Nifti1Image(ph.labels, ph.affine).as_reoriented(t)  # masks come in the volume's own orientation
    write_nifti(np.asanyarray(lab.dataobj).astype(np.uint8), lab.affine, mask_path)
    return path
