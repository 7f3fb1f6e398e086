"""Text helpers of the report rules: HTML entities, whitespace-tolerant terms, sorted spans.

- `unescape_entities`: reports exported from HTML carry `&amp;`, `&lt;`, `&#39;`; the `;`
  of an entity would cut a clause (and a negation's scope) if left in.
- `any_whitespace`: a lexicon term's spaces match any run of whitespace, so a term
  broken by a line break ("pericardial\\neffusion") is still that term.
- `SortedStarts` / `inside_any`: clause-by-offset lookups by bisection, so that one
  report costs time in proportion to its length (a scan of a whole section is shared
  by its clauses; a linear search per clause made long reports quadratic).
"""
from __future__ import annotations

import html
import re
from bisect import bisect_left, bisect_right
from typing import Callable, Generic, Iterable, Sequence, TypeVar

from tasks.common.terms import compile_terms

T = TypeVar("T")

# Only complete references (with the `;`): "R&L" or "&c" in plain text stay as written.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_ENTITY_PASSES = 3  # "&amp;lt;" (escaped twice) is "<"


def unescape_entities(text: str | None) -> str | None:
    """HTML character references replaced by their characters; unknown names stay."""
    for _ in range(_ENTITY_PASSES):
        if not text or "&" not in text:
            return text
        unescaped = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
        if unescaped == text:
            return text
        text = unescaped
    return text


def any_whitespace(term: str) -> str:
    """A regex fragment whose literal spaces match any whitespace run (line breaks, tabs,
    several spaces). Inside a character class or a lookbehind, where a run cannot go, a
    space becomes one whitespace character."""
    out: list[str] = []
    i, in_class, lookbehind_depth, depth = 0, False, None, 0
    while i < len(term):
        ch = term[i]
        if ch == "\\":
            out.append(term[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(r"\s" if ch == " " else ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "(":
            depth += 1
            if lookbehind_depth is None and term.startswith(("(?<=", "(?<!"), i):
                lookbehind_depth = depth
            out.append(ch)
        elif ch == ")":
            if lookbehind_depth == depth:
                lookbehind_depth = None
            depth -= 1
            out.append(ch)
        elif ch == " ":
            if lookbehind_depth is not None:
                out.append(r"\s")
            else:
                while i + 1 < len(term) and term[i + 1] == " ":
                    i += 1
                out.append(r"(?:\s+)")  # a group, so that a quantifier after it ("a ?b") still applies
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def compile_report_terms(terms: Iterable[str]) -> re.Pattern | None:
    """`tasks.common.terms.compile_terms` over whitespace-tolerant terms."""
    return compile_terms([any_whitespace(t) for t in terms if t])


class SortedStarts(Generic[T]):
    """Items sorted by a start offset; `between(lo, hi)`: those starting in [lo, hi)."""

    def __init__(self, items: Iterable[T], start: Callable[[T], int]):
        self.items: list[T] = sorted(items, key=start)
        self.starts = [start(x) for x in self.items]

    def between(self, lo: int, hi: int) -> list[T]:
        return self.items[bisect_left(self.starts, lo):bisect_left(self.starts, hi)]

    def any_between(self, lo: int, hi: int) -> bool:
        return bisect_left(self.starts, lo) < bisect_left(self.starts, hi)

    def __len__(self) -> int:
        return len(self.items)


def any_position_between(positions: Sequence[int], lo: int, hi: int) -> bool:
    """Whether a sorted list of offsets holds one in [lo, hi)."""
    return bisect_left(positions, lo) < bisect_left(positions, hi)


def inside_any(spans: Sequence[tuple[int, int]], spans_starts: Sequence[int], start: int, end: int) -> bool:
    """Whether [start, end) lies inside one of `spans`: sorted, non-overlapping (finditer's
    matches), `spans_starts` their starts. Only the last span starting at or before
    `start` can hold it."""
    index = bisect_right(spans_starts, start) - 1
    return index >= 0 and end <= spans[index][1]
