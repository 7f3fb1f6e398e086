"""Licence classification from JATS permissions, license.txt or the OA file list."""
from __future__ import annotations

import re

COMMERCIAL_OK = {"cc0", "pd", "cc-by", "cc-by-sa", "cc-by-nd"}

_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)", re.I)
_SHORT = re.compile(r"\bCC[\s-]?(BY(?:[\s-](?:NC|SA|ND))*|0|ZERO)\b", re.I)
_WORDS = [
    (re.compile(r"attribution[\s-]*non[\s-]?commercial[\s-]*share[\s-]?alike", re.I), "cc-by-nc-sa"),
    (re.compile(r"attribution[\s-]*non[\s-]?commercial[\s-]*no[\s-]?deriv", re.I), "cc-by-nc-nd"),
    (re.compile(r"attribution[\s-]*non[\s-]?commercial", re.I), "cc-by-nc"),
    (re.compile(r"attribution[\s-]*share[\s-]?alike", re.I), "cc-by-sa"),
    (re.compile(r"attribution[\s-]*no[\s-]?deriv", re.I), "cc-by-nd"),
    (re.compile(r"creative commons attribution", re.I), "cc-by"),
    (re.compile(r"\bCC0\b|public domain dedication|zero 1\.0", re.I), "cc0"),
    (re.compile(r"\bpublic domain\b", re.I), "pd"),
]


def _from_code(code: str) -> str:
    code = code.lower().replace(" ", "-")
    if code in {"0", "zero"}:
        return "cc0"
    return "cc-" + code


def classify_url(url: str | None) -> str | None:
    if not url:
        return None
    match = _URL.search(url)
    if not match:
        return None
    kind, code = match.group(1).lower(), match.group(2).lower()
    if kind == "publicdomain":
        return "cc0" if code == "zero" else "pd"
    return "cc-" + code.strip("-")


def classify_text(text: str | None) -> str | None:
    if not text:
        return None
    by_url = classify_url(text)
    if by_url:
        return by_url
    for pattern, label in _WORDS:
        if pattern.search(text):
            return label
    match = _SHORT.search(text)
    if match:
        return _from_code(re.sub(r"[\s-]+", "-", match.group(1)))
    return None


def classify(url: str | None = None, text: str | None = None, oa_list_licence: str | None = None) -> str:
    """The licence class ('cc-by', 'cc-by-nc-sa', 'cc0', 'pd', ...) or 'unknown'."""
    for candidate in (classify_url(url), classify_text(text), classify_text(oa_list_licence)):
        if candidate:
            return candidate
    return "unknown"


def commercial_use_ok(licence: str) -> bool:
    return licence in COMMERCIAL_OK
