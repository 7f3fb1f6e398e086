"""Keyed pseudonyms for CT identifiers, shared by ct_convert, segment and the reports stage.

A pseudonym is an HMAC-SHA256 of the raw identifier with a secret key, so the same
patient, study or series gets the same id in every stage (reports join on it) and
nobody without the key can reverse or re-compute it.

Key resolution: the environment variable named by `deid.key_env` (default
MEDCONCEPT_DEID_KEY) wins over `deid.key` in params, so a production key never has
to be written into a versioned params file. The sample runs on the params key.
"""
from __future__ import annotations

import os
from typing import Mapping

from tasks.common.hashing import keyed_pseudonym

DEFAULT_KEY_ENV = "MEDCONCEPT_DEID_KEY"

# kind -> output prefix; the kind is also mixed into the MAC so that one raw value
# used as two kinds of identifier yields unrelated pseudonyms.
PREFIXES = {
    "patient": "pt-",
    "study": "st-",
    "series": "se-",
    "accession": "ac-",
    "path": "src-",
}


class DeidKeyError(RuntimeError):
    """No de-identification key configured."""


def deid_key(params: Mapping) -> str:
    """The HMAC key: env var `deid.key_env` if set, else `deid.key`; error if neither."""
    section = dict(params.get("deid") or {})
    env_name = section.get("key_env") or DEFAULT_KEY_ENV
    key = os.environ.get(env_name) or section.get("key")
    if not key:
        raise DeidKeyError(
            f"no de-identification key: set the environment variable {env_name} or params deid.key"
        )
    return str(key)


def pseudonym(kind: str, value: str, key: str) -> str:
    """Pseudonym of one raw identifier (PatientID, StudyInstanceUID, ...).

    kind: patient (PatientID), study (StudyInstanceUID), series (SeriesInstanceUID),
    accession (AccessionNumber) or path (a source path relative to the input root).
    """
    if kind not in PREFIXES:
        raise ValueError(f"unknown identifier kind {kind!r}; known: {sorted(PREFIXES)}")
    return keyed_pseudonym(f"{kind}:{str(value).strip()}", key, prefix=PREFIXES[kind], length=16)


def pseudonyms(raw: Mapping[str, str | None], key: str) -> dict[str, str | None]:
    """patient_id/study_id/series_id/accession_id from a dict of raw DICOM values.

    raw keys: PatientID, StudyInstanceUID, SeriesInstanceUID, AccessionNumber
    (missing or empty values give None).
    """
    fields = {
        "patient_id": ("patient", "PatientID"),
        "study_id": ("study", "StudyInstanceUID"),
        "series_id": ("series", "SeriesInstanceUID"),
        "accession_id": ("accession", "AccessionNumber"),
    }
    out: dict[str, str | None] = {}
    for name, (kind, tag) in fields.items():
        value = raw.get(tag)
        out[name] = pseudonym(kind, value, key) if value not in (None, "") else None
    return out


def source_label(rel_path: str, key: str, mode: str = "hashed") -> str:
    """How a source path appears in outputs: hashed (default) or plain.

    File and folder names often carry UIDs or record numbers, so by default only a
    keyed pseudonym of the relative path leaves the stage.
    """
    if mode == "plain":
        return rel_path
    if mode != "hashed":
        raise ValueError(f"deid.source_paths must be 'hashed' or 'plain', got {mode!r}")
    return pseudonym("path", rel_path, key)
