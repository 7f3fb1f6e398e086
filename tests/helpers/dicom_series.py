"""Small DICOM CT series written slice by slice with pydicom, for the CT tests."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian


def write_series(folder, positions, rows=8, cols=8, values=None, iop=(1, 0, 0, 0, 1, 0), spacing=(2.0, 2.0),
                 uid="1.2.3.4.5", modality="CT", float_pixels=False):
    """Files with slice k filled with values[k], a number or a (rows, cols) array of HU (stored =
    HU + 1024); float_pixels: Float Pixel Data holding the HU themselves (NaN allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, pos in enumerate(positions):
        ds = Dataset()
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "PID-UNIT-1", "1.2.3.4", uid
        ds.Modality, ds.SOPClassUID, ds.SOPInstanceUID = modality, CTImageStorage, f"{uid}.{k + 1}"
        ds.ImagePositionPatient = [str(v) for v in pos]
        ds.ImageOrientationPatient = [str(v) for v in iop]
        ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        hu = np.broadcast_to(np.asarray(values[k] if values is not None else -1000 + 40 * k, float), (rows, cols))
        if float_pixels:
            ds.BitsAllocated = 32
            del ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope
            ds.FloatPixelData = hu.astype(np.float32).tobytes()
        else:
            ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
        ds.save_as(folder / f"f{k:03d}.dcm", enforce_file_format=True)
    return folder
