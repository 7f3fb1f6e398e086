"""Figure captions on a PDF page: text lines with their type size and weight, caption starts
("Figure 3.", "Fig. 2:", "FIGURE 1 |", ...) and the blocks that continue a caption.

A caption is its text block plus the blocks that continue it (same column, small gap,
same type size); body text that cites "Fig. 2" starts no caption.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import pymupdf

_CAPTION = re.compile(
    r"^\s*(?P<label>(?:Supplementary\s+|Supplemental\s+)?(?:Figure|FIGURE|Fig\.?|FIG\.?|Figs?\.)\s*"
    r"(?P<num>S?\d+(?:\.\d+)?[A-Za-z]?))(?P<delim>\s*(?:[.:|]|[\u2014\u2013]|-\s)\s*|\s+(?=\S)|\s*$)"
)
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


@dataclass
class Caption:
    label: str
    number: str
    text: str  # caption without its label
    rect: pymupdf.Rect
    lines: list[int]
    size: float



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
            bold = bool(first.get("flags", 0) & 16) or "bold" in first.get("font", "").lower()
            lines.append(Line(
                rect=pymupdf.Rect(line["bbox"]),
                text=_clean(text),
                size=max(s.get("size", 0.0) for s in spans),
                block=block_no,
                first_in_block=index == 0 or not lines or lines[-1].block != block_no,
                bold_start=bold,
            ))
    return lines


def _caption_match(line: Line):
    match = _CAPTION.match(line.text)
    if not match:
        return None
    strong = bool(_STRONG_DELIM.search(match.group("delim") or ""))
    if not strong and not line.bold_start:
        return None  # "Figure 3 shows ..." in running text
    if not line.first_in_block and not line.bold_start:
        return None
    return match


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


def find_captions(lines: list[Line]) -> list[Caption]:
    starts = {i for i, line in enumerate(lines) if _caption_match(line)}
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
        match = _caption_match(first)
        text = _dehyphenate_join([lines[i].text for i in members])
        label = _clean(match.group("label"))
        body = _clean(text[len(match.group(0).rstrip()):] if text.startswith(match.group(0).rstrip()) else text)
        body = re.sub(r"^[.:|\u2014\u2013-]\s*", "", body)
        body = _TRAILING_DOI.sub("", body)  # publishers print the figure DOI under the caption
        captions.append(Caption(label=label, number=match.group("num").upper(), text=body, rect=rect,
                                lines=members, size=size))
    return captions


def x_overlap(a: pymupdf.Rect, b: pymupdf.Rect) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
