"""NLM's MeSH XML as a UMLS-shaped vocabulary: descriptors (desc*.xml) and supplementary
concept records (supp*.xml), streamed into the META folder that tasks/umls/mesh.py makes
from a tree file (MRCONSO.RRF, MRSTY.RRF, SemGroups.txt; the record UI as the CUI).

Every term of every concept becomes a name of its record: the record's preferred term (MH;
NM for a supplementary record), each concept's preferred term (PEP) and entry terms (ET),
NLM's permuted terms (PM) when asked for, and "Rheumatoid Arthritis" for "Arthritis,
Rheumatoid" when asked for (PM). Semantic types: the record's own SemanticTypeList where the
XML has one (NLM's sample; the preferred concept's first), else the tree numbers' (mesh.py);
a supplementary record without its own takes those of its HeadingMappedTo descriptors.

Untrusted input (tasks.common.safe_xml): the DOCTYPE's external DTD is never loaded or
fetched, entities never expanded, a file declaring entities refused whole; gzip is read by
its magic bytes. Records are read one at a time and cleared (bounded memory). A record that
cannot be used is a rejection (file, record number, reason): no UI, a malformed UI, no name,
a repeated UI, a supplementary record without a usable heading; malformed XML ends the file
with one rejection naming the line (the records after it are not read).
"""
from __future__ import annotations

import gzip
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from lxml import etree

from tasks.common.rejection import Rejected
from tasks.common.safe_xml import declares_entities, iter_untrusted_xml
from tasks.umls.mesh import OTHER, PREFERRED, RrfWriter, tree_types, uninvert

HEAD_BYTES = 65_536
DESCRIPTOR, SUPPLEMENTARY = "descriptor", "supplementary"
# element names per record kind: (record tag, UI, name)
LAYOUT = {
    DESCRIPTOR: ("DescriptorRecord", "DescriptorUI", "DescriptorName/String"),
    SUPPLEMENTARY: ("SupplementalRecord", "SupplementalRecordUI", "SupplementalRecordName/String"),
}
UI_PATTERN = {DESCRIPTOR: re.compile(r"D\d{6,9}"), SUPPLEMENTARY: re.compile(r"C\d{6,9}")}
_TUI = re.compile(r"T\d{3}")
# the TTY of a name by its role (UMLS's MSH term types)
TERM_TYPES = {
    DESCRIPTOR: {"record": "MH", "concept": "PEP", "entry": "ET", "permuted": "PM"},
    SUPPLEMENTARY: {"record": "NM", "concept": "SY", "entry": "SY", "permuted": "PM"},
}


@dataclass
class MeshRecord:
    ui: str
    name: str
    terms: list[tuple[str, str]]                 # (text, role: record | concept | entry | permuted)
    tree_numbers: list[str]
    semantic_types: list[tuple[str, str]]        # the XML's own (TUI, name), when it has them
    headings: list[str]                          # a supplementary record's HeadingMappedTo descriptor UIs
    line: int
    skipped_terms: int = 0                       # terms without text, or with '|' (RRF cannot hold it)


