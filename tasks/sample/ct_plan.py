"""Study planning for the sample's synthetic CT: every study's identity, format and findings.

Everything is drawn from `sample.seed`: UIDs are hashed from the seed and the case
(`study_uid`), other choices from numpy generators seeded with it, so two runs plan
the same studies.
"""
from __future__ import annotations

import numpy as np
from pydicom.uid import generate_uid

from tasks.sample.catalogue import FINDINGS
from tasks.schema.literature import SampleCt

# Findings the phantom can draw, grouped by the catalogue anatomy they belong to.
FINDINGS_BY_ANATOMY = {
    "lung": ["nodule", "ground_glass_opacity", "consolidation", "emphysema", "atelectasis"],
    "pleura": ["pleural_effusion"],
    "heart": ["cardiomegaly", "pericardial_effusion"],
    "aorta": ["arterial_calcification"],
    "liver": ["liver_mass"],
    "kidney": ["renal_cyst"],
    "spleen": ["splenomegaly"],
}
# Which segmented anatomy (segment stage grouping) shows each catalogue anatomy.
SEGMENT_ANATOMY = {"lung": "lung", "pleura": "lung", "heart": "heart", "aorta": "aorta", "liver": "liver",
                   "kidney": "kidney", "spleen": "spleen"}

BROKEN = ["truncated_file", "mr_series", "mixed_matrix", "missing_slice", "single_slice"]
BROKEN_REASON = {"truncated_file": "corrupt_pixel_data", "mr_series": "not_ct",
                 "mixed_matrix": "inconsistent_matrix", "missing_slice": "missing_slices",
                 "single_slice": "single_slice"}


def ct_settings(params: dict) -> dict:
    """`sample.ct` as plain values (params are validated and complete)."""
    return SampleCt.model_validate(params["sample"]["ct"]).model_dump()


def study_uid(seed: int, *parts) -> str:
    """A DICOM UID hashed from the seed and the item's identity (same inputs, same UID)."""
    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def study_specs(params: dict) -> list[dict]:
    """Every study's identity, format and findings, drawn from sample.seed (deterministic)."""
    cfg = ct_settings(params)
    seed = int(params["sample"]["seed"])
    rng = np.random.default_rng([seed, 7001])
    n_patients, n_studies = int(cfg["n_patients"]), int(cfg["n_studies"])
    patient_of = list(range(n_patients)) + [int(i) for i in rng.integers(0, n_patients, n_studies - n_patients)]
    patient_of = sorted(patient_of[:n_studies])
    patients = []
    for p in range(n_patients):
        patients.append({
            "PatientID": f"MC{seed % 1000:03d}{p:04d}",
            "PatientName": f"SYNTH^{chr(65 + p % 26)}{chr(65 + (p * 7) % 26)}PATIENT{p:02d}",
            "sex": "FM"[p % 2],
            "age": int(rng.integers(35, 88)),
            "birth": f"19{int(rng.integers(30, 89)):02d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
            "scale": [float(s) for s in rng.uniform(0.95, 1.05, 3)],
        })
    p_abnormal = (1 - cfg["normal_fraction"]) / max(1e-6, 1 - cfg["normal_study_fraction"])
    specs = []
    formats = _formats(cfg, n_studies, rng)
    # Findings are dealt from shuffled decks, not drawn independently: every finding of an
    # anatomy gets its share of studies, so a small sample still has positives on both sides
    # of a patient-level split.
    decks = {anatomy: _Deck(keys, rng) for anatomy, keys in FINDINGS_BY_ANATOMY.items()}
    for s in range(n_studies):
        p = patient_of[s]
        case = f"case{s:03d}"
        normal_study = rng.random() < cfg["normal_study_fraction"]
        findings = []
        for anatomy in FINDINGS_BY_ANATOMY:
            if normal_study or rng.random() >= p_abnormal:
                continue
            count = 2 if anatomy == "lung" and rng.random() < 0.35 else 1
            for key in decks[anatomy].deal(count):
                findings.append(_draw_finding(key, anatomy, rng))
        fmt, orientation = formats[s]
        spec = {
            "case": case, "index": s, "patient": p, **{k: patients[p][k] for k in ("PatientID", "PatientName",
                                                                                 "sex", "age", "birth", "scale")},
            "StudyInstanceUID": study_uid(seed, case, "study"),
            "SeriesInstanceUID": study_uid(seed, case, "series"),
            "FrameOfReferenceUID": study_uid(seed, case, "for"),
            "AccessionNumber": f"ACC{seed % 97:02d}{s:05d}",
            "StudyDate": f"2025{1 + s % 12:02d}{1 + (s * 5) % 28:02d}",
            "format": fmt, "orientation": orientation,
            "contrast": bool(rng.random() < 0.5),
            "hu_variant": int(rng.integers(0, 3)),
            "findings": findings, "expected": "ok",
            "noise_seed": int(rng.integers(0, 2**31)),
        }
        specs.append(spec)
    if cfg["broken_inputs"]:
        for b, kind in enumerate(BROKEN):
            p = b % n_patients
            case = f"broken-{kind.replace('_', '-')}"
            specs.append({
                "case": case, "index": n_studies + b, "patient": p,
                **{k: patients[p][k] for k in ("PatientID", "PatientName", "sex", "age", "birth", "scale")},
                "StudyInstanceUID": study_uid(seed, case, "study"), "SeriesInstanceUID": study_uid(seed, case, "series"),
                "FrameOfReferenceUID": study_uid(seed, case, "for"),
                "AccessionNumber": f"ACC{seed % 97:02d}9{b:04d}", "StudyDate": f"2024{1 + b:02d}15",
                "format": "dicom", "orientation": "LPS", "contrast": False, "hu_variant": 0,
                "findings": [], "expected": BROKEN_REASON[kind], "broken": kind,
                "noise_seed": int(rng.integers(0, 2**31)),
            })
    return specs


