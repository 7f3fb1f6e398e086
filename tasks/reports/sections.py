"""Report sections: FINDINGS / IMPRESSION and organ headers ("LUNGS:", "Mediastinum:").

A report arrives either as separate findings and impression texts or as one text.
In one text, explicit headers split it; without them, an impression-item marker
(CT-RATE separates impression items with `"` or bullets) starts the impression.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

# Header canonical names; the params table maps header words onto these.
DEFAULT_SECTION_NAMES = {
    "findings": ["findings", "finding", "report", "description", "body"],
    "impression": ["impression", "impressions", "conclusion", "conclusions", "opinion", "result",
                   "summary", "diagnosis"],
    "history": ["history", "clinical history", "indication", "indications", "clinical information",
                "clinical indication", "reason for exam", "reason for examination"],
    "technique": ["technique", "procedure", "protocol", "examination", "exam"],
    "comparison": ["comparison", "comparisons", "prior", "prior studies"],
}


PREAMBLE_SECTIONS = ("history", "technique", "comparison")
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z])")


@dataclass(frozen=True)
class Segment:
    """A stretch of report text from one section (one impression item is one segment)."""

    section: str  # findings | impression | history | technique | comparison | <header>
    header_anatomy: str | None  # anatomy named by an organ header, if any
    start: int  # offset in the report text
    text: str


class SectionSplitter:
    def __init__(self, section_names: Mapping[str, Iterable[str]] | None = None,
                 impression_markers: Iterable[str] = ('"', "•"),
                 header_anatomy: Callable[[str], str | None] | None = None,
                 max_header_words: int = 4):
        names = section_names or DEFAULT_SECTION_NAMES
        self._canonical = {w.lower(): key for key, words in names.items() for w in [key, *words]}
        self._markers = [m for m in impression_markers if m]
        self._marker_re = re.compile("|".join(re.escape(m) for m in self._markers)) if self._markers else None
        self._header_anatomy = header_anatomy
        # A header: start of text/line or after a sentence end, a few words, a colon.
        self._header_re = re.compile(
            r"(?:^|(?<=[\n.;\"•]))[ \t]*([A-Za-z][A-Za-z /&,-]{1,60}?)[ \t]*:(?!\d)", re.M)
        self._max_words = max_header_words

    def _classify_header(self, words: str) -> tuple[str, str | None] | None:
        key = " ".join(words.lower().split())
        if not key or len(key.split()) > self._max_words:
            return None
        if key in self._canonical:
            return self._canonical[key], None
        if self._header_anatomy is not None:
            anatomy = self._header_anatomy(key)
            if anatomy:
                return "findings", anatomy
        return None

    def split(self, findings: str | None = None, impression: str | None = None) -> list[Segment]:
        """Segments of one report, in text order, offsets into `findings + "\\n" + impression`."""
        segments: list[Segment] = []
        if impression is None or not str(impression).strip():
            return self._split_one(findings or "", 0, default="findings", use_markers=True)
        findings = findings or ""
        segments.extend(self._split_one(findings, 0, default="findings", use_markers=False))
        segments.extend(self._split_one(impression, len(findings) + 1, default="impression",
                                        use_markers=False))
        return segments

    def _split_one(self, text: str, base: int, default: str, use_markers: bool) -> list[Segment]:
        # Headers first: they cut the text into (section, anatomy) spans.
        spans: list[tuple[str, str | None, int, int]] = []
        current, anatomy, start = default, None, 0
        saw_header = False
        for match in self._header_re.finditer(text):
            found = self._classify_header(match.group(1))
            if found is None:
                continue
            spans.append((current, anatomy, start, match.start(1)))
            section, header_anatomy = found
            # An organ header inside the impression keeps the impression.
            if header_anatomy is not None and current == "impression":
                section = "impression"
            current, anatomy, start = section, header_anatomy, match.end()
            saw_header = saw_header or section in ("findings", "impression") and header_anatomy is None
        spans.append((current, anatomy, start, len(text)))
        spans = self._end_preambles(text, spans, default)

        segments: list[Segment] = []
        for section, anatomy, s, e in spans:
            pieces = [(s, e)]
            if use_markers and not saw_header and self._marker_re is not None:
                pieces = self._cut_at_markers(text, s, e)
            for index, (ps, pe) in enumerate(pieces):
                # Text after the first marker is a list of impression items.
                name = section if index == 0 else "impression"
                chunk = text[ps:pe]
                stripped = chunk.strip(" \t\n\r\"•")
                if not stripped:
                    continue
                lead = len(chunk) - len(chunk.lstrip(" \t\n\r\"•"))
                segments.append(Segment(name, anatomy, base + ps + lead, stripped))
        return segments

    @staticmethod
    def _end_preambles(text: str, spans, default: str):
        """Without a findings header, a history/technique/comparison section holds
        one line, or in a one-line report one sentence when several follow; the text
        after it is `default` ("Comparison: CT of 2019. Trachea is open. ..." is
        mostly findings)."""
        if any(sec == default and a is None and e > s for sec, a, s, e in spans[1:]):
            return spans
        out = []
        for section, anatomy, s, e in spans:
            if section in PREAMBLE_SECTIONS:
                body = text[s:e]
                stripped = body.lstrip()
                lead = len(body) - len(stripped)
                cut = stripped.find("\n")
                if cut < 0:
                    ends = list(_SENTENCE_END.finditer(stripped))
                    cut = ends[0].end() if len(ends) >= 3 else -1
                if 0 <= cut < len(stripped.rstrip()):
                    out.append((section, anatomy, s, s + lead + cut))
                    out.append((default, None, s + lead + cut, e))
                    continue
            out.append((section, anatomy, s, e))
        return out

    def _cut_at_markers(self, text: str, s: int, e: int) -> list[tuple[int, int]]:
        cuts = [m.start() for m in self._marker_re.finditer(text, s, e)]
        bounds = [s, *cuts, e]
        return [(a, b) for a, b in zip(bounds, bounds[1:])]
