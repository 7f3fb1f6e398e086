"""The sample's UMLS-format vocabulary: META/MRCONSO.RRF and META/MRSTY.RRF, plus SemGroups.txt.

Every concept of tasks/sample/catalogue.py (anatomy, findings, modalities) with its
preferred name, synonyms and abbreviation, in the real 18- and 6-column RRF layouts,
so `umls_index` reads it exactly as it would read a licensed UMLS installation. CUIs
and TUIs are real; atom, string and term identifiers (AUI, SUI, LUI) are serial
numbers in a range real releases do not use ("A9...", "S9...", "L9..."), and the
source (SAB) is MCSAMPLE. With `broken_rows`, one malformed MRCONSO row and one
concept without a semantic type exercise the index stage's rejected table.
"""
from __future__ import annotations

from pathlib import Path

from tasks.sample.catalogue import all_concepts
from tasks.umls import rrf

OUTPUT_SUBDIR = "umls"
SAB = "MCSAMPLE"

# TUI -> (type name, tree number, group, group name): only the types the catalogue uses.
SEMANTIC_TYPES = {
    "T023": ("Body Part, Organ, or Organ Component", "A1.2.3.1", "ANAT", "Anatomy"),
    "T029": ("Body Location or Region", "A2.1.5.2", "ANAT", "Anatomy"),
    "T033": ("Finding", "A2.2", "DISO", "Disorders"),
    "T046": ("Pathologic Function", "B2.2.1.2", "DISO", "Disorders"),
    "T047": ("Disease or Syndrome", "B2.2.1.2.1", "DISO", "Disorders"),
    "T060": ("Diagnostic Procedure", "B1.3.1.2", "PROC", "Procedures"),
    "T130": ("Indicator, Reagent, or Diagnostic Aid", "A1.4.1.1.4", "CHEM", "Chemicals & Drugs"),
    "T190": ("Anatomical Abnormality", "A1.2.2", "DISO", "Disorders"),
}

# A concept with a term but no MRSTY row (broken input): "Sample orphan concept".
ORPHAN = ("C9999999", "Sample orphan concept")


def plan(params: dict) -> list[str]:
    return ["vocabulary"]


def vocabulary_rows() -> tuple[list[dict], list[dict]]:
    conso, sty = [], []
    serial = 0
    for concept in sorted(all_concepts(), key=lambda c: c.cui):
        terms = [(concept.name, "P", "PF", "Y", "PT")]
        terms += [(s, "S", "PF", "N", "SY") for s in concept.synonyms]
        if concept.abbreviation:
            terms.append((concept.abbreviation, "S", "PF", "N", "AB"))
        for text, ts, stt, ispref, tty in terms:
            serial += 1
            conso.append({
                "CUI": concept.cui, "LAT": "ENG", "TS": ts, "LUI": f"L9{serial:06d}", "STT": stt,
                "SUI": f"S9{serial:06d}", "ISPREF": ispref, "AUI": f"A9{serial:07d}", "SAUI": "",
                "SCUI": concept.key, "SDUI": "", "SAB": SAB, "TTY": tty, "CODE": concept.key,
                "STR": text, "SRL": "0", "SUPPRESS": "N", "CVF": "",
            })
        name, tree, _, _ = SEMANTIC_TYPES[concept.tui]
        sty.append({"CUI": concept.cui, "TUI": concept.tui, "STN": tree, "STY": name,
                    "ATUI": f"AT9{len(sty) + 1:06d}", "CVF": ""})
    return conso, sty


def generate_shard(params: dict, shard: str) -> dict:
    options = params["sample"]["vocabulary"]
    meta = Path(params["sample"]["output_dir"]) / OUTPUT_SUBDIR / "META"
    meta.mkdir(parents=True, exist_ok=True)
    conso, sty = vocabulary_rows()
    broken = 0
    if options["broken_rows"]:
        conso.append({"CUI": ORPHAN[0], "LAT": "ENG", "TS": "P", "LUI": "L9999999", "STT": "PF",
                      "SUI": "S9999999", "ISPREF": "Y", "AUI": "A99999999", "SAB": SAB, "TTY": "PT",
                      "CODE": "orphan", "STR": ORPHAN[1], "SRL": "0", "SUPPRESS": "N"})
        broken += 1
    rrf.write_mrconso(conso, meta / "MRCONSO.RRF")
    if options["broken_rows"]:
        with (meta / "MRCONSO.RRF").open("a", encoding="utf-8") as handle:
            handle.write("C0024109|ENG|this row has too few columns|\n")  # malformed on purpose
        broken += 1
    rrf.write_mrsty(sty, meta / "MRSTY.RRF")
    rrf.write_semgroups([(g, gname, tui, name) for tui, (name, _, g, gname) in SEMANTIC_TYPES.items()],
                        meta.parent / "SemGroups.txt")
    return {"items": len({row["CUI"] for row in conso}), "vocabulary_terms": len(conso),
            "vocabulary_broken_rows": broken}
