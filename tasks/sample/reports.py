"""Radiology reports for the sample's synthetic CT studies (part "reports").

One report per CT study, written as a radiologist would (sections, organ headers
in some, negations, abbreviations such as GGO and PTX, clauses joining two organs),
saying exactly the phantom's findings (tasks/sample/ct_plan.study_specs) and
nothing else abnormal. A clinical history that names a finding the study does not
have tests that history sections are not read as findings. Deliberately broken
rows: an empty report, one with bytes that are not UTF-8, a history-only report,
a second report for one study.

Written to data/sample/reports/reports.csv: AccessionNumber, StudyInstanceUID
(raw identifiers, as a RIS export has them; split_reports pseudonymizes), report,
expected (ok or the rejection reason). And data/sample/reports/labels.csv, the reference
labels a CT-RATE user has beside the reports: StudyInstanceUID then CT-RATE's 18
abnormality labels (0/1) from the phantoms' findings (tasks/sample/ct_rate_labels.py),
one row per CT study in StudyInstanceUID order.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from tasks.sample.ct_plan import study_specs
from tasks.sample.ct_rate_labels import CT_RATE_LABELS, ct_rate_labels

OUTPUT_SUBDIR = "reports"
COLUMNS = ["AccessionNumber", "StudyInstanceUID", "report", "expected"]
LABEL_COLUMNS = ["StudyInstanceUID", *CT_RATE_LABELS]

LOBES = {"left": ["upper", "lower"], "right": ["upper", "middle", "lower"]}

# finding key -> phrasings; fields: side, Side, lobe, size, location
PRESENT = {
    "nodule": ["A {size} mm solid nodule is seen in the {side} {lobe} lobe.",
               "{Side} {lobe} lobe pulmonary nodule measuring {size} mm.",
               "There is a {size} mm noncalcified nodule in the {lobe} lobe of the {side} lung."],
    "ground_glass_opacity": ["Patchy ground-glass opacity (GGO) in the {side} {lobe} lobe.",
                             "There are ground-glass opacities in the {side} lung.",
                             "Ground-glass opacity is noted in the {side} {lobe} lobe."],
    "consolidation": ["Consolidation is present in the {side} {lobe} lobe.",
                      "Airspace consolidation in the {side} {lobe} lobe with air bronchograms."],
    "emphysema": ["Centrilobular emphysema in both upper lobes.",
                  "Emphysematous changes are seen in the upper lobes of both lungs."],
    "atelectasis": ["Subsegmental atelectasis at the {side} lung base.",
                    "Linear atelectasis in the {side} lower lobe."],
    "pleural_effusion": ["Small {side} pleural effusion.", "There is a small {side}-sided pleural effusion."],
    "cardiomegaly": ["The heart is enlarged.", "Cardiomegaly."],
    "pericardial_effusion": ["Small pericardial effusion.", "A small pericardial effusion is present."],
    "arterial_calcification": ["Atherosclerotic calcification of the {location}.",
                               "Calcified atheromatous plaques in the {location}."],
    "liver_mass": ["A {size} mm hypodense mass in the right hepatic lobe.",
                   "There is a {size} mm hypodense hepatic lesion in segment 7."],
    "renal_cyst": ["Simple cyst in the {side} kidney measuring {size} mm.",
                   "A {size} mm simple renal cyst in the {side} kidney."],
    "splenomegaly": ["The spleen is enlarged.", "Splenomegaly."],
}
IMPRESSION = {
    "nodule": "{Side} {lobe} lobe pulmonary nodule ({size} mm).",
    "ground_glass_opacity": "Ground-glass opacity in the {side} lung.",
    "consolidation": "Consolidation in the {side} {lobe} lobe.",
    "emphysema": "Centrilobular emphysema.",
    "atelectasis": "Subsegmental atelectasis in the {side} lung.",
    "pleural_effusion": "Small {side} pleural effusion.",
    "cardiomegaly": "Cardiomegaly.",
    "pericardial_effusion": "Small pericardial effusion.",
    "arterial_calcification": "Aortic atherosclerosis.",
    "liver_mass": "Hypodense liver mass ({size} mm).",
    "renal_cyst": "Simple {side} renal cyst.",
    "splenomegaly": "Splenomegaly.",
}
# What a radiologist writes when the anatomy is normal (negations and normal statements).
NORMAL = {
    "lung": ["The lungs are clear.", "No pulmonary nodule, consolidation or ground-glass opacity.",
             "Lung parenchyma is unremarkable without nodules or consolidation."],
    "pleura": ["No pleural effusion or PTX.", "No pleural effusion or pneumothorax."],
    "heart": ["The heart is normal in size and there is no pericardial effusion.",
              "Heart size is within normal limits. No pericardial effusion."],
    "aorta": ["The thoracic aorta is normal in caliber without calcification.",
              "The aorta is unremarkable."],
    "liver": ["The liver is unremarkable.", "No focal liver lesion."],
    "kidney": ["The kidneys are unremarkable within the imaged portion.", "No renal cyst or mass."],
    "spleen": ["The spleen is normal in size.", "Spleen is unremarkable."],
}
ALWAYS = ["The trachea and main bronchi are patent.", "No mediastinal or hilar lymphadenopathy.",
          "The esophagus is unremarkable.", "Osseous structures are intact without lytic lesions."]
HEADERS = {"lung": "LUNGS", "pleura": "PLEURA", "heart": "HEART", "aorta": "VESSELS", "liver": "LIVER",
           "kidney": "KIDNEYS", "spleen": "SPLEEN"}
ORDER = ["lung", "pleura", "heart", "aorta", "liver", "spleen", "kidney"]
HISTORY = ["Cough.", "Follow-up of pulmonary nodule.", "Shortness of breath. Rule out pleural effusion.",
           "Staging.", "Chest pain."]


def plan(params: dict) -> list[list[dict]]:
    return [[s for s in study_specs(params) if s.get("expected") == "ok"]]


def _fields(f: dict, rng) -> dict:
    side = f.get("side") if f.get("side") in ("left", "right") else str(rng.choice(["left", "right"]))
    return {"side": side, "Side": side.capitalize(), "lobe": str(rng.choice(LOBES[side])),
            "size": f.get("size_mm") or int(rng.integers(8, 20)),
            "location": f.get("location") or "aortic arch"}


def report_sections(spec: dict, seed: int) -> dict:
    """The report's parts: history ("" when it has none), technique, findings as (organ header
    or None, text) lines, impression."""
    rng = np.random.default_rng([seed, 7101, int(spec["index"])])
    by_anatomy: dict[str, list[dict]] = {}
    for f in spec["findings"]:
        by_anatomy.setdefault(f["anatomy"], []).append(f)
    headers = rng.random() < 0.5
    history = str(rng.choice(HISTORY)) if rng.random() < 0.4 else ""
    contrast = "with intravenous contrast" if spec.get("contrast") else "without contrast"
    findings = []
    impression = []
    for anatomy in ORDER:
        found = by_anatomy.get(anatomy, [])
        sentences = []
        for f in found:
            fields = _fields(f, rng)
            sentences.append(str(rng.choice(PRESENT[f["finding"]])).format(**fields))
            impression.append(IMPRESSION[f["finding"]].format(**fields))
        if not found:
            sentences.append(str(rng.choice(NORMAL[anatomy])))
        findings.append((HEADERS[anatomy] if headers else None, " ".join(sentences)))
    findings.extend((None, str(s)) for s in rng.choice(ALWAYS, size=2, replace=False))
    return {"history": history, "technique": f"Axial CT of the chest and upper abdomen {contrast}.",
            "findings": findings,
            "impression": " ".join(impression) if impression else "No acute abnormality in the chest or upper abdomen."}


def write_report(spec: dict, seed: int) -> str:
    parts = report_sections(spec, seed)
    lines = [f"CLINICAL HISTORY: {parts['history']}"] if parts["history"] else []
    lines += [f"TECHNIQUE: {parts['technique']}", "FINDINGS:",
              *(f"{header}: {text}" if header else text for header, text in parts["findings"]),
              "", "IMPRESSION:", parts["impression"]]
    return "\n".join(lines)


def generate_shard(params: dict, shard: list[dict]) -> dict:
    seed = int(params["sample"]["seed"])
    rows = [{"AccessionNumber": s["AccessionNumber"], "StudyInstanceUID": s["StudyInstanceUID"],
             "report": write_report(s, seed), "expected": "ok"} for s in shard]
    broken = 0
    if params["sample"]["reports"]["broken_inputs"] and len(shard) >= 4:
        rows.append({"AccessionNumber": "ACC-EMPTY-0001", "StudyInstanceUID": "2.25.1000000000000000001",
                     "report": "", "expected": "empty_report"})
        rows.append({"AccessionNumber": "ACC-HIST-0001", "StudyInstanceUID": "2.25.1000000000000000002",
                     "report": "CLINICAL HISTORY: Chest pain. Rule out pulmonary embolism.",
                     "expected": "no_findings"})
        rows.append({"AccessionNumber": shard[0]["AccessionNumber"], "StudyInstanceUID": shard[0]["StudyInstanceUID"],
                     "report": "FINDINGS: Addendum. No change.", "expected": "duplicate_study"})
        rows.append({"AccessionNumber": "ACC-BYTES-0001", "StudyInstanceUID": "2.25.1000000000000000003",
                     "report": "\udcff\udcfeFINDINGS: garbled", "expected": "undecodable_text"})
        broken = 4
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # surrogateescape turns the garbled row's escapes back into raw non-UTF-8 bytes.
    data = buffer.getvalue().encode("utf-8", errors="surrogateescape")
    out = Path(params["sample"]["output_dir"]) / OUTPUT_SUBDIR / "reports.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    write_reference_labels(shard, out.parent / "labels.csv")
    return {"items": len(rows), "reports": len(rows) - broken, "broken_reports": broken}


def write_reference_labels(specs: list[dict], path: Path) -> None:
    """labels.csv: each study's CT-RATE labels from its phantom's findings."""
    rows = [{"StudyInstanceUID": s["StudyInstanceUID"], **ct_rate_labels(f["finding"] for f in s["findings"])}
            for s in sorted(specs, key=lambda s: s["StudyInstanceUID"])]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
