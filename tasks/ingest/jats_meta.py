"""Article metadata from a JATS/NLM .nxml root (parsed by tasks.common.safe_xml)."""
from __future__ import annotations

import re

from lxml import etree

from tasks.common.rejection import Rejected

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
ALI_LICENSE_REF = "{http://www.niso.org/schemas/ali/1.0/}license_ref"
_SPACE = re.compile(r"\s+")


def clean_text(node) -> str:
    if node is None:
        return ""
    return _SPACE.sub(" ", "".join(node.itertext())).strip()


def _first(root, path: str):
    found = root.xpath(path)
    return found[0] if found else None


def _article_id(meta, *kinds: str) -> str | None:
    for kind in kinds:
        node = _first(meta, f"article-id[@pub-id-type='{kind}']")
        if node is not None and clean_text(node):
            return clean_text(node)
    return None


def normalise_pmcid(value: str | None) -> str | None:
    if not value:
        return None
    digits = re.sub(r"^PMC", "", value.strip(), flags=re.I)
    return f"PMC{digits}" if digits.isdigit() else None


def _year(meta) -> int | None:
    preference = [
        "pub-date[@pub-type='epub']", "pub-date[@date-type='pub'][@publication-format='electronic']",
        "pub-date[@pub-type='ppub']", "pub-date[@date-type='pub']", "pub-date[@pub-type='collection']",
        "pub-date",
    ]
    for path in preference:
        for node in meta.xpath(path):
            text = clean_text(_first(node, "year"))
            if text[:4].isdigit():
                return int(text[:4])
    return None


def licence_fields(meta) -> tuple[str | None, str]:
    """(licence URL, licence text) from <permissions>."""
    licence = _first(meta, "permissions/license")
    if licence is None:
        # Older PMC files carry only a copyright statement, inside or outside <permissions>.
        statement = clean_text(_first(meta, "permissions")) or clean_text(_first(meta, "copyright-statement"))
        return None, statement
    url = licence.get(XLINK_HREF)
    if not url:
        ref = licence.find(f".//{ALI_LICENSE_REF}")
        url = clean_text(ref) if ref is not None else None
    if not url:
        link = _first(licence, ".//ext-link")
        url = link.get(XLINK_HREF) if link is not None else None
    text = " ".join(filter(None, [licence.get("license-type"), clean_text(licence)]))
    return url, text


def article_metadata(root) -> dict:
    """pmcid, pmid, doi, title, journal, year, licence_url, licence_text."""
    if etree.QName(root).localname != "article":
        raise Rejected("not_jats", f"root element is <{etree.QName(root).localname}>, not <article>")
    meta = _first(root, "front/article-meta")
    if meta is None:
        raise Rejected("missing_article_meta", "no <front>/<article-meta>")
    journal = clean_text(_first(root, "front/journal-meta//journal-title")) or clean_text(
        _first(root, "front/journal-meta/journal-id[@journal-id-type='nlm-ta']"))
    url, text = licence_fields(meta)
    return {
        "pmcid": normalise_pmcid(_article_id(meta, "pmcid", "pmc")),
        "pmid": _article_id(meta, "pmid"),
        "doi": _article_id(meta, "doi"),
        "title": clean_text(_first(meta, "title-group/article-title")),
        "journal": journal or None,
        "year": _year(meta),
        "licence_url": url,
        "licence_text": text,
    }
