"""The phantom written as DICOM: classic CT series (uncompressed or JPEG 2000), enhanced
multi-frame CT, a gantry-tilted series, and the broken series ct_convert must reject.

Every UID comes from the study plan or `study_uid(seed, case, ...)`, never from a
random source: pydicom's `compress` would otherwise draw a new SOPInstanceUID.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import axcodes2ornt, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage

from tasks.sample.ct_body import Phantom
from tasks.sample.ct_plan import study_uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _dicom_layout(ph: Phantom, code: str):
    """Phantom reoriented to the DICOM (column, row, slice) axis code; returns data and LPS affine."""
    img = nib.Nifti1Image(ph.hu, ph.affine)
    t = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(code)))
    moved = img.as_reoriented(t)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ moved.affine
    return np.asanyarray(moved.dataobj), lps


def _base_dataset(spec: dict, modality: str = "CT") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = spec["PatientName"]
    ds.PatientID = spec["PatientID"]
    ds.PatientBirthDate = spec["birth"]
    ds.PatientSex = spec["sex"]
    ds.PatientAge = f"{spec['age']:03d}Y"
    ds.StudyInstanceUID = spec["StudyInstanceUID"]
    ds.SeriesInstanceUID = spec["SeriesInstanceUID"]
    ds.FrameOfReferenceUID = spec["FrameOfReferenceUID"]
    ds.StudyDate = spec["StudyDate"]
    ds.SeriesDate = spec["StudyDate"]
    ds.StudyTime = "101500"
    ds.AccessionNumber = spec["AccessionNumber"]
    ds.StudyID = f"S{spec['index']:04d}"
    ds.SeriesNumber = 2
    ds.Modality = modality
    ds.Manufacturer = "MEDCONCEPT SYNTHETIC"
    ds.ManufacturerModelName = "Phantom-64"
    ds.InstitutionName = "Medconcept Synthetic Hospital"
    ds.InstitutionAddress = "1 Phantom Road, Nowhere"
    ds.StationName = f"CTSTATION{spec['patient'] % 3}"
    ds.DeviceSerialNumber = f"SN{40000 + spec['patient'] % 3}"
    ds.ReferringPhysicianName = "REFERRER^SYNTH"
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    if spec["contrast"]:
        ds.ContrastBolusAgent = "IODINATED"
    return ds


def _meta(sop_class: str, sop_uid: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "MEDCONCEPT1"
    return meta


def _stored(hu_slice: np.ndarray, variant: int) -> tuple[np.ndarray, dict]:
    """Stored values and rescale tags for one of three common HU encodings."""
    if variant == 0:  # unsigned 12-bit, intercept -1024
        return (hu_slice.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16), dict(
            PixelRepresentation=0, BitsStored=12, HighBit=11, RescaleIntercept="-1024", RescaleSlope="1")
    if variant == 1:  # signed, HU stored directly
        return hu_slice.astype(np.int16), dict(PixelRepresentation=1, BitsStored=16, HighBit=15,
                                               RescaleIntercept="0", RescaleSlope="1")
    # signed, padding -2000 outside the reconstruction circle
    rows, cols = hu_slice.shape
    rr, cc = np.ogrid[:rows, :cols]
    outside = ((rr - rows / 2 + 0.5) ** 2 + (cc - cols / 2 + 0.5) ** 2) > (0.49 * min(rows, cols)) ** 2
    out = hu_slice.astype(np.int16).copy()
    out[outside] = -2000
    return out, dict(PixelRepresentation=1, BitsStored=16, HighBit=15, RescaleIntercept="0", RescaleSlope="1",
                     PixelPaddingValue=-2000)


def _slice_file_names(spec: dict, n: int) -> list[str]:
    """File names and nesting vary between cases, as they do between PACS exports."""
    style = spec["index"] % 4
    if style == 0:
        return [f"IM{k + 1:05d}" for k in range(n)]
    if style == 1:
        return [f"series/{(k * 37) % 1000:03d}-{k}.dcm" for k in range(n)]
    if style == 2:
        return [f"DICOM/S0001/I{(n - k) * 10:04d}" for k in range(n)]
    return [f"slice_{k:03d}.DCM" for k in range(n)]


def write_dicom_series(ph: Phantom, spec: dict, case_dir: Path, seed: int, syntax: str = ExplicitVRLittleEndian,
                       modality: str = "CT", tilt_vox: float = 0.0, variant: int | None = None) -> list[Path]:
    data, lps = _dicom_layout(ph, spec["orientation"])
    cols, rows, n = data.shape
    col_sp, row_sp = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    iop = [*(lps[:3, 0] / col_sp), *(lps[:3, 1] / row_sp)]
    variant = spec["hu_variant"] if variant is None else variant
    names = _slice_file_names(spec, n)
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    paths = []
    for k in range(n):
        hu_slice = data[:, :, k].T  # (rows, columns)
        pos = lps[:3, 3] + k * lps[:3, 2]
        if tilt_vox:
            from scipy import ndimage
            # slice k is acquired shifted by k*tilt along rows: sample the phantom there
            pos = pos + k * tilt_vox * lps[:3, 1]
            hu_slice = np.rint(ndimage.shift(hu_slice.astype(np.float32), (-k * tilt_vox, 0), order=1,
                                             mode="nearest")).astype(np.int16)
        stored, tags = _stored(hu_slice, variant)
        ds = _base_dataset(spec, modality)
        sop_uid = study_uid(seed, spec["case"], "sop", k)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{x:.6f}" for x in pos]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in iop]
        ds.PixelSpacing = [f"{row_sp:.6f}", f"{col_sp:.6f}"]
        ds.SliceThickness = f"{float(np.linalg.norm(lps[:3, 2])):.4f}"
        ds.GantryDetectorTilt = "0"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape
        ds.BitsAllocated = 16
        for tag, value in tags.items():
            setattr(ds, tag, value)
        if modality == "CT":
            ds.RescaleType = "HU"
        else:
            for tag in ("RescaleIntercept", "RescaleSlope"):
                delattr(ds, tag)
            ds.MagneticFieldStrength = "1.5"
        ds.file_meta = _meta(sop_class, sop_uid, ExplicitVRLittleEndian)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        if syntax == JPEG2000Lossless:
            ds.compress(JPEG2000Lossless, np.ascontiguousarray(stored), encoding_plugin="pylibjpeg",
                        generate_instance_uid=False)  # keep the seeded SOPInstanceUID
        path = case_dir / names[k]
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(ph: Phantom, spec: dict, case_dir: Path, seed: int) -> Path:
    data, lps = _dicom_layout(ph, spec["orientation"])
    cols, rows, n = data.shape
    col_sp, row_sp = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    ds = _base_dataset(spec)
    sop_uid = study_uid(seed, spec["case"], "sop", 0)
    ds.SOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{row_sp:.6f}", f"{col_sp:.6f}"]
    measures.SliceThickness = f"{float(np.linalg.norm(lps[:3, 2])):.4f}"
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{x:.6f}" for x in [*(lps[:3, 0] / col_sp), *(lps[:3, 1] / row_sp)]]
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = "-1024", "1", "HU"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orient]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    order = list(range(n))[::-1]  # frames stored top-down: the reader must sort them
    for k in order:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [f"{x:.6f}" for x in lps[:3, 3] + k * lps[:3, 2]]
        content = Dataset()
        content.InStackPositionNumber = k + 1
        item.PlanePositionSequence = [plane]
        item.FrameContentSequence = [content]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    pixels = np.stack([(data[:, :, k].T.astype(np.int32) + 1024).astype(np.int16) for k in order])
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.file_meta = _meta(ENHANCED_CT, sop_uid, ExplicitVRLittleEndian)
    path = case_dir / "enhanced.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_broken(ph: Phantom, spec: dict, case_dir: Path, seed: int) -> None:
    kind = spec["broken"]
    small = spec | {"orientation": "LPS"}
    if kind == "mr_series":
        write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 18:28], ph.affine, []), small, case_dir, seed,
                           modality="MR", variant=0)
        return
    if kind == "single_slice":
        write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 24:25], ph.affine, []), small, case_dir, seed)
        return
    if kind == "mixed_matrix":
        paths = write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 16:32], ph.affine, []), small, case_dir, seed)
        for path in paths[::2]:  # every other slice at 48x48: another reconstruction mixed in
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array[8:56, 8:56].copy()
            ds.Rows, ds.Columns = arr.shape
            ds.PixelData = arr.tobytes()
            ds.save_as(path, enforce_file_format=True)
        return
    paths = write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 8:40], ph.affine, []), small, case_dir, seed)
    if kind == "missing_slice":
        paths[13].unlink()
    elif kind == "truncated_file":
        raw = paths[9].read_bytes()
        paths[9].write_bytes(raw[: len(raw) - 64 * 64])  # cut inside the pixel data
