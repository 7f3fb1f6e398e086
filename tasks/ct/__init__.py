"""CT domain logic: DICOM/NIfTI to canonical HU volumes, de-identification, anatomy masks."""
