"""Clauses: where one sentence speaks of two things ("The heart is normal in size and
there is no pleural effusion"), cut it so that anatomy and negation scope stay apart.

Cuts at ";" and ":" always, and at a coordinating word ("and", "but", "while", ...)
only when both sides have a verb of their own: "No effusion and no nodule was seen"
stays whole (one negation over a list), "X is normal and no Y is detected" is cut.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_HARD = re.compile(r"\s*[;:]\s+")
_SOFT = re.compile(
    r"(?:\s*,\s*|\s+)(?:and|but|while|whereas|however|although|though|yet)(?:\s*,)?\s+"
    r"|\s*,\s+(?=(?:there|no)\b)",
    re.I,
)
# Finite verbs and participles that make a clause; "there" opens one too.
_PREDICATE = re.compile(
    r"\b(?:is|are|was|were|be|been|being|has|have|had|there|shows?|showed|appears?|appeared|"
    r"remains?|seems?|contains?|measur(?:es|ed|ing)|extend(?:s|ed|ing)|observed|detected|seen|noted|"
    r"identified|found|visualized|visualised|evaluated|demonstrated|recommended|monitored|"
    r"considered|suggested|reached|revealed)\b",
    re.I,
)


@dataclass(frozen=True)
class Clause:
    start: int  # offset in the sentence
    text: str


def has_predicate(text: str) -> bool:
    return _PREDICATE.search(text) is not None


def split_clauses(sentence: str) -> list[Clause]:
    pieces: list[tuple[int, int]] = []
    last = 0
    for m in _HARD.finditer(sentence):
        pieces.append((last, m.start()))
        last = m.end()
    pieces.append((last, len(sentence)))

    clauses: list[tuple[int, int]] = []
    for s, e in pieces:
        clauses.extend(_soft_split(sentence, s, e))
    out = []
    for s, e in clauses:
        text = sentence[s:e]
        stripped = text.strip(" ,")
        if stripped:
            out.append(Clause(s + text.find(stripped), stripped))
    return out


def _soft_split(sentence: str, s: int, e: int) -> list[tuple[int, int]]:
    cuts = [(m.start(), m.end()) for m in _SOFT.finditer(sentence, s, e)]
    if not cuts:
        return [(s, e)]
    result: list[tuple[int, int]] = []
    left_start = s
    for index, (cut_start, cut_end) in enumerate(cuts):
        right_end = cuts[index + 1][0] if index + 1 < len(cuts) else e
        left = sentence[left_start:cut_start]
        right = sentence[cut_end:right_end]
        # Look ahead to the end for the right side: its verb may come after a later cut.
        if has_predicate(left) and has_predicate(sentence[cut_end:e]) and has_predicate(right):
            result.append((left_start, cut_start))
            left_start = cut_end
    result.append((left_start, e))
    return result
