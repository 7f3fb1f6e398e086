"""JATS .nxml as PMC writes it, for the sample's synthetic articles."""
from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

XLINK = "http://www.w3.org/1999/xlink"
MML = "http://www.w3.org/1998/Math/MathML"
DOCTYPE = (
    '<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange '
    'DTD v1.2 20190208//EN" "JATS-archivearticle1.dtd">'
)


@dataclass
class FigureSpec:
    fig_id: str
    label: str
    title: str
    caption: str  # caption paragraph text (panels included)
    graphic: str  # xlink:href, without extension as PMC writes it
    kind: str
    panels: list[dict] = field(default_factory=list)  # [{"panel": "A", "text": ..., "findings": [...]}]
    findings: list[str] = field(default_factory=list)
    group: str | None = None  # fig-group id when the figure belongs to one
    # truth only (not in the JATS): where each finding was drawn, in the figure's pixels
    regions: list[dict] = field(default_factory=list)


@dataclass
class ArticleSpec:
    pmcid: str
    pmid: str
    doi: str
    title: str
    journal: str
    year: int
    licence_type: str | None
    licence_url: str | None
    licence_text: str
    abstract: str
    paragraphs: list[str]
    figures: list[FigureSpec]
    last_updated: str = ""
    two_column: bool = False


def _sub(parent, tag, text=None, **attrs):
    node = etree.SubElement(parent, tag, {k.replace("__", ":"): v for k, v in attrs.items()})
    if text is not None:
        node.text = text
    return node


def _fig(parent, fig: FigureSpec):
    node = etree.SubElement(parent, "fig", id=fig.fig_id, position="float")
    _sub(node, "label", fig.label)
    caption = _sub(node, "caption")
    _sub(caption, "title", fig.title)
    para = _sub(caption, "p")
    # Italic markup inside captions as publishers write species and panel letters.
    para.text = fig.caption
    graphic = etree.SubElement(node, "graphic")
    graphic.set(f"{{{XLINK}}}href", fig.graphic)
    return node


def build_nxml(article: ArticleSpec) -> bytes:
    root = etree.Element(
        "article",
        nsmap={"xlink": XLINK, "mml": MML},
        attrib={"article-type": "research-article"},
    )
    front = _sub(root, "front")
    journal_meta = _sub(front, "journal-meta")
    _sub(journal_meta, "journal-id", article.journal.replace(" ", "-").lower(), **{"journal-id-type": "nlm-ta"})
    title_group = _sub(journal_meta, "journal-title-group")
    _sub(title_group, "journal-title", article.journal)
    meta = _sub(front, "article-meta")
    _sub(meta, "article-id", article.pmid, **{"pub-id-type": "pmid"})
    _sub(meta, "article-id", article.pmcid.removeprefix("PMC"), **{"pub-id-type": "pmc"})
    _sub(meta, "article-id", article.doi, **{"pub-id-type": "doi"})
    tg = _sub(meta, "title-group")
    _sub(tg, "article-title", article.title)
    pub = _sub(meta, "pub-date", **{"pub-type": "epub"})
    _sub(pub, "day", "15")
    _sub(pub, "month", "6")
    _sub(pub, "year", str(article.year))
    permissions = _sub(meta, "permissions")
    _sub(permissions, "copyright-statement", f"© {article.year} The Authors")
    licence_attrs = {}
    if article.licence_type:
        licence_attrs["license-type"] = article.licence_type
    licence = etree.SubElement(permissions, "license", licence_attrs)
    if article.licence_url:
        licence.set(f"{{{XLINK}}}href", article.licence_url)
    _sub(licence, "license-p", article.licence_text)
    abstract = _sub(meta, "abstract")
    _sub(abstract, "p", article.abstract)
    body = _sub(root, "body")
    sec = _sub(body, "sec", id="s1")
    _sub(sec, "title", "Results")
    groups: dict[str, etree._Element] = {}
    for index, paragraph in enumerate(article.paragraphs):
        p = _sub(sec, "p", paragraph)
        if index == 0:
            # An inline graphic and a table are not figures; the figures stage must skip them.
            inline = etree.SubElement(p, "inline-graphic")
            inline.set(f"{{{XLINK}}}href", f"{article.pmcid}-i001")
            inline.tail = " (see Table 1)."
    table = _sub(sec, "table-wrap", id="T1")
    _sub(table, "label", "Table 1")
    tcap = _sub(table, "caption")
    _sub(tcap, "p", "Patient characteristics.")
    tbl = _sub(table, "table")
    row = _sub(_sub(tbl, "tbody"), "tr")
    _sub(row, "td", "Age")
    _sub(row, "td", "54")
    for fig in article.figures:
        if fig.group:
            if fig.group not in groups:
                groups[fig.group] = _sub(sec, "fig-group", id=fig.group)
            _fig(groups[fig.group], fig)
        else:
            _fig(sec, fig)
    xml = etree.tostring(root, encoding="UTF-8", xml_declaration=False, pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + DOCTYPE.encode() + b"\n" + xml
