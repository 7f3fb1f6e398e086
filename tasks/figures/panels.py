"""Compound-figure captions split into subcaptions keyed by panel ("A", "B", ... or "Left", "Right").

Two caption styles are recognised:
- prefix: the panel label opens its part, "(A) CT shows ... (B) ...", "A, ...", "a) ...", "(a-c) ...";
- suffix: the label closes a clause, "amplitude (a), density (b) and energy (c)".
Labels must run in alphabetical order from A, so "(CT)" or a later "as in (A)" are not panels.
This module cuts the text only (tasks/figures/panel_detect.py cuts the image under figures.panels
split | both); shared_span and panel_text say how a panel's own text is made from the split.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_DASH = "-\u2010\u2011\u2012\u2013\u2014\u2212"
# "(A)", "(a-c)", "(A and B)", "(A, B)", "(A,C)"
_PAREN = re.compile(
    rf"\((?P<body>[A-Za-z](?:\s*(?:[{_DASH}]|,|and|&)\s*[A-Za-z])*)\)"
)
# "A, " / "A. " / "A: " / "a) " / "B-D, " at the start of the caption or of a sentence.
_BARE = re.compile(
    rf"(?:(?<=^)|(?<=[.;:]\s)|(?<=[.;:]\s\s))(?P<body>[A-Za-z](?:\s*[{_DASH}]\s*[A-Za-z])?)(?:[,.:]|\))\s"
)
# "b) " anywhere after a space: the closing parenthesis alone marks a label.
_CLOSE = re.compile(r"(?:(?<=^)|(?<=\s))(?P<body>[a-z])\)\s")
_WORDS = {
    "left": "Left", "right": "Right", "middle": "Middle", "center": "Center", "centre": "Centre",
    "top": "Top", "bottom": "Bottom", "upper": "Upper", "lower": "Lower",
}
_WORD = re.compile(
    r"(?:(?<=^)|(?<=[.;]\s))(?P<word>Left|Right|Middle|Center|Centre|Top|Bottom|Upper|Lower)"
    r"(?:\s+panels?)?\s*[:,]\s", re.I
)
_SENTENCE_END = re.compile(r"(?:^|[.;:!?]\s*)$")


@dataclass
class Marker:
    start: int
    end: int
    panels: list[str]
    prefix: bool  # opens a sentence (prefix style) rather than closing a clause


def _expand(body: str) -> list[str] | None:
    letters = re.findall(r"[A-Za-z]", body)
    if re.search(rf"[{_DASH}]", body) and len(letters) == 2:
        lo, hi = letters[0].upper(), letters[1].upper()
        if lo >= hi or ord(hi) - ord(lo) > 12:
            return None
        return [chr(c) for c in range(ord(lo), ord(hi) + 1)]
    words = [w for w in re.split(r"\s*(?:,|and|&)\s*", body) if w]
    if any(len(w) != 1 for w in words):
        return None
    return [w.upper() for w in words]


def _candidates(caption: str) -> list[Marker]:
    found: dict[int, Marker] = {}
    for match in _PAREN.finditer(caption):
        panels = _expand(match.group("body"))
        if panels:
            before = caption[: match.start()]
            found[match.start()] = Marker(match.start(), match.end(), panels, bool(_SENTENCE_END.search(before)))
    for pattern in (_BARE, _CLOSE):
        for match in pattern.finditer(caption):
            if match.start() in found:
                continue
            panels = _expand(match.group("body"))
            if panels:
                found[match.start()] = Marker(match.start(), match.end(), panels, True)
    return [found[k] for k in sorted(found)]


def _ordered(markers: list[Marker]) -> list[Marker]:
    """The run A, B, C ... in reading order (ranges and lists advance it); out-of-order
    labels are references back to a panel, not new panels."""
    chosen: list[Marker] = []
    expected = "A"
    for marker in markers:
        if marker.panels[0] == expected:
            chosen.append(marker)
            expected = chr(ord(marker.panels[-1]) + 1)
    return chosen


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" ,;")


def split_caption(caption: str) -> tuple[str, list[dict]]:
    """(shared text, [{"panel": "A", "text": ...}, ...]); an empty list when not compound."""
    caption = caption or ""
    markers = _ordered(_candidates(caption))
    if sum(len(m.panels) for m in markers) >= 2:
        if markers[0].prefix:
            return _split_prefix(caption, markers)
        return _split_suffix(caption, markers)
    words = [m for m in _WORD.finditer(caption)]
    if len(words) >= 2 and len({m.group("word").lower() for m in words}) == len(words):
        markers = [Marker(m.start(), m.end(), [_WORDS[m.group("word").lower()]], True) for m in words]
        return _split_prefix(caption, markers)
    return _clean(caption), []


def _split_prefix(caption: str, markers: list[Marker]) -> tuple[str, list[dict]]:
    shared = _clean(caption[: markers[0].start])
    texts: dict[str, list[str]] = {}
    for index, marker in enumerate(markers):
        end = markers[index + 1].start if index + 1 < len(markers) else len(caption)
        text = _clean(caption[marker.end : end])
        for panel in marker.panels:
            texts.setdefault(panel, []).append(text)
    return shared, [{"panel": p, "text": " ".join(t for t in texts[p] if t)} for p in texts]


def _split_suffix(caption: str, markers: list[Marker]) -> tuple[str, list[dict]]:
    # The clause a label closes runs back to the previous label or clause boundary.
    texts: dict[str, list[str]] = {}
    sentence_start = 0
    boundary = re.compile(r"[.;]\s+")
    for found in boundary.finditer(caption[: markers[0].start]):
        sentence_start = found.end()
    shared = _clean(caption[:sentence_start])
    previous_end = sentence_start
    for marker in markers:
        segment = caption[previous_end : marker.start]
        cut = 0
        for match in re.finditer(r"(?:[.;]\s+|,\s+|\s+and\s+)", segment):
            if match.end() < len(segment):
                cut = match.end()
        text = _clean(segment[cut:] if previous_end != sentence_start else segment)
        for panel in marker.panels:
            texts.setdefault(panel, []).append(text)
        previous_end = marker.end
    return shared, [{"panel": p, "text": " ".join(t for t in texts[p] if t)} for p in texts]


def shared_span(caption: str, shared: str | None) -> tuple[int, int] | None:
    """[start, end) of the caption's shared part in the caption; split_caption collapses
    whitespace, so it is found word by word. None when empty or not found."""
    words = (shared or "").split()
    if not words or not caption:
        return None
    found = re.search(r"\s+".join(re.escape(w) for w in words), caption)
    return (found.start(), found.end()) if found else None


def panel_text(shared: str | None, subcaption: str | None) -> str:
    """The text a panel sample trains with: the shared caption, then its subcaption."""
    return " ".join(t for t in ((shared or "").strip(), (subcaption or "").strip()) if t)


def stored_box(box, figure: dict) -> tuple[int, int, int, int]:
    """A panel's box (panels.parquet: source pixels) in its figure's stored pixels (`width`,
    `height` against `source_width`, `source_height`), where its panel image was cut."""
    sx = figure["width"] / (figure.get("source_width") or figure["width"])
    sy = figure["height"] / (figure.get("source_height") or figure["height"])
    x0, y0, x1, y1 = box
    return round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)