def open_xml(path: str | Path) -> BinaryIO:
    """The file's bytes, decompressed when it is gzip (by its magic bytes, not its name)."""
    path = Path(path)
    with path.open("rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def _clean(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _yes(element, attribute: str) -> bool:
    return element.get(attribute, "N").strip().upper() == "Y"


def read_record(element, kind: str) -> MeshRecord:
    """One DescriptorRecord or SupplementalRecord element (direct children only: a record's
    PharmacologicalAction and EntryCombination elements name other descriptors too)."""
    _, ui_tag, name_path = LAYOUT[kind]
    ui = _clean(element.findtext(ui_tag))
    line = element.sourceline or 0
    if not ui:
        raise Rejected("mesh_record_without_ui", f"record at line {line} has no {ui_tag}")
    if not UI_PATTERN[kind].fullmatch(ui):
        raise Rejected("malformed_mesh_ui", f"{ui_tag} {ui[:40]!r} at line {line} is not a {kind} UI")
    name = _clean(element.findtext(name_path))
    if not name:
        raise Rejected("mesh_record_without_name", f"{ui} (line {line}) has no {name_path}")
    terms: list[tuple[str, str]] = []
    skipped = 0
    concept_types: list[tuple[bool, list[tuple[str, str]]]] = []
    for concept in element.iterfind("ConceptList/Concept"):
        types = []
        for semantic_type in concept.iterfind("SemanticTypeList/SemanticType"):
            tui = _clean(semantic_type.findtext("SemanticTypeUI"))
            if _TUI.fullmatch(tui):
                types.append((tui, _clean(semantic_type.findtext("SemanticTypeName"))))
        concept_types.append((_yes(concept, "PreferredConceptYN"), types))
        for term in concept.iterfind("TermList/Term"):
            text = _clean(term.findtext("String"))
            if not text or "|" in text:
                skipped += 1
                continue
            if _yes(term, "IsPermutedTermYN"):
                role = "permuted"
            elif _yes(term, "RecordPreferredTermYN"):
                role = "record"
            elif _yes(term, "ConceptPreferredTermYN"):
                role = "concept"
            else:
                role = "entry"
            terms.append((text, role))
    if "|" in name:
        raise Rejected("mesh_record_without_name", f"{ui}: its name {name[:80]!r} holds '|', which RRF cannot")
    # the preferred concept's types, else every concept's, in order, each once
    types: list[tuple[str, str]] = []
    for _, found in sorted(concept_types, key=lambda c: not c[0]):
        for entry in found:
            if entry[0] not in (t for t, _ in types):
                types.append(entry)
        if types:
            break
    trees = [_clean(t.text) for t in element.iterfind("TreeNumberList/TreeNumber") if _clean(t.text)]
    headings = []
    if kind == SUPPLEMENTARY:
        for heading in element.iterfind("HeadingMappedToList/HeadingMappedTo/DescriptorReferredTo/DescriptorUI"):
            found = _clean(heading.text).lstrip("*")  # '*' marks a major heading
            if found and found not in headings:
                headings.append(found)
    return MeshRecord(ui, name, terms, trees, types, headings, line, skipped)


def iter_records(path: str | Path, kind: str) -> Iterator[tuple[int, MeshRecord | Rejected]]:
    """(record number, record or why it cannot be used) for every record of a MeSH XML file, in
    file order, numbered from 1. A file that declares entities is one rejection numbered 0;
    malformed XML ends the file with one rejection numbered after the last record read."""
    with open_xml(path) as handle:
        head = handle.read(HEAD_BYTES)
    if declares_entities(head):
        yield 0, Rejected("xml_entities_forbidden", "the XML declares entities in an internal DTD: not read")
        return
    number = 0
    with open_xml(path) as handle:
        try:
            for element in iter_untrusted_xml(handle, LAYOUT[kind][0]):
                number += 1
                try:
                    yield number, read_record(element, kind)
                except Rejected as exc:
                    yield number, exc
        except Rejected as exc:
            yield number + 1, exc
        except (etree.XMLSyntaxError, OSError, EOFError) as exc:  # a truncated gzip is an OSError/EOFError
            where = f"line {exc.lineno}: " if isinstance(exc, etree.XMLSyntaxError) else ""
            yield number + 1, Rejected("malformed_mesh_xml",
                                       f"{where}{exc}; {number} records read, the rest of the file not read")


def record_names(record: MeshRecord, kind: str, permute_inverted: bool, permuted_terms: bool) -> list[tuple]:
    """The record's MRCONSO names (text, TS, STT, ISPREF, TTY): its name first as the preferred
    one, then its terms in file order, each distinct string once."""
    tty = TERM_TYPES[kind]
    names = [(record.name, *PREFERRED, tty["record"])]
    seen = {record.name}
    for text, role in record.terms:
        if text not in seen and (role != "permuted" or permuted_terms):
            seen.add(text)
            names.append((text, *OTHER, tty[role]))
    if permute_inverted:
        for text, *_ in list(names):
            variant = uninvert(text)
            if variant and variant not in seen:
                seen.add(variant)
                names.append((variant, *OTHER, "PM"))
    return names


@dataclass(frozen=True)
class RecordRejection:
    path: Path
    record: int
    reason: str
    detail: str


def mesh_xml_to_rrf(descriptors: str | Path, meta_dir: str | Path, *, permute_inverted: bool,
                    permuted_terms: bool, supplementary: str | Path | None = None,
                    supplement: str | Path | None = None) -> dict:
    """Write MRCONSO.RRF, MRSTY.RRF and SemGroups.txt under meta_dir from a descriptor XML, and a
    supplementary-record XML when given (typed by its HeadingMappedTo descriptors);
    supplement: the project's radiology supplement (tasks/umls/supplement.py) added to them.
    Returns counts and the records rejected (every record read is converted or rejected)."""
    from tasks.umls.supplement import read_supplement

    added = read_supplement(supplement) if supplement else None
    writer = RrfWriter(meta_dir)
    counts: Counter = Counter()
    rejected: list[RecordRejection] = []
    descriptor_types: dict[str, list[tuple[str, str]]] = {}   # for the supplementary records' headings
    shared: dict[tuple, list] = {}
    seen: set[str] = set()
    sources = [(DESCRIPTOR, Path(descriptors))] + ([(SUPPLEMENTARY, Path(supplementary))] if supplementary else [])
    for kind, path in sources:
        for number, record in iter_records(path, kind):
            counts[f"{kind}_records_read"] += 1
            if isinstance(record, Rejected):
                rejected.append(RecordRejection(path, number, record.reason, record.detail))
                continue
            if record.ui in seen:
                rejected.append(RecordRejection(path, number, "duplicate_mesh_ui",
                                                f"{record.ui} (line {record.line}) appeared before"))
                continue
            seen.add(record.ui)
            types = record.semantic_types or tree_types(record.tree_numbers)
            if kind == DESCRIPTOR:
                key = tuple(types)
                descriptor_types[record.ui] = shared.setdefault(key, types)
            elif not types:
                if not record.headings:
                    rejected.append(RecordRejection(path, number, "supplementary_without_heading",
                                                    f"{record.ui} (line {record.line}) has no HeadingMappedTo"))
                    continue
                for heading in record.headings:
                    for entry in descriptor_types.get(heading, ()):
                        if entry not in types:
                            types.append(entry)
                if not types:
                    rejected.append(RecordRejection(
                        path, number, "heading_not_in_descriptors",
                        f"{record.ui}: its headings {', '.join(record.headings)} are not typed descriptors of "
                        f"{Path(descriptors).name}"))
                    continue
            names = record_names(record, kind, permute_inverted, permuted_terms)
            if added is not None and kind == DESCRIPTOR:
                names += added.names_for(record.ui)
            counts["terms"] += writer.concept(record.ui, names, types)
            counts[f"{kind}_records_converted"] += 1
            counts["skipped_terms"] += record.skipped_terms
    if added is not None:
        for cui, names, types in added.own_concepts():
            counts["terms"] += writer.concept(cui, names, types)
    writer.close()
    if not counts[f"{DESCRIPTOR}_records_read"] and not rejected:
        raise ValueError(f"{descriptors}: no {LAYOUT[DESCRIPTOR][0]} element (is it NLM's descriptor XML?)")
    return {**{k: counts[k] for k in sorted(counts)}, "semantic_type_rows": writer.type_rows,
            "rejected": rejected, "supplement": added}
