"""A synthetic UMLS release of full size: META/MRCONSO.RRF, META/MRSTY.RRF and SemGroups.txt.

    python benchmarks/make_umls_release.py --out /tmp/umls_synth [--rows 10000000] [--seed 1]

Real layouts: MRCONSO's 18 columns and MRSTY's 6, pipe-terminated, sorted by CUI as NLM
ships them; SemGroups.txt as NLM's (GROUP|Group name|TUI|Type name), with real semantic
types. What a full English UMLS looks like to an indexer (2024AB: about 17 million
MRCONSO rows, 3.3 million concepts, two thirds of the rows English):

- terms per concept heavy-tailed (most concepts 1-3 rows, a few hundreds), about 3 on average;
- strings of real length (a few words, mean near 40 characters, a long tail past 200),
  from a Zipf-distributed vocabulary, so n-grams and words repeat as in real text; case
  variants of one string across sources (QuickUMLS folds them), inverted forms
  ("Arthritis, Rheumatoid"), acronyms, strings shared by several concepts, accents;
- several languages (ENG about two thirds), sources with their term types, suppressible
  rows (SUPPRESS O, E, Y), so umls_index's filters have work.

Every concept has a semantic type, as in a real release (QuickUMLS's installer stops at
a concept without one). Rows are written as they are made; the same seed gives the
same bytes. `--rows` is the MRCONSO row count (the last concept may be cut short).
"""
from __future__ import annotations

import argparse
import bisect
import itertools
import random
import time
from pathlib import Path

