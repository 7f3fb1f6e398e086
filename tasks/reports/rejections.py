"""Why a report cannot be read: the checks split_reports makes on the raw text, before anything else."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff]")
_LETTERS = re.compile(r"[^\W\d_]")


def rejection_reason(findings: str | None, impression: str | None,
                     max_chars: int | None = None) -> tuple[str, str] | None:
    """Why a report cannot be read, or None. Checked on the raw text, before unescaping."""
    size = len(findings or "") + len(impression or "")
    if max_chars is not None and size > max_chars:
        return "report_too_long", (f"{size} characters, more than split_reports.max_report_chars "
                                   f"({max_chars})")
    text = f"{findings or ''}\n{impression or ''}"
    if "\x00" in text:
        # Binary data in a text field (a CSV reader in C stops the field there: it is not empty).
        return "binary_content", f"a NUL byte at character {text.index(chr(0))} of the report text"
    if "\ufffd" in text:
        return "undecodable_text", "text holds bytes that are not valid UTF-8"
    if not text.strip():
        return "empty_report", "no report text"
    bad = len(_CONTROL.findall(text))
    if bad > 0.05 * len(text):
        return "undecodable_text", f"{bad} control or private-use characters in {len(text)}"
    if len(_LETTERS.findall(text, 0, 200)) < 3:
        return "empty_report", "no words in the report text"
    return None
