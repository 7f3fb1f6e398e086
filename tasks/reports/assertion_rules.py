"""The assertion rules of reports: the shared engine's lists with the lexicon's own, historic
findings' rules, and one segment's scan cut per clause."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from tasks.common.assertion import DEFAULT_RULES, RULE_LISTS, AssertionRules, Scan
from tasks.reports.text import SortedStarts, any_whitespace


class ClauseScopes:
    """One segment's assertion scan, cut per clause by bisection (`Scan.within` passes over
    every trigger of the segment for each clause: quadratic in a long report)."""

    def __init__(self, scan: Scan):
        self._triggers = SortedStarts(scan.triggers, lambda t: t.start)
        self._terminators = SortedStarts(scan.terminators, lambda x: x[0])
        self._word_starts = scan.word_starts

    def within(self, start: int, end: int) -> Scan:
        return Scan(tuple(t for t in self._triggers.between(start, end) if t.end <= end),
                    tuple(x for x in self._terminators.between(start, end) if x[1] <= end), self._word_starts)


def report_assertion_rules(extra: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """The shared engine's trigger lists plus the lexicon's `assertion_rules`, each term's
    spaces matching any whitespace ("no\nevidence of")."""
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(RULE_LISTS))
    if unknown:
        raise ValueError(f"lexicon assertion_rules: unknown list {unknown[0]!r}; known: {', '.join(RULE_LISTS)}")
    return {name: [any_whitespace(t) for t in [*DEFAULT_RULES[name], *(extra.get(name) or [])]]
            for name in RULE_LISTS}


def historic_rules(table: Mapping[str, Any] | None) -> AssertionRules:
    """Negations of a resolved or historic finding (lexicon `historic_rules`), reaching only
    findings fewer than `max_words` words away: "in a patient with a history of surgery,
    atelectasis is seen" speaks of the atelectasis now."""
    table = dict(table or {})
    max_words = int(table.pop("max_words", 4))
    own = ("negation_pre", "negation_post", "pseudo", "terminators")
    unknown = sorted(set(table) - set(own))
    if unknown:
        raise ValueError(f"lexicon historic_rules: unknown key {unknown[0]!r}; known: max_words, {', '.join(own)}")
    lists = {name: [] for name in RULE_LISTS}
    lists.update({name: list(table.get(name) or []) for name in own})
    lists["terminators"] += DEFAULT_RULES["terminators"]
    return AssertionRules({name: [any_whitespace(t) for t in terms] for name, terms in lists.items()},
                          max_scope=max_words)