# (TUI, tree number, name, group, group name, weight): real Semantic Network types.
TYPES = [
    ("T047", "B2.2.1.2.1", "Disease or Syndrome", "DISO", "Disorders", 12),
    ("T033", "A2.2", "Finding", "DISO", "Disorders", 9),
    ("T121", "A1.4.1.1.1", "Pharmacologic Substance", "CHEM", "Chemicals & Drugs", 8),
    ("T109", "A1.4.1.2.1", "Organic Chemical", "CHEM", "Chemicals & Drugs", 8),
    ("T116", "A1.4.1.2.1.7", "Amino Acid, Peptide, or Protein", "CHEM", "Chemicals & Drugs", 6),
    ("T200", "A1.3.3", "Clinical Drug", "CHEM", "Chemicals & Drugs", 7),
    ("T201", "A2.3.1", "Clinical Attribute", "PHYS", "Physiology", 5),
    ("T061", "B1.3.1.3", "Therapeutic or Preventive Procedure", "PROC", "Procedures", 5),
    ("T060", "B1.3.1.2", "Diagnostic Procedure", "PROC", "Procedures", 3),
    ("T059", "B1.3.1.1", "Laboratory Procedure", "PROC", "Procedures", 4),
    ("T028", "A1.2.3.5", "Gene or Genome", "GENE", "Genes & Molecular Sequences", 5),
    ("T191", "B2.2.1.2.1.2", "Neoplastic Process", "DISO", "Disorders", 3),
    ("T037", "B2.3", "Injury or Poisoning", "DISO", "Disorders", 3),
    ("T046", "B2.2.1.2", "Pathologic Function", "DISO", "Disorders", 2),
    ("T184", "A2.2.2", "Sign or Symptom", "DISO", "Disorders", 1),
    ("T048", "B2.2.1.2.1.1", "Mental or Behavioral Dysfunction", "DISO", "Disorders", 1),
    ("T019", "A1.2.2.1", "Congenital Abnormality", "DISO", "Disorders", 1),
    ("T023", "A1.2.3.1", "Body Part, Organ, or Organ Component", "ANAT", "Anatomy", 3),
    ("T029", "A2.1.5.2", "Body Location or Region", "ANAT", "Anatomy", 1),
    ("T024", "A1.2.3.2", "Tissue", "ANAT", "Anatomy", 1),
    ("T025", "A1.2.3.3", "Cell", "ANAT", "Anatomy", 1),
    ("T031", "A1.4.2", "Body Substance", "ANAT", "Anatomy", 1),
    ("T007", "A1.1.2", "Bacterium", "LIVB", "Living Beings", 2),
    ("T005", "A1.1.4", "Virus", "LIVB", "Living Beings", 1),
    ("T204", "A1.1.3", "Eukaryote", "LIVB", "Living Beings", 3),
    ("T002", "A1.1.3.3", "Plant", "LIVB", "Living Beings", 2),
    ("T074", "A1.3.1", "Medical Device", "DEVI", "Devices", 2),
    ("T129", "A1.4.1.1.3.5", "Immunologic Factor", "CHEM", "Chemicals & Drugs", 2),
    ("T126", "A1.4.1.1.3.3", "Enzyme", "CHEM", "Chemicals & Drugs", 1),
    ("T197", "A1.4.1.2.2", "Inorganic Chemical", "CHEM", "Chemicals & Drugs", 1),
    ("T123", "A1.4.1.1.3", "Biologically Active Substance", "CHEM", "Chemicals & Drugs", 1),
    ("T081", "A2.1.3", "Quantitative Concept", "CONC", "Concepts & Ideas", 1),
    ("T080", "A2.1.2", "Qualitative Concept", "CONC", "Concepts & Ideas", 1),
    ("T170", "A2.4", "Intellectual Product", "CONC", "Concepts & Ideas", 2),
    ("T058", "B1.3.1", "Health Care Activity", "PROC", "Procedures", 1),
    ("T039", "B2.2.1.1", "Physiologic Function", "PHYS", "Physiology", 1),
    ("T044", "B2.2.1.1.4", "Molecular Function", "PHYS", "Physiology", 1),
    ("T034", "A2.2.1", "Laboratory or Test Result", "PHEN", "Phenomena", 1),
    ("T083", "A2.1.5.4", "Geographic Area", "GEOG", "Geographic Areas", 1),
    ("T073", "A1.3", "Manufactured Object", "OBJC", "Objects", 1),
]
# (language, share of the rows after a concept's first (always English), sources with their term types)
LANGUAGES = [
    ("ENG", 0.55, [("SNOMEDCT_US", ("PT", "SY", "FN")), ("MSH", ("MH", "ENTRY", "PEP", "ET")),
                   ("NCI", ("PT", "SY", "AB")), ("MDR", ("PT", "LLT")), ("RXNORM", ("IN", "SCD", "SY")),
                   ("LNC", ("LN", "LC", "OSN")), ("MTH", ("PN",)), ("MEDCIN", ("PT", "FN")),
                   ("HGNC", ("PT", "ACR", "SYN"))]),
    ("SPA", 0.14, [("MSHSPA", ("MH", "ET")), ("MDRSPA", ("PT", "LLT")), ("SCTSPA", ("PT", "SY"))]),
    ("FRE", 0.06, [("MSHFRE", ("MH", "ET")), ("MDRFRE", ("PT", "LLT"))]),
    ("GER", 0.06, [("MSHGER", ("MH", "ET")), ("MDRGER", ("PT", "LLT"))]),
    ("DUT", 0.05, [("MSHDUT", ("MH", "ET")), ("MDRDUT", ("PT", "LLT"))]),
    ("JPN", 0.06, [("MSHJPN", ("PEP", "ET")), ("MDRJA", ("PT", "LLT"))]),
    ("POR", 0.05, [("MSHPOR", ("MH", "ET")), ("MDRPOR", ("PT", "LLT"))]),
    ("ITA", 0.03, [("MSHITA", ("MH", "ET")), ("MDRITA", ("PT", "LLT"))]),
]
SUPPRESS = [("N", 0.90), ("O", 0.06), ("Y", 0.03), ("E", 0.01)]
ONSETS = ("b br c ch cl cr d dr f fl g gl gr h k l m n p ph pl pr ps qu r rh s sc sch sh sp st str t th "
          "tr v w x z").split()
