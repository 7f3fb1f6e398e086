"""Parsing untrusted XML: no entity expansion, no DTD loading, no network, a size cap."""
from __future__ import annotations

from lxml import etree

from tasks.common.rejection import Rejected


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=True, remove_pis=True,
    )


def parse_untrusted_xml(data: bytes, max_bytes: int) -> etree._Element:
    """Root element, or `Rejected` with reason xml_too_large, malformed_xml or
    xml_entities_forbidden."""
    if len(data) > max_bytes:
        raise Rejected("xml_too_large", f"the XML is {len(data)} bytes (cap {max_bytes})")
    head = data[:4096]
    prolog = data[: data.find(b"]>") + 2] if b"<!DOCTYPE" in head and b"[" in head else b""
    if b"<!ENTITY" in prolog:
        # Internal entity declarations are the vector of expansion bombs; JATS never needs them.
        raise Rejected("xml_entities_forbidden", "the XML declares entities in an internal DTD")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise Rejected("malformed_xml", f"XML syntax error: {exc}") from exc
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise Rejected("xml_entities_forbidden", "the XML declares entities in an internal DTD")
    return root
