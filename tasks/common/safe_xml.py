"""Parsing untrusted XML: no entity expansion, no DTD loading, no network, a size cap.

`parse_untrusted_xml` parses a document held in memory (JATS); `iter_untrusted_xml` streams
the records of a large file (NLM's MeSH XML) under the same parser options, clearing each
record after use so memory stays bounded.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

from lxml import etree

from tasks.common.rejection import Rejected

# lxml options for every untrusted document: entities are never resolved, a DOCTYPE's
# external DTD is never loaded (nor fetched: no network), no huge text nodes or depths.
UNTRUSTED_XML_OPTIONS = dict(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
    huge_tree=False, remove_comments=True, remove_pis=True,
)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(**UNTRUSTED_XML_OPTIONS)


def declares_entities(data: bytes) -> bool:
    """Whether the document (or its first bytes) declares entities in an internal DTD subset."""
    head = data[:4096]
    prolog = data[: data.find(b"]>") + 2] if b"<!DOCTYPE" in head and b"[" in head else b""
    return b"<!ENTITY" in prolog


def _internal_entities(tree) -> bool:
    dtd = tree.docinfo.internalDTD
    return dtd is not None and any(True for _ in dtd.iterentities())


def parse_untrusted_xml(data: bytes, max_bytes: int) -> etree._Element:
    """Root element, or `Rejected` with reason xml_too_large, malformed_xml or
    xml_entities_forbidden."""
    if len(data) > max_bytes:
        raise Rejected("xml_too_large", f"the XML is {len(data)} bytes (cap {max_bytes})")
    if declares_entities(data):
        # Internal entity declarations are the vector of expansion bombs; JATS never needs them.
        raise Rejected("xml_entities_forbidden", "the XML declares entities in an internal DTD")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise Rejected("malformed_xml", f"XML syntax error: {exc}") from exc
    if _internal_entities(root.getroottree()):
        raise Rejected("xml_entities_forbidden", "the XML declares entities in an internal DTD")
    return root


def iter_untrusted_xml(handle: BinaryIO, tag: str) -> Iterator[etree._Element]:
    """Each complete `tag` element of a binary stream, in document order. The caller reads an
    element before asking for the next: it is then cleared and unlinked (bounded memory).

    The caller checks the stream's start with `declares_entities` first (a file that declares
    entities is refused whole, as parse_untrusted_xml refuses it); lxml's XMLSyntaxError
    (malformed XML) reaches the caller, which knows what was read before it.
    """
    context = etree.iterparse(handle, events=("end",), tag=tag, **UNTRUSTED_XML_OPTIONS)
    checked = False
    for _, element in context:
        if not checked:
            if _internal_entities(element.getroottree()):
                raise Rejected("xml_entities_forbidden", "the XML declares entities in an internal DTD")
            checked = True
        yield element
        element.clear(keep_tail=False)
        parent = element.getparent()
        if parent is not None:
            while element.getprevious() is not None:  # earlier records, already cleared
                del parent[0]
