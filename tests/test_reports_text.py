"""tasks.reports.text: HTML entities, whitespace-tolerant lexicon terms, span lookups by bisection;
tasks.reports.sentences.cut_long: the bound on a sentence's length."""
from __future__ import annotations

import re

import pytest

from tasks.reports.sentences import Sentence, cut_long
from tasks.reports.text import (SortedStarts, any_position_between, any_whitespace, compile_report_terms,
                                inside_any, unescape_entities)


def test_entities_unescaped_named_numeric_and_twice_escaped():
    assert unescape_entities("A &amp; B &lt;5 mm&gt; it&#39;s &#x27;x&#x27;") == "A & B <5 mm> it's 'x'"
    assert unescape_entities("&amp;lt;3 mm") == "<3 mm"  # escaped twice
    # only complete references: plain ampersands and unknown names stay as written
    assert unescape_entities("R&L hila, AT&T; &unknownname; &amp") == "R&L hila, AT&T; &unknownname; &amp"
    assert unescape_entities(None) is None and unescape_entities("") == ""


@pytest.mark.parametrize("text", ["pericardial effusion", "pericardial\neffusion", "pericardial \r\n effusion",
                                  "pericardial\teffusion", "pericardial\u00a0effusion"])
def test_term_spaces_match_any_whitespace(text):
    pattern = compile_report_terms(["pericardial (?:\\w+ ){0,2}effusion"])
    assert pattern.fullmatch(text)


def test_any_whitespace_keeps_classes_lookbehinds_escapes_and_quantifiers():
    assert re.fullmatch(any_whitespace("ground[- ]glass"), "ground\nglass")
    assert re.fullmatch(any_whitespace("ground[- ]glass"), "ground-glass")
    # a lookbehind must stay fixed-width: its space is one whitespace character
    bladder = re.compile(any_whitespace("bladder(?<!gall bladder)"))
    assert bladder.search("urinary bladder") and not bladder.search("gall\nbladder")
    assert re.fullmatch(any_whitespace(r"a\ b"), "a b") and not re.fullmatch(any_whitespace(r"a\ b"), "a\nb")
    optional = any_whitespace("gall ?bladder")  # the quantifier applies to the whole run
    assert re.fullmatch(optional, "gallbladder") and re.fullmatch(optional, "gall \n bladder")


def test_sorted_spans_by_bisection_agree_with_a_linear_search():
    items = [(s, s + 3) for s in (40, 5, 17, 17, 90)]
    by_start = SortedStarts(items, lambda x: x[0])
    for lo, hi in [(0, 100), (5, 17), (17, 18), (41, 90), (91, 200)]:
        assert by_start.between(lo, hi) == sorted(x for x in items if lo <= x[0] < hi)
        assert by_start.any_between(lo, hi) == any(lo <= x[0] < hi for x in items)
    positions = [3, 9, 27]
    assert any_position_between(positions, 4, 10) and not any_position_between(positions, 10, 27)
    spans = [(0, 5), (10, 20), (30, 31)]
    starts = [s for s, _ in spans]
    for start, end in [(0, 5), (1, 4), (4, 6), (10, 20), (12, 21), (20, 21), (30, 31), (25, 26)]:
        assert inside_any(spans, starts, start, end) == any(s <= start and end <= e for s, e in spans)


def test_long_sentence_cut_at_whitespace_with_offsets():
    text = "word " * 100 + "x" * 150
    pieces = cut_long(Sentence(7, text.strip()), 120)
    assert all(len(p.text) <= 120 for p in pieces)
    assert "".join(p.text for p in pieces).replace(" ", "") == text.replace(" ", "")  # nothing lost
    assert len(pieces[-1].text) == 30  # a run without whitespace is cut mid-word
    assert pieces[0].start == 7
    for p in pieces:  # each piece's offset points at its text in the segment
        assert (" " * 7 + text)[p.start:p.start + len(p.text)] == p.text
    assert cut_long(Sentence(0, "short"), 120) == [Sentence(0, "short")]
