"""Present / absent / uncertain for a finding mention, and normal statements.

NegEx-style: trigger phrases before a mention ("no", "without") or after it ("was not
observed", "did not reach pathological size") negate it within its clause unless a
terminator ("but", "which") lies between; uncertainty triggers ("?", "suspicious",
"may be", "cannot be excluded") work the same way. Pseudo-triggers ("no change",
"not only") are matched first so they hide the shorter triggers inside them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from tasks.reports.terms import ascii_lower, compile_terms

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"

DEFAULT_TRIGGERS = {
    "pseudo": [
        r"no (?:significant |interval )?change", r"not only", r"no longer (?:than|larger)",
        r"not (?:be )?(?:evaluated|assessed)(?: optimally)?", r"no contrast", r"non-?contrast",
        r"can ?not be (?:distinguished|differentiated)", r"could not be (?:distinguished|differentiated)",
        r"cannot be characteri[sz]ed",
    ],
    "negation_pre": [
        r"no", r"not", r"without", r"absence of", r"absent", r"negative for", r"free of",
        r"neither", r"nor", r"none of", r"no evidence of", r"no signs? of", r"rules? out",
        r"ruled out", r"resolution of", r"regression of",
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
        r"suspected", r"suspect", r"questionable", r"equivocal", r"may", r"might", r"could",
        r"suggestive of", r"suggesting", r"differential diagnosis", r"rule out", r"r/o",
        r"cannot be excluded", r"can not be excluded", r"in favou?r of", r"to be distinguished",
        r"nonspecific", r"non-specific", r"indeterminate",
    ],
    "uncertain_post": [
        r"\?", r"(?:can|could) ?not be (?:excluded|ruled out)", r"(?:is|are|was|were) suspected",
        r"(?:is|are|was|were)? ?suspicious", r"should be considered", r"(?:is|are) not excluded",
        r"(?:may|might|could) be", r"in the differential", r"not excluded",
    ],
    "terminators": [
        r"but", r"however", r"although", r"though", r"except", r"apart from", r"other than",
        r"which", r"whereas", r"while", r"besides", r"aside from", r"with the exception of",
    ],
    "normal": [
        r"normal", r"unremarkable", r"natural", r"within (?:the )?normal limits", r"preserved",
        r"intact", r"patent", r"open", r"clear", r"usual", r"regular",
        r"no (?:significant |pathological |acute |other )*(?:abnormality|abnormalities|pathology|"
        r"findings?|lesions?|changes?)",
    ],
    "not_normal": [r"(?:than|from|not|ab)\s*normal", r"not (?:natural|preserved|intact|patent|open|clear)",
                   r"irregular", r"abnormal"],
}


@dataclass
class _Trigger:
    kind: str  # negation | uncertain
    direction: str  # pre | post
    start: int
    end: int


@dataclass
class AssertionClassifier:
    triggers: Mapping[str, Iterable[str]] = field(default_factory=lambda: DEFAULT_TRIGGERS)

    def __post_init__(self):
        merged = {**DEFAULT_TRIGGERS, **{k: list(v) for k, v in (self.triggers or {}).items()}}
        self._pseudo = compile_terms(merged["pseudo"])
        self._kinds = [
            ("negation", "pre", compile_terms(merged["negation_pre"])),
            ("negation", "post", compile_terms(merged["negation_post"])),
            ("uncertain", "pre", compile_terms(merged["uncertain_pre"])),
            ("uncertain", "post", _compile_post(merged["uncertain_post"])),
        ]
        self._terminators = compile_terms(merged["terminators"])
        self._normal = compile_terms(merged["normal"])
        self._not_normal = compile_terms(merged["not_normal"])

    def triggers_in(self, clause: str) -> tuple[list[_Trigger], list[tuple[int, int]]]:
        blocked = [m.span() for m in self._pseudo.finditer(clause)] if self._pseudo else []
        found: list[_Trigger] = []
        for kind, direction, pattern in self._kinds:
            if pattern is None:
                continue
            for m in pattern.finditer(clause):
                if any(s <= m.start() < e for s, e in blocked):
                    continue
                found.append(_Trigger(kind, direction, m.start(), m.end()))
        terms = [m.span() for m in self._terminators.finditer(clause)] if self._terminators else []
        return found, terms

    def classify(self, clause: str, start: int, end: int) -> str:
        """Assertion of the mention clause[start:end]."""
        found, terms = self.triggers_in(ascii_lower(clause))
        return self.decide(found, terms, start, end)

    @staticmethod
    def within(scanned, start: int, end: int):
        """The triggers and terminators of a section scan that lie in one clause."""
        found, terms = scanned
        return ([t for t in found if start <= t.start and t.end <= end],
                [x for x in terms if start <= x[0] and x[1] <= end])

    @staticmethod
    def decide(found, terms, start: int, end: int) -> str:
        """Assertion of the mention [start, end) given its clause's triggers (same offsets)."""
        negated = uncertain = False
        for t in found:
            if t.start < end and start < t.end:
                continue  # a trigger inside the mention ("non-calcified") is the mention's own word
            if t.direction == "pre" and t.end <= start:
                between = (t.end, start)
            elif t.direction == "post" and t.start >= end:
                between = (end, t.start)
            else:
                continue
            if any(between[0] <= s and e <= between[1] for s, e in terms):
                continue
            if t.kind == "negation":
                negated = True
            else:
                uncertain = True
        if negated:
            return ABSENT
        return UNCERTAIN if uncertain else PRESENT

    def is_normal_statement(self, clause: str) -> bool:
        """Says the structure is normal ("unremarkable", "within normal limits")."""
        return self.normal_in(self.scan_normal(ascii_lower(clause)), 0, len(clause))

    def scan_normal(self, text: str) -> tuple[list[int], list[int]]:
        normal = [m.start() for m in self._normal.finditer(text)] if self._normal is not None else []
        not_normal = [m.start() for m in self._not_normal.finditer(text)] if self._not_normal is not None else []
        return normal, not_normal

    @staticmethod
    def normal_in(scanned, start: int, end: int) -> bool:
        normal, not_normal = scanned
        return any(start <= n < end for n in normal) and not any(start <= n < end for n in not_normal)


def _compile_post(terms: Iterable[str]) -> re.Pattern | None:
    # "?" is not a word character, so it cannot take the word bounds compile_terms adds.
    terms = list(terms)
    words = [t for t in terms if t != r"\?"]
    pattern = compile_terms(words)
    parts = ([pattern.pattern] if pattern is not None else []) + ([r"\?"] if r"\?" in terms else [])
    return re.compile("|".join(parts)) if parts else None
