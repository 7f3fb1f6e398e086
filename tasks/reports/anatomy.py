"""Anatomy of a clause: lexicon terms, the linker's body-part CUIs, the findings' own anatomy.

The anatomy names are those of the `segment` stage (params), so descriptions join
the CT masks; the lexicon catches what the linker misses. A clause naming none
inherits its section's organ header, else it goes to `other`.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from tasks.common.terms import ascii_lower
from tasks.reports.text import SortedStarts, compile_report_terms, inside_any

OTHER = "other"


class AnatomyLexicon:
    def __init__(self, terms: Mapping[str, Iterable[str]],
                 weak_terms: Mapping[str, Iterable[str]] | None = None, exclude: Iterable[str] = ()):
        self.anatomies = list(dict.fromkeys([*terms, *(weak_terms or {})]))
        self._patterns = _compile_table(terms)
        self._weak = _compile_table(weak_terms or {})
        # Phrases that look anatomical but are not ("lung window", "upper abdominal organs").
        self._exclude = compile_report_terms(exclude)

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(anatomy, start, end) of each lexicon match, in text order."""
        text = ascii_lower(text)
        blocked = [m.span() for m in self._exclude.finditer(text)] if self._exclude is not None else []
        hits = _hits(self._patterns, text, blocked) or _hits(self._weak, text, blocked)
        hits.sort(key=lambda h: (h[1], h[2], h[0]))
        return hits

    def scan(self, text: str) -> tuple[SortedStarts, SortedStarts]:
        """(strong hits, weak hits) over a longer `ascii_lower`ed text, by start; `pick`
        chooses per clause by bisection."""
        blocked = [m.span() for m in self._exclude.finditer(text)] if self._exclude is not None else []
        return (SortedStarts(_hits(self._patterns, text, blocked), lambda h: h[1]),
                SortedStarts(_hits(self._weak, text, blocked), lambda h: h[1]))

    @staticmethod
    def pick(scanned: tuple[SortedStarts, SortedStarts], start: int, end: int) -> list[tuple[str, int, int]]:
        strong, weak = scanned
        hits = strong.between(start, end) or weak.between(start, end)
        return sorted(hits, key=lambda h: (h[1], h[2], h[0]))

    def anatomies_in(self, text: str) -> list[str]:
        return _unique(a for a, _, _ in self.find(text))

    def header_anatomy(self, header: str) -> str | None:
        """The anatomy an organ header names ("LUNGS", "Heart and pericardium"), if one."""
        found = self.anatomies_in(header)
        return found[0] if found else None


def _compile_table(table: Mapping[str, Iterable[str]]) -> list[tuple[str, re.Pattern]]:
    compiled = []
    for anatomy, words in table.items():
        pattern = compile_report_terms(words or [])
        if pattern is not None:
            compiled.append((anatomy, pattern))
    return compiled


def _hits(patterns, text: str, blocked) -> list[tuple[str, int, int]]:
    """blocked: the exclude matches, in text order and not overlapping (finditer's)."""
    blocked_starts = [s for s, _ in blocked]
    hits = []
    for anatomy, pattern in patterns:
        for m in pattern.finditer(text):
            if not (blocked and inside_any(blocked, blocked_starts, m.start(), m.end())):
                hits.append((anatomy, m.start(), m.end()))
    return hits


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