VOWELS = "a e i o u y ae ei ia io ou".split()
CODAS = ("", "", "", "n", "s", "l", "r", "t", "x", "m", "nt", "st", "ct", "ph", "rm", "ng")
SUFFIXES = ("itis", "osis", "oma", "ectomy", "ology", "emia", "pathy", "plasty", "ase", "ine", "ol",
            "ide", "ate", "al", "ic", "ous", "gen", "cyte", "scopy", "algia", "uria", "", "", "", "")
FUNCTION = ("of", "the", "with", "and", "in", "to", "for", "by", "on", "without", "due", "or")
QUALIFIERS = ("NOS", "(disorder)", "(finding)", "(procedure)", "(substance)", "[Ambiguous]", "unspecified",
              "left", "right", "bilateral", "acute", "chronic", "primary", "secondary", "type 2", "stage III",
              "Oral Tablet", "10 MG", "Serum", "Plasma", "Urine", "Mass/volume", "Point in time")
ACCENTS = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ü", "n": "ñ", "c": "ç", "s": "ß"}
KANA = [chr(c) for c in range(0x30A2, 0x30F3)]


def _cumulative(weights):
    return list(itertools.accumulate(weights))


class Release:
    """Rows of one synthetic release, one concept at a time, from one seeded generator."""

    def __init__(self, seed: int, vocabulary: int = 60_000):
        self.rng = random.Random(seed)
        rng = self.rng
        self.words = sorted({rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                             + (rng.choice(ONSETS) + rng.choice(VOWELS) if rng.random() < 0.6 else "")
                             + rng.choice(SUFFIXES) for _ in range(vocabulary)})
        rng.shuffle(self.words)
        self.word_cum = _cumulative(1.0 / (rank + 10) for rank in range(len(self.words)))  # Zipf
        self.type_cum = _cumulative(t[5] for t in TYPES)
        self.lang_cum = _cumulative(share for _, share, _ in LANGUAGES)
        self.sup_cum = _cumulative(share for _, share in SUPPRESS)
        sizes = range(1, 1001)
        self.size_cum = _cumulative(k ** -2.1 for k in sizes)  # terms per concept
        self.recent: list[str] = []  # strings of earlier concepts, for ambiguous terms
        self.cui = 0
        self.serial = 0

    def pick(self, cum, items):
        return items[bisect.bisect_left(cum, self.rng.random() * cum[-1])]

    def word(self) -> str:
        return self.words[bisect.bisect_left(self.word_cum, self.rng.random() * self.word_cum[-1])]

    def name(self) -> str:
        rng = self.rng
        roll = rng.random()
        n = 1 if roll < 0.15 else 2 if roll < 0.4 else 3 if roll < 0.6 else 4 if roll < 0.73 else \
            5 if roll < 0.82 else rng.randint(6, 10) if roll < 0.97 else rng.randint(11, 40)
        words = []
        for i in range(n):
            if 0 < i < n - 1 and rng.random() < 0.15:
                words.append(rng.choice(FUNCTION))
            else:
                words.append(self.word())
        text = " ".join(words)
        if rng.random() < 0.5:
            text = text[0].upper() + text[1:]
        if rng.random() < 0.06:
            text += f" {rng.randint(1, 99)}"
        return text

    def variant(self, base: str, lang: str) -> str:
        rng = self.rng
        roll = rng.random()
        if lang == "JPN":
            return "".join(rng.choice(KANA) for _ in range(rng.randint(2, 14)))
        if lang != "ENG":
            text = " ".join(self.word() if rng.random() < 0.3 else w for w in base.split())
            return "".join(ACCENTS.get(ch, ch) if rng.random() < 0.04 else ch for ch in text)
        if roll < 0.15:
            return base.upper() if rng.random() < 0.3 else base.lower()          # a case variant
        if roll < 0.25 and " " in base:
            head, _, rest = base.partition(" ")
            return f"{rest}, {head}"                                            # inverted
        if roll < 0.32:
            letters = [w[0] for w in base.split() if w[0].isalpha()] or [base[0]]
            return "".join(letters[:6]).upper() + ("" if len(letters) > 1 else "X")  # acronym
        if roll < 0.34 and self.recent:
            return rng.choice(self.recent)                                      # ambiguous
        if roll < 0.6:
            return f"{base} {rng.choice(QUALIFIERS)}"
        if roll < 0.7:
            return base + "s"
        return self.name()

    def concept(self, limit: int):
        """(MRCONSO lines, MRSTY lines) of the next concept, at most `limit` MRCONSO lines."""
        rng = self.rng
        self.cui += rng.randint(1, 2)
        cui = f"C{self.cui:07d}"
        size = min(limit, self.pick(self.size_cum, range(1, 1001)))
        base = self.name()
        if len(self.recent) < 5000:
            self.recent.append(base)
        elif rng.random() < 0.01:
            self.recent[rng.randrange(5000)] = base
        conso = []
        for k in range(size):
            lang, _, sources = LANGUAGES[0] if k == 0 else self.pick(self.lang_cum, LANGUAGES)
            sab, ttys = rng.choice(sources)
            text = base if k == 0 else self.variant(base, lang)
            self.serial += 1
            s = self.serial
            suppress = "N" if k == 0 else self.pick(self.sup_cum, [c for c, _ in SUPPRESS])
            code = f"{sab[:2]}{rng.randint(1, 9_999_999)}"
            conso.append("|".join((
                cui, lang, "P" if k == 0 else rng.choice("PS"), f"L{s:07d}", "PF" if rng.random() < 0.8 else "VO",
                f"S{s:07d}", "Y" if k == 0 or rng.random() < 0.7 else "N", f"A{s:08d}",
                str(rng.randint(1, 99_999_999)) if rng.random() < 0.5 else "", code if sab != "MSH" else "",
                code if sab.startswith("MSH") else "", sab, rng.choice(ttys), code, text,
                str(rng.choice((0, 0, 0, 1, 3, 9))), suppress, "256" if rng.random() < 0.2 else "")) + "|\n")
        n_types = 1 if rng.random() < 0.85 else 2 if rng.random() < 0.87 else 3
        sty = []
        seen = set()
        for _ in range(n_types):
            tui, stn, name, *_ = self.pick(self.type_cum, TYPES)
            if tui not in seen:
                seen.add(tui)
                self.serial += 1
                sty.append(f"{cui}|{tui}|{stn}|{name}|AT{self.serial:08d}|{'256' if rng.random() < 0.3 else ''}|\n")
        return conso, sty


