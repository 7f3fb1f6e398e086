"""Compile lexicon term lists (regex fragments) into word-bounded patterns.

Patterns run on ASCII-lowercased text without re.IGNORECASE: three times faster
on these lexicons, and `ascii_lower` keeps every offset (str.lower can lengthen
some non-ASCII letters, which would shift spans).
"""
from __future__ import annotations

import re
from typing import Iterable

_UPPER = re.compile(r"(?<!\\)[A-Z]")
_LOWER_TABLE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    return text.translate(_LOWER_TABLE)


def lower_pattern(term: str) -> str:
    """Lowercase a regex fragment's letters, leaving escapes such as \\W or \\S alone."""
    return _UPPER.sub(lambda m: m.group(0).lower(), term)


def compile_terms(terms: Iterable[str]) -> re.Pattern | None:
    """One alternation over the terms, longest first, bounded so "lap" misses "flap"."""
    terms = sorted({lower_pattern(t) for t in terms if t}, key=len, reverse=True)
    if not terms:
        return None
    body = "|".join(f"(?:{t})" for t in terms)
    return re.compile(rf"\b(?:{body})\b")
