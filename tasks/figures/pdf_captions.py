"""Figure captions on a PDF page: text lines with their type size and font runs, caption starts
("Figure 3.", "Fig. 2:", "FIGURE 1 |", BMC's "Figure 1Chest CT ...") and the blocks that
continue a caption.

A line that starts with a figure label is a caption start on one of three kinds of evidence:
- punctuation: a delimiter after the number ("Figure 3.", "Fig. 2:"), at a block start or in bold;
- font: the label is set apart by its font run (a bold or other font before the caption's
  text, "Figure 1" in Helvetica-Bold then "Chest CT" in Helvetica, with or without a space;
  a bold font is known by its name, since span flags may not say bold);
- position and sequence: a label with neither ("Figure 2 Chest CT", "Figure 2Chest CT" in
  one font), followed by a word that is not lower case, starts a block directly above or
  below a graphic, and its number comes next in the document's sequence (not taken yet, at
  most one past the highest so far).
A caption is its text block plus the blocks that continue it (same column, small gap,
same type size); body text that cites "Fig. 2" starts no caption.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pymupdf

_LABEL = (r"(?P<label>(?:Supplementary\s+|Supplemental\s+)?(?:Figure|FIGURE|Fig\.?|FIG\.?|Figs?\.)\s*"
          r"(?P<num>S?\d+(?:\.\d+)?[A-Za-z]?))")
# The delimiter after the number; the last alternative is BMC's glued "Figure 1Chest".
_CAPTION = re.compile(
    r"^\s*" + _LABEL + r"(?P<delim>\s*(?:[.:|]|[\u2014\u2013]|-\s)\s*|\s+(?=\S)|\s*$|(?=[A-Z][a-z]))"
)
# A font run that holds the label and nothing else ("Figure 1", "Fig. 2.", "FIGURE 3 |").
_LABEL_RUN = re.compile(r"^\s*" + _LABEL + r"\s*(?:[.:|]|[\u2014\u2013]|-)?\s*$")
_BOLD_FONT = re.compile(r"bold|black|heavy|demi", re.I)
_TRAILING_DOI = re.compile(r"\s*(?:doi:|https?://doi\.org/)\s*10\.\S+$", re.I)
_STRONG_DELIM = re.compile(r"[.:|\u2014\u2013-]")
TEXT_FLAGS = pymupdf.TEXT_PRESERVE_WHITESPACE | pymupdf.TEXT_MEDIABOX_CLIP


@dataclass
class Line:
    rect: pymupdf.Rect
    text: str
    size: float
    block: int
    first_in_block: bool
    bold_start: bool  # the first span is bold (a caption label set in bold)
    label_run: str = ""  # the first font run's text, where the line changes font after it


@dataclass
class Caption:
    label: str
    number: str
    text: str  # caption without its label
    rect: pymupdf.Rect
    lines: list[int]
    size: float
    evidence: str = "punctuation"  # CaptionStart.evidence: position-only captions pick regions last



def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return re.sub(r"\s+", " ", text).strip()

# Cheap test on a page's plain text before building its line structures.
ANY_CAPTION = re.compile(r"(?m)^\s*(?:Supplementa(?:ry|l)\s+)?(?:Figure|FIGURE|Figs?|FIG)\.?\s*S?\d")


def page_lines(page: pymupdf.Page, textpage=None) -> list[Line]:
    lines: list[Line] = []
    if textpage is None:
        textpage = page.get_textpage(flags=TEXT_FLAGS)
    data = textpage.extractDICT()
    for block_no, block in enumerate(data.get("blocks", [])):
        if block.get("type", 0) != 0:
            continue
        for index, line in enumerate(block.get("lines", [])):
            spans = [s for s in line.get("spans", []) if s.get("text", "").strip()]
            if not spans:
                continue
            if line.get("dir", (1, 0))[0] < 0.5:
                text = "".join(s["text"] for s in spans)  # rotated text: never a caption
            else:
                text = "".join(s["text"] for s in line.get("spans", []))
            first = spans[0]
            bold = bool(first.get("flags", 0) & 16) or bool(_BOLD_FONT.search(first.get("font", "")))
            run = spans[:next((k for k, s in enumerate(spans) if s.get("font") != first.get("font")), len(spans))]
            lines.append(Line(
                rect=pymupdf.Rect(line["bbox"]),
                text=_clean(text),
                size=max(s.get("size", 0.0) for s in spans),
                block=block_no,
                first_in_block=index == 0 or not lines or lines[-1].block != block_no,
                bold_start=bold,
                label_run=_clean("".join(s["text"] for s in run)) if len(run) < len(spans) else "",
            ))
    return lines


@dataclass
class CaptionStart:
    label: str
    number: str
    prefix: str  # the line's text up to the caption's own words (label and delimiter)
    evidence: str  # punctuation | font | position (needs a graphic beside it and the next number)


def caption_start(line: Line) -> CaptionStart | None:
    """Whether a line starts a caption, and on what evidence (see the module docstring)."""
    run = _LABEL_RUN.match(line.label_run) if line.label_run else None
    if run and line.text.startswith(line.label_run):
        return CaptionStart(_clean(run.group("label")), run.group("num").upper(), line.label_run, "font")
    match = _CAPTION.match(line.text)
    if not match:
        return None
    label, number, prefix = _clean(match.group("label")), match.group("num").upper(), match.group(0)
    delim = match.group("delim") or ""
    if _STRONG_DELIM.search(delim):
        if line.first_in_block or line.bold_start:
            return CaptionStart(label, number, prefix, "punctuation")
        return None
    if line.bold_start:
        return CaptionStart(label, number, prefix, "font")
    rest = line.text[len(prefix):]
    if line.first_in_block and number.isdigit() and not rest[:1].islower():
        # "Figure 2 Chest CT", "Figure 2Chest CT": a caption only beside a graphic and next in sequence;
        # "Figure 3 shows ..." (a lower-case word after the number) is running text
        return CaptionStart(label, number, prefix, "position")
    return None


def block_rect(lines: list[Line], index: int) -> pymupdf.Rect:
    rect = pymupdf.Rect(lines[index].rect)
    for line in lines:
        if line.block == lines[index].block:
            rect |= line.rect
    return rect


def _graphic_beside(rect: pymupdf.Rect, size: float, graphics) -> bool:
    """A graphic just above or below the text (its caption's place), overlapping its columns."""
    if graphics is None or not len(graphics):
        return False
    g = np.asarray(graphics, dtype=np.float64).reshape(-1, 4)
    width = g[:, 2] - g[:, 0]
    reach = max(3.0 * size, 12.0)
    big = width * (g[:, 3] - g[:, 1]) >= 400  # not ticks, rules or bullets
    overlap = np.minimum(rect.x1, g[:, 2]) - np.maximum(rect.x0, g[:, 0]) >= 0.3 * np.minimum(rect.width, width)
    above = (rect.y0 - g[:, 3] >= -2.0) & (rect.y0 - g[:, 3] <= reach)
    below = (g[:, 1] - rect.y1 >= -2.0) & (g[:, 1] - rect.y1 <= reach)
    return bool(np.any(big & overlap & (above | below)))


def caption_starts(lines: list[Line], graphics=None, earlier: set[str] | None = None) -> dict[int, CaptionStart]:
    """The lines that start captions: by punctuation or font, and by position where a graphic
    is beside the block and the number comes next in the sequence (`earlier`: numbers of the
    document's captions on earlier pages)."""
    starts: dict[int, CaptionStart] = {}
    weak: list[tuple[int, CaptionStart]] = []
    for i, line in enumerate(lines):
        start = caption_start(line)
        if start is None:
            continue
        if start.evidence == "position":
            weak.append((i, start))
        else:
            starts[i] = start
    taken = set(earlier or ()) | {s.number for s in starts.values()}
    for i, start in sorted(weak, key=lambda w: (lines[w[0]].rect.y0, lines[w[0]].rect.x0)):
        highest = max((int(n) for n in taken if n.isdigit()), default=0)
        if start.number in taken or int(start.number) > highest + 1:
            continue  # a figure cited again, or cited before its caption: running text
        if _graphic_beside(block_rect(lines, i), lines[i].size, graphics):
            starts[i] = start
            taken.add(start.number)
    return starts


def _dehyphenate_join(parts: list[str]) -> str:
    text = ""
    for part in parts:
        if not text:
            text = part
        elif re.search(r"[a-z]-$", text) and re.match(r"[a-z]", part):
            text = text[:-1] + part  # a word broken at the line end
        else:
            text += " " + part
    return _clean(text)


def find_captions(lines: list[Line], graphics=None, earlier: set[str] | None = None) -> list[Caption]:
    """Captions of a page. graphics: the page's graphic boxes ((n, 4) array), for captions known
    by position; earlier: caption numbers of earlier pages, for the number sequence."""
    found = caption_starts(lines, graphics, earlier)
    starts = set(found)
    order = sorted(range(len(lines)), key=lambda i: (round(lines[i].rect.y0, 1), lines[i].rect.x0))
    position = {i: k for k, i in enumerate(order)}
    used: set[int] = set()
    captions = []
    for start in sorted(starts, key=lambda i: position[i]):
        if start in used:
            continue
        first = lines[start]
        members = [start]
        # The rest of the start line's block.
        members += [i for i in range(start + 1, len(lines)) if lines[i].block == first.block and i not in starts]
        rect = pymupdf.Rect(first.rect)
        for i in members[1:]:
            rect |= lines[i].rect
        size = first.size
        # The caption's own line spacing, where its first block shows it, bounds the next gap.
        own = sorted(lines[b].rect.y0 - lines[a].rect.y1 for a, b in zip(members, members[1:])
                     if lines[b].rect.y0 > lines[a].rect.y1 - 2)
        last_gap = max(own[len(own) // 2], 0.0) if own else None
        # Blocks below that continue it: overlapping the caption's columns, close, same size.
        for i in order[position[start] + 1:]:
            line = lines[i]
            if i in members:
                continue
            if i in starts:
                if line.rect.y0 >= rect.y1 - 1 and x_overlap(line.rect, rect) > 0.5 * min(line.rect.width, rect.width):
                    break
                continue
            if line.rect.y0 < rect.y1 - 1:
                continue  # beside the caption (the other column)
            if x_overlap(line.rect, rect) < 0.5 * min(line.rect.width, rect.width):
                continue
            gap = line.rect.y0 - rect.y1
            limit = 1.2 * size if last_gap is None else 1.5 * last_gap + 2.0
            if gap > limit or abs(line.size - size) > 0.9 or line.rect.x0 < rect.x0 - 3 or line.rect.x1 > rect.x1 + 3:
                break  # body text: further away, another size, or wider than the caption
            if last_gap is None:
                last_gap = max(gap, 0.0)
            block = [k for k in range(len(lines)) if lines[k].block == line.block and k not in starts]
            members += [k for k in block if k not in members]
            for k in block:
                rect |= lines[k].rect
        used.update(members)
        start_info = found[start]
        text = _dehyphenate_join([lines[i].text for i in members])
        prefix = start_info.prefix.rstrip()
        body = _clean(text[len(prefix):] if text.startswith(prefix) else text)
        body = re.sub(r"^[.:|\u2014\u2013-]\s*", "", body)
        body = _TRAILING_DOI.sub("", body)  # publishers print the figure DOI under the caption
        captions.append(Caption(label=start_info.label, number=start_info.number, text=body, rect=rect,
                                lines=members, size=size, evidence=start_info.evidence))
    return captions


def x_overlap(a: pymupdf.Rect, b: pymupdf.Rect) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