def write_release(out: str | Path, rows: int, seed: int = 1) -> dict:
    """Write <out>/META/MRCONSO.RRF, <out>/META/MRSTY.RRF, <out>/SemGroups.txt; returns counts."""
    out = Path(out)
    meta = out / "META"
    meta.mkdir(parents=True, exist_ok=True)
    release = Release(seed)
    written = concepts = sty_rows = 0
    with open(meta / "MRCONSO.RRF", "w", encoding="utf-8", newline="") as conso_file, \
            open(meta / "MRSTY.RRF", "w", encoding="utf-8", newline="") as sty_file:
        while written < rows:
            conso, sty = release.concept(rows - written)
            conso_file.writelines(conso)
            sty_file.writelines(sty)
            written += len(conso)
            sty_rows += len(sty)
            concepts += 1
    with open(out / "SemGroups.txt", "w", encoding="utf-8", newline="") as handle:
        for tui, _, name, group, group_name, _ in sorted(TYPES, key=lambda t: (t[3], t[0])):
            handle.write(f"{group}|{group_name}|{tui}|{name}\n")
    return {"mrconso_rows": written, "concepts": concepts, "mrsty_rows": sty_rows,
            "mrconso_bytes": (meta / "MRCONSO.RRF").stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=10_000_000, help="MRCONSO rows (default: 10 million)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    counts = write_release(args.out, args.rows, args.seed)
    print({**counts, "seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    main()
