"""Statements that a structure is normal ("unremarkable", "within normal limits").

A clause is a normal statement when it names normality and nothing that denies it
("larger than normal", "not preserved", "irregular"). Negation of findings is the
assertion engine's (tasks/common/assertion.py); this is the reports' own notion.
"""
from __future__ import annotations

from tasks.common.terms import ascii_lower
from tasks.reports.text import any_position_between, compile_report_terms

NORMAL_TERMS = [
    r"normal", r"unremarkable", r"natural", r"within (?:the )?normal limits", r"preserved",
    r"intact", r"patent", r"open", r"clear", r"usual", r"regular",
    r"no (?:significant |pathological |acute |other )*(?:abnormality|abnormalities|pathology|"
    r"findings?|lesions?|changes?)",
]
NOT_NORMAL_TERMS = [r"(?:than|from|not|ab)\s*normal", r"not (?:natural|preserved|intact|patent|open|clear)",
                    r"irregular", r"abnormal"]


class NormalStatements:
    def __init__(self):
        self._normal = compile_report_terms(NORMAL_TERMS)
        self._not_normal = compile_report_terms(NOT_NORMAL_TERMS)

    def scan(self, text: str) -> tuple[list[int], list[int]]:
        """Where normality and its denials start in a text (any case), in text order."""
        text = ascii_lower(text)
        return [m.start() for m in self._normal.finditer(text)], [m.start() for m in self._not_normal.finditer(text)]

    @staticmethod
    def within(scanned, start: int, end: int) -> bool:
        """Whether the span [start, end) of the scanned text is a normal statement."""
        normal, not_normal = scanned
        return any_position_between(normal, start, end) and not any_position_between(not_normal, start, end)

    def is_normal_statement(self, clause: str) -> bool:
        return self.within(self.scan(clause), 0, len(clause))
