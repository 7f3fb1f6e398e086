"""A supplementary vocabulary kept in the project: radiology findings that MeSH lacks.

`radiology_supplement.tsv` (beside this module) lists findings such as consolidation,
ground-glass opacity or tree-in-bud: tab-separated id, name, synonyms (`;`-separated),
MeSH descriptor UI (empty where MeSH has none) and TUI; `#` starts a comment line. The
ids are the project's own (`RAD…`). umls_index reads it when `umls_index.radiology_supplement`
names it, beside a MeSH vocabulary (tree file or XML):

- an entry mapped to a descriptor of the vocabulary adds its names to that descriptor
  (source MEDCONCEPT_RAD, its own id as the code), so text saying "adenopathy" links to
  MeSH's Lymphadenopathy;
- any other entry becomes a concept of its own: its id as the CUI, its TUI (a Disorders type,
  T033 Finding) as the semantic type.

A line that cannot be read is a rejected item `<file>:<line>` (malformed_supplement_line,
duplicate_supplement_id); every other line ends as MRCONSO rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

RADIOLOGY_SUPPLEMENT = Path(__file__).with_name("radiology_supplement.tsv")
SAB = "MEDCONCEPT_RAD"
COLUMNS = ("id", "name", "synonyms", "mesh_ui", "tui")
_ID = re.compile(r"[A-Z][A-Z0-9]{2,15}")
_MESH_UI = re.compile(r"D\d{6,9}")
_TUI = re.compile(r"T\d{3}")


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    synonyms: tuple[str, ...]
    mesh_ui: str | None
    tui: str
    line: int


@dataclass
class Supplement:
    path: Path
    entries: list[Entry]
    bad: list[tuple[int, str, str]]            # (line, reason, detail)
    used: set[str] = field(default_factory=set)  # ids whose names went to a MeSH descriptor

    def __post_init__(self):
        self.by_mesh: dict[str, list[Entry]] = {}
        for entry in self.entries:
            if entry.mesh_ui:
                self.by_mesh.setdefault(entry.mesh_ui, []).append(entry)

    def names_for(self, mesh_ui: str) -> list[tuple]:
        """MRCONSO names (text, TS, STT, ISPREF, TTY, SAB, CODE) that the entries mapped to this
        descriptor add to it; those entries are then used."""
        names = []
        for entry in self.by_mesh.get(mesh_ui, ()):
            self.used.add(entry.id)
            names += [(text, "S", "VO", "N", "SY", SAB, entry.id) for text in (entry.name, *entry.synonyms)]
        return names

    def own_concepts(self) -> Iterator[tuple[str, list[tuple], list[tuple[str, str]]]]:
        """(id, names, types) of the entries not added to a descriptor (none mapped, or the
        descriptor not in the vocabulary), in id order: concepts of their own."""
        from tasks.umls.mesh import semantic_groups

        for entry in sorted(self.entries, key=lambda e: e.id):
            if entry.id in self.used:
                continue
            names = [(entry.name, "P", "PF", "Y", "PT", SAB, entry.id)]
            names += [(text, "S", "VO", "N", "SY", SAB, entry.id) for text in entry.synonyms]
            yield entry.id, names, [(entry.tui, semantic_groups()[entry.tui][2])]

    @property
    def mapped(self) -> int:
        return len(self.used)


def _clean(text: str) -> str:
    return " ".join(text.split())


def read_supplement(path: str | Path) -> Supplement:
    """The entries of a supplement file and its unreadable lines."""
    from tasks.umls.mesh import semantic_groups

    path = Path(path)
    entries: list[Entry] = []
    bad: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            fields = [_clean(f) for f in text.split("\t")]
            if fields == list(COLUMNS):
                continue  # header
            problem = None
            if len(fields) != len(COLUMNS):
                problem = f"expected {len(COLUMNS)} tab-separated fields ({', '.join(COLUMNS)}), got {len(fields)}"
            else:
                ident, name, synonyms, mesh_ui, tui = fields
                if not _ID.fullmatch(ident):
                    problem = f"id {ident!r} is not upper-case letters and digits"
                elif not name:
                    problem = f"{ident} has no name"
                elif mesh_ui and not _MESH_UI.fullmatch(mesh_ui):
                    problem = f"{ident}: {mesh_ui!r} is not a MeSH descriptor UI"
                elif not _TUI.fullmatch(tui) or tui not in semantic_groups():
                    problem = f"{ident}: {tui!r} is not a UMLS semantic type"
                elif "|" in text:
                    problem = f"{ident}: '|' cannot be written to RRF"
            if problem:
                bad.append((number, "malformed_supplement_line", f"{problem}: {text[:200]!r}"))
                continue
            if ident in seen:
                bad.append((number, "duplicate_supplement_id", f"{ident} is listed before line {number}"))
                continue
            seen.add(ident)
            names = list(dict.fromkeys(s for s in (_clean(s) for s in synonyms.split(";")) if s and s != name))
            entries.append(Entry(ident, name, tuple(names), mesh_ui or None, tui, number))
    return Supplement(path, entries, bad)
