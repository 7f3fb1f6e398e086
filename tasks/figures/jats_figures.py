"""Figures from JATS: every `<fig>` with its label, clean caption text and resolved graphic file."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from tasks.common.safe_xml import parse_untrusted_xml

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif")
# Tie-break between equally large candidates: lossless/full-size formats before thumbnails.
_EXT_RANK = {".png": 0, ".tif": 1, ".tiff": 1, ".jpg": 2, ".jpeg": 2, ".gif": 3}
# Not caption text: attached data files and their own captions, metadata.
_SKIP = {"supplementary-material", "object-id", "media", "inline-supplementary-material"}
# Elements whose content starts a new run of text (joined by a space).
_BLOCKS = {"title", "p", "list-item", "def-item", "term", "def", "disp-quote", "disp-formula", "list"}
_SPACE = re.compile(r"\s+")


@dataclass
class JatsFigure:
    fig_id: str
    label: str
    title: str
    caption: str  # title and paragraphs, clean text
    href: str | None  # the graphic's xlink:href as written
    graphic: str | None = None  # the package file it resolved to
    group: str | None = None  # fig-group id
    index: int = 0  # order of appearance in the article
    candidates: list[str] = field(default_factory=list)


def local(tag) -> str:
    if not isinstance(tag, str):
        return ""  # comments, processing instructions
    return tag.rsplit("}", 1)[-1]


# Publisher HTML that sometimes survives as literal text inside JATS ("&lt;i&gt;" in the XML).
_STRAY_TAG = re.compile(r"</?(?:i|b|u|em|strong|sup|sub|sc|italic|bold|br)\s*/?>", re.I)


def normalise_space(text: str) -> str:
    return _SPACE.sub(" ", _STRAY_TAG.sub("", text)).strip()


def _collect(node, out: list[str]) -> None:
    name = local(node.tag)
    if name in _SKIP or not name:
        return
    if name == "alternatives":
        # The same formula or graphic in several encodings: keep the first textual one only.
        for child in node:
            if local(child.tag) in {"math", "tex-math", "mml:math"} or "".join(child.itertext()).strip():
                _collect(child, out)
                break
        return
    if name == "math":
        alt = node.get("alttext")
        text = "".join(node.itertext())
        out.append(text if text.strip() else (alt or ""))
        return
    block = name in _BLOCKS
    if block:
        out.append(" ")
    if node.text:
        out.append(node.text)
    for child in node:
        _collect(child, out)
        if child.tail:
            out.append(child.tail)
    if block:
        out.append(" ")


def element_text(node) -> str:
    """Text of an element with inline markup flattened and blocks separated by a space."""
    if node is None:
        return ""
    out: list[str] = []
    _collect(node, out)
    return normalise_space("".join(out))


def _fig_caption(fig) -> tuple[str, str]:
    caption = next((c for c in fig if local(c.tag) == "caption"), None)
    if caption is None:
        return "", ""
    title_node = next((c for c in caption if local(c.tag) == "title"), None)
    return element_text(title_node), element_text(caption)


def _first_graphic(fig) -> str | None:
    # Direct graphics first (alternatives hold the same image in other sizes).
    for node in fig.iter():
        if local(node.tag) == "graphic" and not _inside(node, fig, {"caption", "supplementary-material"}):
            href = node.get(XLINK_HREF)
            if href:
                return href.strip()
    return None


def _inside(node, stop, names: set[str]) -> bool:
    parent = node.getparent()
    while parent is not None and parent is not stop:
        if local(parent.tag) in names:
            return True
        parent = parent.getparent()
    return False


def figures_from_root(root) -> list[JatsFigure]:
    """Every `<fig>` in document order, `<fig-group>` members included, sub-articles included."""
    figures = []
    for node in root.iter("{*}fig"):
        if _inside(node, None, {"supplementary-material"}):
            continue
        group = node.getparent()
        group_id = group.get("id") if group is not None and local(group.tag) == "fig-group" else None
        label_node = next((c for c in node if local(c.tag) == "label"), None)
        title, caption = _fig_caption(node)
        if not caption and group_id is not None:
            title, caption = _fig_caption(group)  # members may share the group's caption
        figures.append(JatsFigure(
            fig_id=node.get("id") or f"fig-{len(figures) + 1}",
            label=element_text(label_node),
            title=title,
            caption=caption,
            href=_first_graphic(node),
            group=group_id,
            index=len(figures),
        ))
    return figures


def parse_figures(data: bytes, max_bytes: int = 32 << 20) -> list[JatsFigure]:
    return figures_from_root(parse_untrusted_xml(data, max_bytes))


def graphic_candidates(href: str, files: list[str]) -> list[str]:
    """Package files the href may name: exact path, or the same stem with an image extension.

    PMC writes hrefs without extension ("pone.0012255.g001"), publishers with one; the
    file may sit beside the .nxml or (rarely) in a sub-folder.
    """
    href = href.strip()
    if href.startswith(("http://", "https://", "info:", "doi:")):
        href = href.rsplit("/", 1)[-1]
    base = posixpath.basename(href).lower()
    stem, ext = posixpath.splitext(base)
    exact, same_stem = [], []
    for name in files:
        file_base = posixpath.basename(name).lower()
        file_stem, file_ext = posixpath.splitext(file_base)
        if file_ext not in IMAGE_EXTS:
            continue
        if file_base == base:
            exact.append(name)
        elif file_stem == base or (ext in IMAGE_EXTS and file_stem == stem):
            same_stem.append(name)
    return sorted(exact) + sorted(same_stem)


def choose_graphic(candidates: list[str], sizes: dict[str, tuple[int, int] | None]) -> str | None:
    """The full-size image: the most pixels, then the format rank (a GIF thumbnail loses)."""
    usable = [c for c in candidates if sizes.get(c)]
    if not usable:
        return None

    def rank(name: str):
        w, h = sizes[name]
        return (-(w * h), _EXT_RANK.get(posixpath.splitext(name.lower())[1], 9), name)

    return min(usable, key=rank)


_LABEL_NUMBER = re.compile(r"(S?\d+[A-Za-z]?)\b")


def label_number(label: str | None) -> str | None:
    """'Figure 3.' -> '3', 'Fig S2' -> 'S2'; None when the label holds no number."""
    if not label:
        return None
    match = _LABEL_NUMBER.search(label)
    return match.group(1).upper() if match else None