class _Deck:
    """Cycles through shuffled copies of a list of keys; `deal(n)` gives n distinct keys."""

    def __init__(self, keys: list[str], rng):
        self.keys, self.rng, self.cards = list(keys), rng, []

    def deal(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < min(n, len(self.keys)):
            if not self.cards:
                self.cards = [str(k) for k in self.rng.permutation(self.keys)]
            card = self.cards.pop()
            if card in out:  # a reshuffle can repeat the last card: put it back for later
                self.cards.insert(0, card)
                continue
            out.append(card)
        return out


def _formats(cfg: dict, n: int, rng) -> list[tuple[str, str]]:
    out = []
    n_nifti = int(round(n * cfg["nifti_fraction"]))
    kinds = ["nifti"] * n_nifti + ["dicom"] * (n - n_nifti)
    kinds = [kinds[i] for i in rng.permutation(n)]
    dicom_idx = [i for i, k in enumerate(kinds) if k == "dicom"]
    special = list(rng.permutation(dicom_idx))
    for _ in range(int(cfg["enhanced_studies"])):
        kinds[special.pop()] = "dicom-enhanced"
    for _ in range(int(cfg["tilted_studies"])):
        kinds[special.pop()] = "dicom-tilt"
    n_j2k = int(round(len(dicom_idx) * cfg["jpeg2000_fraction"]))
    for _ in range(n_j2k):
        kinds[special.pop()] = "dicom-j2k"
    for kind in kinds:
        if kind == "nifti":
            out.append((kind, str(rng.choice(["RAS", "LPS", "LAS"]))))
        elif kind in ("dicom-tilt", "dicom-enhanced"):
            out.append((kind, "LPS"))
        else:
            out.append((kind, str(rng.choice(["LPS", "LPS", "RPI", "LAI"]))))
    return out


def _draw_finding(key: str, anatomy: str, rng) -> dict:
    side = str(rng.choice(["left", "right"]))
    f = {"finding": key, "cui": FINDINGS[key].cui, "name": FINDINGS[key].name, "anatomy": anatomy,
         "segment_anatomy": SEGMENT_ANATOMY[anatomy], "side": None, "size_mm": None, "location": None,
         "u": float(rng.uniform(0, 1)), "v": float(rng.uniform(0, 1)), "w": float(rng.uniform(0, 1))}
    if key == "nodule":
        f.update(side=side, size_mm=int(rng.integers(14, 30)))
    elif key in ("ground_glass_opacity", "consolidation", "atelectasis", "pleural_effusion"):
        f.update(side=side)
    elif key == "emphysema":
        f.update(side="bilateral", location="upper lobes")
    elif key == "liver_mass":
        f.update(size_mm=int(rng.integers(30, 60)))
    elif key == "renal_cyst":
        f.update(side=side, size_mm=int(rng.integers(24, 40)))
    elif key == "arterial_calcification":
        f.update(location=str(rng.choice(["aortic arch", "descending aorta"])))
    return f




def shards(params: dict) -> list[list[dict]]:
    specs = study_specs(params)
    size = max(1, int(ct_settings(params)["studies_per_task"]))
    return [specs[i:i + size] for i in range(0, len(specs), size)]
