"""The one exception for bad input: a specific reason code and a sentence, ready to become a rejected row.

Every stage raises `Rejected(reason, detail)` where an item cannot be used (a package, an
XML file, an image, a DICOM series, a mask) and turns it into a row of its rejected
table with `as_rejection`; `reason` is the table's machine-readable code.
"""
from __future__ import annotations

from tasks.common.tables import Rejection


class Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):
        # Rebuilt from (reason, detail) when it crosses a process boundary (Dask workers).
        return type(self), (self.reason, self.detail)

    def as_rejection(self, item: str, source: str, stage: str) -> Rejection:
        return Rejection(item=item, source=source, reason=self.reason, detail=self.detail, stage=stage)
