"""CT-RATE's volume naming scheme: `<split>_<patient>_<scan>_<reconstruction>.nii.gz`.

`valid_1_a_1.nii.gz` is reconstruction 1 of scan (study) `valid_1_a` of patient `valid_1`
in the validation split. CT-RATE's metadata, report and label tables are keyed by this
file name (their `VolumeName` column), so every stage that joins on CT-RATE parses it
here, and only here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from tasks.common.rejection import Rejected

NIFTI_GZ = ".nii.gz"
# split, patient number, scan letter(s), reconstruction number
_NAME = re.compile(r"(?P<split>train|valid|test)_(?P<patient>\d+)_(?P<scan>[a-z]+)_(?P<recon>\d+)")


@dataclass(frozen=True, order=True)
class VolumeName:
    split: str           # train | valid | test
    patient: str         # e.g. valid_1
    study: str           # e.g. valid_1_a (one scan)
    series: str          # e.g. valid_1_a_1 (one reconstruction of that scan)
    reconstruction: int  # e.g. 1

    @property
    def file_name(self) -> str:
        """The `VolumeName` key of CT-RATE's tables."""
        return self.series + NIFTI_GZ


def parse_volume_name(name: str) -> VolumeName:
    """VolumeName of a CT-RATE file name or path, with or without `.nii.gz`.

    Raises Rejected("not_ct_rate_name", ...) for anything outside the scheme.
    """
    base = PurePath(str(name).strip().replace("\\", "/")).name
    stem = base[: -len(NIFTI_GZ)] if base.endswith(NIFTI_GZ) else base
    match = _NAME.fullmatch(stem)
    if match is None:
        raise Rejected("not_ct_rate_name",
                       f"{base!r} is not <train|valid|test>_<patient>_<scan>_<reconstruction>[.nii.gz]")
    split, patient, scan, recon = match.group("split", "patient", "scan", "recon")
    patient_id = f"{split}_{patient}"
    study_id = f"{patient_id}_{scan}"
    return VolumeName(split=split, patient=patient_id, study=study_id, series=f"{study_id}_{recon}",
                      reconstruction=int(recon))


def raw_ids(volume: VolumeName) -> dict:
    """Raw identifiers in the shape tasks.ct.deid.pseudonyms takes (as DICOM headers give them)."""
    return {
        "PatientID": volume.patient,
        "StudyInstanceUID": volume.study,
        "SeriesInstanceUID": volume.series,
        "AccessionNumber": "",
        "Modality": "CT",
    }
