"""Finding mentions from the lexicon: which finding concept, where in the clause.

Each finding has regex terms, optional `exclude` patterns (a mention inside an
exclude match is dropped: "contrast material" is not a medical device) and optional
`context` patterns that must occur in the same sentence ("coronary" for coronary
calcification). Overlapping mentions of different findings keep the longest, so
"pericardial effusion" is not also a bare pleural "effusion". A term's spaces match
any whitespace (a line break inside "pericardial effusion" keeps it that term), and
`{{name}}` in a term is the lexicon's `term_macros[name]` (one definition of, e.g., a
comparative of size shared by every size finding).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from tasks.common.terms import ascii_lower
from tasks.reports.text import SortedStarts, any_position_between, compile_report_terms, inside_any

_MACRO = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class FindingDef:
    key: str
    name: str
    cui: str | None
    anatomy: str | None  # where it lies when the text names no anatomy
    pattern: re.Pattern
    exclude: re.Pattern | None = None
    context: re.Pattern | None = None
    relocatable: bool = False  # lies in the clause's named anatomy when there is one
    generic: bool = False  # a specific finding's overlapping mention subsumes it
    # A sentence that names one of these attributes the mention to another process
    # ("density increase ... in favor of atelectasis").
    exclude_context: re.Pattern | None = None


@dataclass(frozen=True)
class FindingMention:
    key: str
    start: int
    end: int
    text: str
    cui: str | None = None
    source: str = "lexicon"  # lexicon | linker


def expand_macros(terms: Iterable[str], macros: Mapping[str, str], where: str) -> list[str]:
    """Terms with each `{{name}}` replaced by `(?:macros[name])`."""
    def one(m: re.Match) -> str:
        if m.group(1) not in macros:
            raise ValueError(f"{where}: unknown term macro {{{{{m.group(1)}}}}}; known: {', '.join(sorted(macros))}")
        return f"(?:{macros[m.group(1)]})"
    return [_MACRO.sub(one, t) for t in terms]


def finding_defs(table: Mapping[str, Mapping], macros: Mapping[str, str] | None = None) -> list[FindingDef]:
    macros = dict(macros or {})
    defs = []
    for key, entry in table.items():
        def terms(name: str) -> re.Pattern | None:
            return compile_report_terms(expand_macros(entry.get(name) or [], macros, f"finding {key!r} {name}"))

        pattern = terms("terms")
        if pattern is None:
            raise ValueError(f"finding {key!r} has no terms")
        defs.append(FindingDef(
            key=key,
            name=str(entry.get("name") or key),
            cui=entry.get("cui") or None,
            anatomy=entry.get("anatomy") or None,
            pattern=pattern,
            exclude=terms("exclude"),
            context=terms("context"),
            relocatable=bool(entry.get("relocatable", False)),
            exclude_context=terms("exclude_context"),
            generic=bool(entry.get("generic", False)),
        ))
    return defs


class FindingMatcher:
    def __init__(self, defs: Iterable[FindingDef]):
        self.defs = {d.key: d for d in defs}
        self.by_cui = {d.cui: d.key for d in self.defs.values() if d.cui}

    def find(self, text: str, sentence: str | None = None) -> list[FindingMention]:
        """Mentions in `text` (a clause); `sentence` is where context terms are looked for."""
        scan = self.scan(ascii_lower(text if sentence is None else sentence))
        offset = 0 if sentence is None else sentence.find(text)
        return scan.mentions(max(offset, 0), max(offset, 0) + len(text), 0, len(scan.text), shift=max(offset, 0))

    def scan(self, text: str) -> "FindingScan":
        """Every candidate mention in a longer text (a whole section, `ascii_lower`ed),
        matched once; clauses take theirs by offset (far fewer regex calls than per clause)."""
        candidates: list[FindingMention] = []
        contexts: dict[str, list[int]] = {}
        vetoes: dict[str, list[int]] = {}
        excludes: dict[str, list[tuple[int, int]]] = {}
        for d in self.defs.values():
            # Context, vetoes and exclusions are kept for every finding: the linker's
            # mentions of it obey the same rules as the lexicon's.
            if d.context is not None:
                contexts[d.key] = [m.start() for m in d.context.finditer(text)]
            if d.exclude_context is not None:
                vetoes[d.key] = [m.start() for m in d.exclude_context.finditer(text)]
            excluded = [m.span() for m in d.exclude.finditer(text)] if d.exclude is not None else []
            excluded_starts = [s for s, _ in excluded]
            if excluded:
                excludes[d.key] = excluded
            if d.context is not None and not contexts[d.key]:
                continue
            for m in d.pattern.finditer(text):
                if excluded and inside_any(excluded, excluded_starts, m.start(), m.end()):
                    continue
                candidates.append(FindingMention(d.key, m.start(), m.end(), m.group(0), d.cui))
        generic = frozenset(k for k, d in self.defs.items() if d.generic)
        return FindingScan(text, candidates, contexts, vetoes, excludes, generic)


@dataclass
class FindingScan:
    """Candidates and rule positions of one text; every list is in text order (finditer's),
    so a clause's share is found by bisection, not by a pass over the whole text."""
    text: str
    candidates: list[FindingMention]
    contexts: dict[str, list[int]]
    vetoes: dict[str, list[int]] = field(default_factory=dict)
    excludes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    generic: frozenset = frozenset()

    def __post_init__(self):
        self._by_start = SortedStarts(self.candidates, lambda m: m.start)
        self._exclude_starts = {k: [s for s, _ in spans] for k, spans in self.excludes.items()}

    def allows(self, key: str, start: int, end: int, sentence_start: int, sentence_end: int) -> bool:
        """Whether a mention of `key` at [start, end) (from elsewhere, e.g. the linker)
        passes the finding's exclude, context and veto rules."""
        spans = self.excludes.get(key)
        if spans and inside_any(spans, self._exclude_starts[key], start, end):
            return False
        ctx = self.contexts.get(key)
        if ctx is not None and not any_position_between(ctx, sentence_start, sentence_end):
            return False
        veto = self.vetoes.get(key)
        return not (veto and any_position_between(veto, sentence_start, sentence_end))

    def mentions(self, start: int, end: int, sentence_start: int, sentence_end: int,
                 shift: int | None = None) -> list[FindingMention]:
        """Mentions starting in text[start:end], offsets made relative to `start`
        (or to `shift`); context terms are looked for in the sentence span."""
        shift = start if shift is None else shift
        out = []
        for m in self._by_start.between(start, end):
            ctx = self.contexts.get(m.key)
            if ctx is not None and not any_position_between(ctx, sentence_start, sentence_end):
                continue
            veto = self.vetoes.get(m.key)
            if veto and any_position_between(veto, sentence_start, sentence_end):
                continue
            out.append(FindingMention(m.key, m.start - shift, min(m.end, end) - shift, m.text, m.cui, m.source))
        return resolve_overlaps(out, self.generic)


def resolve_overlaps(mentions: list[FindingMention], generic=frozenset()) -> list[FindingMention]:
    """Drop a mention that lies inside a strictly longer mention of another finding, and a
    generic finding's mention that overlaps a specific finding's."""
    kept = []
    for m in mentions:
        inside_longer = any(
            o.key != m.key and o.start <= m.start and m.end <= o.end and (o.end - o.start) > (m.end - m.start)
            for o in mentions
        )
        subsumed = m.key in generic and any(
            o.key not in generic and o.start < m.end and m.start < o.end for o in mentions)
        if not inside_longer and not subsumed:
            kept.append(m)
    kept.sort(key=lambda m: (m.start, m.end, m.key))
    return kept
