"""ConText-style negation and uncertainty on tokenised sentences.

A trigger phrase opens a scope forward (pre-triggers: "no", "without", "possible")
or backward (post-triggers: "ruled out", "cannot be excluded"); a scope stops at
a terminator ("but", "however", "shows"...), at the sentence's end, or after
`max_scope` tokens. Pseudo-triggers ("no change") are matched first and do nothing.
Longer phrases win over shorter ones, so "cannot be excluded" is uncertainty, not
the negation "excluded".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

NEGATED, UNCERTAIN, PSEUDO, TERMINATE = "negated", "uncertain", "pseudo", "terminate"
PRE, POST, NONE = "pre", "post", "none"

DEFAULT_RULES: dict[str, list[str]] = {
    "negation_pre": [
        "no", "not", "without", "free of", "negative for", "no evidence of", "no signs of",
        "no sign of", "absence of", "absent", "denies", "denied", "never", "neither", "nor",
        "lack of", "lacks", "no longer", "resolution of", "rather than",
    ],
    "negation_post": [
        "ruled out", "was excluded", "were excluded", "is excluded", "excluded", "is absent",
        "was absent", "are absent", "were absent", "not seen", "not identified", "not detected",
        "not present", "not visualized", "resolved", "has resolved",
    ],
    "uncertain_pre": [
        "possible", "possibly", "probable", "probably", "suspected", "suspicious for",
        "suspicion of", "suspicious of", "may represent", "may be", "might", "questionable",
        "likely", "cannot exclude", "can not exclude", "could not exclude", "rule out",
        "to rule out", "concern for", "presumed", "presumably", "versus", "vs", "suggestive of",
        "differential diagnosis", "equivocal", "indeterminate",
    ],
    "uncertain_post": [
        "cannot be excluded", "can not be excluded", "could not be excluded", "cannot be ruled out",
        "can not be ruled out", "could not be ruled out", "not excluded", "not ruled out",
        "is suspected", "was suspected", "are suspected", "were suspected", "is possible",
        "is likely", "?",
    ],
    "pseudo": [
        "no change", "no changes", "no significant change", "no interval change", "not only",
        "no increase", "no decrease", "not necessarily", "gram negative", "without change",
        "no further", "not certain whether",
    ],
    "terminators": [
        "but", "however", "although", "though", "except", "apart from", "aside from", "which",
        "whereas", "yet", "still", "while", ";", ":", "with", "shows", "showing", "show",
        "shown", "demonstrates", "demonstrating", "demonstrated", "reveals", "revealing",
        "revealed", "depicts", "depicting", "indicates", "indicating", "consistent with",
        "due to", "secondary to", "causing", "because",
    ],
}


@dataclass(frozen=True)
class Trigger:
    start: int  # token offsets within the sentence
    end: int
    kind: str
    direction: str


class ContextRules:
    def __init__(self, rules: dict | None = None, max_scope: int = 8):
        merged = {key: list(value) for key, value in DEFAULT_RULES.items()}
        for key, value in (rules or {}).items():
            if key not in merged:
                raise ValueError(f"unknown context rule list {key!r}; known: {sorted(merged)}")
            merged[key] = list(value)
        self.max_scope = int(max_scope)
        table = [
            ("negation_pre", NEGATED, PRE), ("negation_post", NEGATED, POST),
            ("uncertain_pre", UNCERTAIN, PRE), ("uncertain_post", UNCERTAIN, POST),
            ("pseudo", PSEUDO, NONE), ("terminators", TERMINATE, NONE),
        ]
        self._phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        for key, kind, direction in table:
            for phrase in merged[key]:
                words = tuple(phrase.lower().replace("-", " - ").split())
                # Pseudo-triggers and real triggers beat terminators on equal phrases.
                if words and (words not in self._phrases or kind != TERMINATE):
                    self._phrases[words] = (kind, direction)
        self._max_len = max((len(p) for p in self._phrases), default=1)
        self._first_words = {p[0] for p in self._phrases}

    def triggers(self, words: Sequence[str]) -> list[Trigger]:
        """Non-overlapping trigger phrases, longest first at each position."""
        found, i, n = [], 0, len(words)
        while i < n:
            hit = None
            if words[i] in self._first_words:
                for length in range(min(self._max_len, n - i), 0, -1):
                    entry = self._phrases.get(tuple(words[i:i + length]))
                    if entry:
                        hit = Trigger(i, i + length, *entry)
                        break
            if hit:
                found.append(hit)
                i = hit.end
            else:
                i += 1
        return found

    def token_status(self, words: Sequence[str]) -> tuple[list[bool], list[bool]]:
        """Per token of one sentence (lowercase words): (negated, uncertain)."""
        n = len(words)
        negated, uncertain = [False] * n, [False] * n
        found = self.triggers(words)
        is_trigger = [False] * n
        for trig in found:
            for k in range(trig.start, trig.end):
                is_trigger[k] = True
        for trig in found:
            if trig.kind not in (NEGATED, UNCERTAIN):
                continue
            target = negated if trig.kind == NEGATED else uncertain
            if trig.direction == PRE:
                end = min(n, trig.end + self.max_scope)
                for other in found:
                    if other.start >= trig.end and other.kind == TERMINATE:
                        end = min(end, other.start)
                        break
                span = range(trig.end, end)
            else:
                start = max(0, trig.start - self.max_scope)
                for other in reversed(found):
                    if other.end <= trig.start and other.kind == TERMINATE:
                        start = max(start, other.end)
                        break
                span = range(start, trig.start)
            for k in span:
                if not is_trigger[k]:
                    target[k] = True
        return negated, uncertain
