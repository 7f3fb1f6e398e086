"""Present / absent / uncertain for a mention: the one negation engine of captions and reports.

NegEx-style, on character spans: trigger phrases before a mention ("no", "without") or
after it ("was not observed", "was ruled out") negate it unless a terminator ("but",
"which", "shows", ";") lies between; uncertainty triggers ("?", "suspicious for",
"cannot be excluded") work the same way. Pseudo-triggers ("no change", "not only") are
matched first and hide the triggers inside them. With `max_scope`, a trigger reaches
only mentions fewer than that many words away; without it, the text scanned (a report
clause, a caption sentence) is the scope.

    rules = AssertionRules()                       # or AssertionRules({"negation_pre": [...]}, max_scope=8)
    scan = rules.scan(sentence)                    # once per sentence or report segment
    rules.decide(scan, start, end)                 # PRESENT | ABSENT | UNCERTAIN
    rules.flags(scan.within(c0, c1), start, end)   # (negated, uncertain), clause c0:c1 as the scope

Trigger lists are regex fragments matched on ASCII-lowercased text, bounded so that
"no" misses "nodule" while "?" and ";" need no word around them.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Iterable, Mapping

from tasks.common.terms import ascii_lower, lower_pattern

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"
NEGATION, UNCERTAINTY = "negation", "uncertain"
PRE, POST = "pre", "post"

DEFAULT_RULES: dict[str, list[str]] = {
    "pseudo": [
        r"no (?:significant |interval |further )?changes?", r"not only", r"no longer (?:than|larger)",
        r"not (?:be )?(?:evaluated|assessed)(?: optimally)?", r"no contrast", r"non-?contrast",
        r"can ?not be (?:distinguished|differentiated)", r"could not be (?:distinguished|differentiated)",
        r"cannot be characteri[sz]ed", r"not necessarily", r"gram negative",
        r"without change", r"no further", r"not certain whether", r"\(not shown\)",  # a figure's "not shown"
    ],
    "negation_pre": [
        r"no", r"not", r"without", r"absence of", r"absent", r"negative for", r"free of",
        r"neither", r"nor", r"none of", r"no evidence of", r"no signs? of", r"rules? out",
        r"ruled out", r"resolution of", r"regression of", r"denie[sd]", r"never",
        r"rather than",
    ],
    "negation_post": [
        r"(?:was|were|is|are|has been|have been|could be|can be)?\s*not\s+(?:been\s+)?"
        r"(?:observed|detected|seen|noted|identified|found|present|evident|visuali[sz]ed|"
        r"demonstrated|monitored|encountered|apparent|shown|considered|reported|distinguished)",
        r"absent",
        r"(?:was|were|is|are|has been|have been) (?:excluded|ruled out|resolved|disappeared)",
        r"(?:has|have) (?:resolved|regressed|disappeared)", r"no longer",
    ],
    "uncertain_pre": [
        r"possible", r"possibly", r"probable", r"probably", r"likely", r"suspicious(?: for| of)?",
        r"suspected", r"suspect", r"suspicion of", r"questionable", r"equivocal", r"may", r"might", r"could",
        r"suggestive of", r"suggesting", r"differential diagnosis", r"rule out", r"r/o",
        r"cannot be excluded", r"can not be excluded", r"in favou?r of", r"to be distinguished",
        r"nonspecific", r"non-specific", r"indeterminate", r"(?:can ?not|could not) exclude",
        r"concern for", r"presum(?:ed|ably)", r"versus", r"vs\.?",
    ],
    "uncertain_post": [
        r"\?", r"(?:can|could) ?not be (?:excluded|ruled out)", r"(?:is|are|was|were) suspected",
        r"(?:is|are|was|were)? ?suspicious", r"should be considered", r"(?:is|are) not excluded",
        r"(?:may|might|could) be", r"in the differential", r"not (?:excluded|ruled out)",
        r"(?:is|are) (?:possible|likely)",
    ],
    "terminators": [
        r"but", r"however", r"although", r"though", r"except", r"apart from", r"other than",
        r"which", r"whereas", r"while", r"besides", r"aside from", r"with the exception of",
        r"yet", r";", r"show(?:s|n|ing)?", r"demonstrat(?:es|ed|ing)", r"reveal(?:s|ed|ing)",
        r"depict(?:s|ing)", r"indicat(?:es|ing)", r"consistent with", r"due to", r"secondary to",
        r"causing", r"because",
    ],
}
RULE_LISTS = tuple(DEFAULT_RULES)

# Not inside a word: a word-character edge of a trigger needs a non-word character beside
# it ("no" misses "nodule"), a punctuation edge ("?", ";") needs nothing.
_OPEN, _CLOSE = r"(?:(?<!\w)|(?!\w))", r"(?:(?!\w)|(?<!\w))"
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Trigger:
    kind: str  # NEGATION | UNCERTAINTY
    direction: str  # PRE | POST
    start: int
    end: int


@dataclass(frozen=True)
class Scan:
    """Triggers, terminators and word starts of one text, offsets into it."""
    triggers: tuple[Trigger, ...]
    terminators: tuple[tuple[int, int], ...]
    word_starts: tuple[int, ...]

    def within(self, start: int, end: int) -> "Scan":
        """The part of the scan inside [start, end): a clause as the scope."""
        return Scan(tuple(t for t in self.triggers if start <= t.start and t.end <= end),
                    tuple(x for x in self.terminators if start <= x[0] and x[1] <= end),
                    self.word_starts)


class AssertionRules:
    def __init__(self, rules: Mapping[str, Iterable[str]] | None = None, max_scope: int | None = None):
        """rules: trigger lists replacing the defaults by name (RULE_LISTS); max_scope: words."""
        unknown = sorted(set(rules or {}) - set(RULE_LISTS))
        if unknown:
            raise ValueError(f"unknown assertion rule list {unknown[0]!r}; known: {', '.join(RULE_LISTS)}")
        if max_scope is not None and max_scope < 1:
            raise ValueError(f"assertion max_scope must be at least 1 word, not {max_scope}")
        merged = {**DEFAULT_RULES, **{key: list(value) for key, value in (rules or {}).items()}}
        self.max_scope = max_scope
        self._pseudo = _compile("pseudo", merged["pseudo"])
        self._kinds = [(kind, direction, _compile(f"{kind}_{direction}", merged[f"{kind}_{direction}"]))
                       for kind in (NEGATION, UNCERTAINTY) for direction in (PRE, POST)]
        self._terminators = _compile("terminators", merged["terminators"])

    def scan(self, text: str) -> Scan:
        """Triggers of a text (any case; offsets are the text's)."""
        text = ascii_lower(text)
        blocked = [m.span() for m in self._pseudo.finditer(text)] if self._pseudo else []
        blocked_starts = [s for s, _ in blocked]  # in text order, not overlapping: bisect, not a pass each
        found = []
        for kind, direction, pattern in self._kinds:
            for m in pattern.finditer(text) if pattern is not None else ():
                index = bisect_right(blocked_starts, m.start()) - 1
                if index < 0 or m.start() >= blocked[index][1]:
                    found.append(Trigger(kind, direction, m.start(), m.end()))
        terms = tuple(m.span() for m in self._terminators.finditer(text)) if self._terminators else ()
        words = tuple(m.start() for m in _WORD.finditer(text)) if self.max_scope is not None else ()
        return Scan(tuple(found), terms, words)

    def flags(self, scan: Scan, start: int, end: int) -> tuple[bool, bool]:
        """(negated, uncertain) of the mention [start, end) of the scanned text."""
        negated = uncertain = False
        for t in scan.triggers:
            if t.start < end and start < t.end:
                continue  # a trigger inside the mention ("non-calcified") is the mention's own word
            if t.direction == PRE and t.end <= start:
                gap = (t.end, start)
            elif t.direction == POST and t.start >= end:
                gap = (end, t.start)
            else:
                continue
            if any(gap[0] <= s and e <= gap[1] for s, e in scan.terminators):
                continue
            if self.max_scope is not None and _words_between(scan.word_starts, *gap) >= self.max_scope:
                continue
            if t.kind == NEGATION:
                negated = True
            else:
                uncertain = True
        return negated, uncertain

    def decide(self, scan: Scan, start: int, end: int) -> str:
        """ABSENT when a negation reaches the mention, else UNCERTAIN when an uncertainty does."""
        negated, uncertain = self.flags(scan, start, end)
        return ABSENT if negated else UNCERTAIN if uncertain else PRESENT

    def classify(self, text: str, start: int, end: int) -> str:
        """Assertion of the mention text[start:end], the whole text its scope."""
        return self.decide(self.scan(text), start, end)


def _words_between(word_starts: tuple[int, ...], start: int, end: int) -> int:
    return bisect_left(word_starts, end) - bisect_left(word_starts, start)


def _compile(name: str, terms: Iterable[str]) -> re.Pattern | None:
    """One alternation, longest first, each term bounded so that it never starts or ends mid-word."""
    terms = sorted({lower_pattern(t) for t in terms if t}, key=len, reverse=True)
    if not terms:
        return None
    for term in terms:
        try:
            re.compile(term)
        except re.error as exc:
            raise ValueError(f"assertion rule list {name!r}: {term!r} is not a regular expression ({exc})") from None
    return re.compile(_OPEN + "(?:" + "|".join(f"(?:{t})" for t in terms) + ")" + _CLOSE)
