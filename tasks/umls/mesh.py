"""MeSH descriptors as a UMLS-shaped vocabulary, for users without a UMLS licence.

Input: NLM's MeSH tree file (tab-separated: tree number, descriptor UI, term; the
2017 file starts with a BOM and a header), or NLM's descriptor XML (tasks/umls/mesh_xml.py).
Output: MRCONSO.RRF, MRSTY.RRF and a SemGroups.txt in a META folder, with descriptor UIs
standing in for CUIs, so the rest of the pipeline cannot tell the difference. Semantic
types come from the tree: the longest listed prefix of each tree number gives a UMLS
semantic type (TUI), and the TUI its semantic group.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tasks.umls import rrf

# tree-number prefix -> (TUI, type name, group); longest prefix wins.
# Coarse by design: a MeSH branch is mapped to the type most of its UMLS concepts carry.
TREE_TYPES: dict[str, tuple[str, str, str]] = {
    "A": ("T023", "Body Part, Organ, or Organ Component", "ANAT"),
    "A01": ("T029", "Body Location or Region", "ANAT"),
    "A10": ("T024", "Tissue", "ANAT"),
    "A11": ("T025", "Cell", "ANAT"),
    "A12": ("T031", "Body Substance", "ANAT"),
    "A15": ("T022", "Body System", "ANAT"),
    "A16": ("T018", "Embryonic Structure", "ANAT"),
    "B": ("T001", "Organism", "LIVB"),
    "B01": ("T204", "Eukaryote", "LIVB"),
    "B02": ("T194", "Archaeon", "LIVB"),
    "B03": ("T007", "Bacterium", "LIVB"),
    "B04": ("T005", "Virus", "LIVB"),
    "C": ("T047", "Disease or Syndrome", "DISO"),
    "C04": ("T191", "Neoplastic Process", "DISO"),
    "C21": ("T037", "Injury or Poisoning", "DISO"),
    "C23": ("T046", "Pathologic Function", "DISO"),
    "C23.888": ("T184", "Sign or Symptom", "DISO"),
    "C25": ("T037", "Injury or Poisoning", "DISO"),
    "C26": ("T037", "Injury or Poisoning", "DISO"),
    "D": ("T103", "Chemical", "CHEM"),
    "D01": ("T197", "Inorganic Chemical", "CHEM"),
    "D02": ("T109", "Organic Chemical", "CHEM"),
    "D03": ("T109", "Organic Chemical", "CHEM"),
    "D04": ("T109", "Organic Chemical", "CHEM"),
    "D05": ("T104", "Chemical Viewed Structurally", "CHEM"),
    "D06": ("T125", "Hormone", "CHEM"),
    "D08": ("T126", "Enzyme", "CHEM"),
    "D09": ("T109", "Organic Chemical", "CHEM"),
    "D10": ("T109", "Organic Chemical", "CHEM"),
    "D12": ("T116", "Amino Acid, Peptide, or Protein", "CHEM"),
    "D13": ("T114", "Nucleic Acid, Nucleoside, or Nucleotide", "CHEM"),
    "D23": ("T123", "Biologically Active Substance", "CHEM"),
    "D25": ("T122", "Biomedical or Dental Material", "CHEM"),
    "D26": ("T121", "Pharmacologic Substance", "CHEM"),
    "D27": ("T120", "Chemical Viewed Functionally", "CHEM"),
    "D27.505": ("T121", "Pharmacologic Substance", "CHEM"),
    "E": ("T061", "Therapeutic or Preventive Procedure", "PROC"),
    "E01": ("T060", "Diagnostic Procedure", "PROC"),
    "E05": ("T059", "Laboratory Procedure", "PROC"),
    "E07": ("T074", "Medical Device", "DEVI"),
    "F01": ("T053", "Behavior", "ACTI"),
    "F02": ("T041", "Mental Process", "PHYS"),
    "F03": ("T048", "Mental or Behavioral Dysfunction", "DISO"),
    "F04": ("T091", "Biomedical Occupation or Discipline", "OCCU"),
    "G": ("T039", "Physiologic Function", "PHYS"),
    "G01": ("T070", "Natural Phenomenon or Process", "PHEN"),
    "G02": ("T070", "Natural Phenomenon or Process", "PHEN"),
    "G03": ("T044", "Molecular Function", "PHYS"),
    "G04": ("T043", "Cell Function", "PHYS"),
    "G05": ("T045", "Genetic Function", "PHYS"),
    "G17": ("T081", "Quantitative Concept", "CONC"),
    "H": ("T091", "Biomedical Occupation or Discipline", "OCCU"),
    "I": ("T077", "Conceptual Entity", "CONC"),
    "I02": ("T065", "Educational Activity", "PROC"),
    "I03": ("T056", "Daily or Recreational Activity", "ACTI"),
    "J": ("T073", "Manufactured Object", "OBJC"),
    "J02": ("T168", "Food", "OBJC"),
    "K": ("T090", "Occupation or Discipline", "OCCU"),
    "L": ("T170", "Intellectual Product", "CONC"),
    "M": ("T098", "Population Group", "LIVB"),
    "N": ("T058", "Health Care Activity", "PROC"),
    "N01": ("T102", "Group Attribute", "CONC"),
    "N02": ("T093", "Health Care Related Organization", "ORGA"),
    "V": ("T170", "Intellectual Product", "CONC"),
    "Z": ("T083", "Geographic Area", "GEOG"),
}


def tree_type(tree_number: str) -> tuple[str, str, str] | None:
    """The (TUI, type name, group) of a tree number by its longest listed prefix."""
    parts = tree_number.split(".")
    candidates = [".".join(parts[:i]) for i in range(len(parts), 0, -1)] + [tree_number[:1]]
    for prefix in candidates:
        if prefix in TREE_TYPES:
            return TREE_TYPES[prefix]
    return None


def read_tree(path: str | Path) -> tuple[dict[str, dict], list[tuple[int, str]]]:
    """Descriptor UI -> {"term", "trees"}; and the (line number, text) of lines that could not be read."""
    descriptors: dict[str, dict] = {}
    bad: list[tuple[int, str]] = []
    with Path(path).open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if number == 1 and fields and fields[0].lower().startswith("tree"):
                continue  # header
            if len(fields) != 3 or not fields[1].startswith("D") or not fields[2].strip():
                if line.strip():
                    bad.append((number, line.strip()[:200]))
                continue
            tree, ui, term = (f.strip() for f in fields)
            entry = descriptors.setdefault(ui, {"term": term, "trees": []})
            entry["trees"].append(tree)
    return descriptors, bad


def uninvert(term: str) -> str | None:
    """'Arthritis, Rheumatoid' -> 'Rheumatoid Arthritis' (MeSH's inverted headings); else None."""
    if term.count(",") != 1 or "(" in term or "[" in term:
        return None
    head, modifier = (part.strip() for part in term.split(","))
    if not head or not modifier or any(ch.isdigit() for ch in modifier):
        return None  # '1,2-Dipalmitoylphosphatidylcholine'-like chemical names stay as they are
    return f"{modifier} {head}"


GROUP_NAMES = {
    "ANAT": "Anatomy", "LIVB": "Living Beings", "DISO": "Disorders", "CHEM": "Chemicals & Drugs",
    "PROC": "Procedures", "DEVI": "Devices", "PHYS": "Physiology", "ACTI": "Activities & Behaviors",
    "OCCU": "Occupations", "PHEN": "Phenomena", "CONC": "Concepts & Ideas", "OBJC": "Objects",
    "ORGA": "Organizations", "GEOG": "Geographic Areas", "GENE": "Genes & Molecular Sequences",
}
FINDING = ("T033", "Finding", "DISO")   # the radiology supplement's type (tasks/umls/supplement.py)


@lru_cache(maxsize=1)
def semantic_groups() -> dict[str, tuple[str, str, str]]:
    """TUI -> (group, group name, type name) for the types a MeSH vocabulary is given here."""
    table = {tui: (group, GROUP_NAMES[group], name) for tui, name, group in [*TREE_TYPES.values(), FINDING]}
    return table


def tree_types(tree_numbers) -> list[tuple[str, str]]:
    """(TUI, type name) of tree numbers, in tree-number order, each TUI once."""
    types: list[tuple[str, str]] = []
    for tree in sorted(tree_numbers):
        found = tree_type(tree)
        if found is not None and found[0] not in (t for t, _ in types):
            types.append(found[:2])
    return types


# A term as written to MRCONSO: (text, TS, STT, ISPREF, TTY[, SAB, CODE]).
PREFERRED = ("P", "PF", "Y")   # TS, STT, ISPREF of a concept's preferred name (tasks.umls.concepts)
OTHER = ("S", "VO", "N")


class RrfWriter:
    """MRCONSO.RRF and MRSTY.RRF written one concept at a time (a MeSH XML has a million
    terms), and SemGroups.txt for the types used, at close."""

    def __init__(self, meta_dir: str | Path):
        self.meta_dir = Path(meta_dir)
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.conso = (self.meta_dir / "MRCONSO.RRF").open("w", encoding="utf-8", newline="")
        self.sty = (self.meta_dir / "MRSTY.RRF").open("w", encoding="utf-8", newline="")
        self.groups: set[tuple[str, str, str, str]] = set()
        self.serial = self.concepts = self.type_rows = 0

    def concept(self, cui: str, names: list[tuple], types: list[tuple[str, str]]) -> int:
        """Write a concept's names (text, TS, STT, ISPREF, TTY[, SAB, CODE]) and types; returns
        the number of MRCONSO rows written."""
        known = semantic_groups()
        for name in names:
            text, ts, stt, ispref, tty = name[:5]
            sab, code = name[5:7] if len(name) > 5 else ("MSH", cui)
            self.serial += 1
            serial = self.serial
            self.conso.write(rrf.format_row((
                cui, "ENG", ts, f"L{serial:07d}", stt, f"S{serial:07d}", ispref, f"A{serial:08d}", "", "",
                cui if sab == "MSH" else "", sab, tty, code, text, "0", "N", "")))
        for tui, type_name in types:
            self.sty.write(rrf.format_row((cui, tui, "", type_name, "", "")))
            if tui in known:
                group, group_name, _ = known[tui]
                self.groups.add((group, group_name, tui, type_name))
        self.concepts += 1
        self.type_rows += len(types)
        return len(names)

    def close(self) -> None:
        self.conso.close()
        self.sty.close()
        rrf.write_semgroups(self.groups, self.meta_dir / "SemGroups.txt")


def mesh_to_rrf(tree_path: str | Path, meta_dir: str | Path, permute_inverted: bool,
                supplement: str | Path | None = None) -> dict:
    """Write MRCONSO.RRF, MRSTY.RRF and SemGroups.txt for the descriptors of a MeSH tree file;
    permute_inverted: also write "Rheumatoid Arthritis" for "Arthritis, Rheumatoid";
    supplement: a radiology supplement (tasks/umls/supplement.py) added to the vocabulary."""
    from tasks.umls.supplement import read_supplement

    descriptors, bad = read_tree(tree_path)
    added = read_supplement(supplement) if supplement else None
    writer = RrfWriter(meta_dir)
    terms = 0
    for ui in sorted(descriptors):
        entry = descriptors[ui]
        names = [(entry["term"], *PREFERRED, "MH")]
        variant = uninvert(entry["term"]) if permute_inverted else None
        if variant:
            names.append((variant, "S", "VO", "N", "PM"))
        if added is not None:
            names += added.names_for(ui)
        terms += writer.concept(ui, names, tree_types(entry["trees"]))
    if added is not None:
        for cui, names, types in added.own_concepts():
            terms += writer.concept(cui, names, types)
    writer.close()
    return {"descriptors": len(descriptors), "terms": terms, "semantic_type_rows": writer.type_rows,
            "bad_lines": len(bad), "bad": bad, "supplement": added}
