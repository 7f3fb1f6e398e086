"""Synthetic CT studies for the sample: labelled phantoms with known findings.

Each study is a 64x64x48 chest-abdomen phantom (about 6 x 6 x 8 mm voxels) built
in RAS+ voxel space from ellipsoids and tubes: body outline, lung lobes, trachea,
esophagus, heart, aorta, liver, gallbladder, spleen, stomach, pancreas, kidneys,
adrenals, bowel, vertebrae T1-L4, ribs, sternum, back muscles. Labels are
TotalSegmentator v2 `total` class ids, so the `provided` segmentation backend and
the real model speak the same ids.

Findings from the shared catalogue are drawn into known anatomies with an
appearance a model can learn (a nodule is a dense sphere in a lung lobe, emphysema
a texture of holes, cardiomegaly a bigger heart, ...); per anatomy about
`normal_fraction` of the studies are normal.

Written to data/sample/ct/:
  input/<case>/...            DICOM series (file names and nesting vary; some JPEG 2000,
                              some enhanced multi-frame, one with gantry tilt)
  input/<case>.nii.gz + .json NIfTI studies with a BIDS-style sidecar of identifiers
  masks/<SeriesInstanceUID>.nii.gz   label maps (uint8, TotalSegmentator v2 ids)
  studies.csv                 one row per study: raw identifiers (PatientID,
                              StudyInstanceUID, SeriesInstanceUID, AccessionNumber),
                              format, expected outcome, ground-truth findings
Plus the broken studies (truncated file, MR series, mixed matrix sizes, a missing
slice, a single slice), listed in studies.csv with the reason they must be rejected.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import axcodes2ornt, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage,
                         generate_uid)

from tasks.sample.catalogue import FINDINGS

OUTPUT_SUBDIR = "ct"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"

# TotalSegmentator v2 `total` class ids used by the phantom.
TS = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6,
    "pancreas": 7, "adrenal_gland_right": 8, "adrenal_gland_left": 9,
    "lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14, "esophagus": 15, "trachea": 16,
    "small_bowel": 18, "colon": 20, "kidney_cyst_left": 23, "kidney_cyst_right": 24,
    "heart": 51, "aorta": 52, "spinal_cord": 79, "autochthon_left": 86, "autochthon_right": 87,
    "sternum": 116,
}
VERTEBRAE = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4"]
VERTEBRA_ID = {name: 43 - i for i, name in enumerate(VERTEBRAE)}  # T1=43 ... L4=28
RIB_ID = {("left", n): 91 + n for n in range(1, 13)} | {("right", n): 103 + n for n in range(1, 13)}

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

CSV_COLUMNS = ["case", "PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber",
               "StudyDate", "sex", "age", "format", "orientation", "contrast", "path", "mask", "expected",
               "findings", "normal_anatomies", "findings_json"]


def _cfg(params: dict) -> dict:
    defaults = {"n_patients": 80, "n_studies": 120, "shape": [64, 64, 48], "spacing_mm": [6.0, 6.0, 8.0],
                "normal_fraction": 0.4, "normal_study_fraction": 0.1, "nifti_fraction": 0.5,
                "jpeg2000_fraction": 0.25, "enhanced_studies": 2, "tilted_studies": 1,
                "studies_per_task": 8, "broken_inputs": True}
    return defaults | dict((params.get("sample") or {}).get("ct") or {})


def _uid(seed: int, *parts) -> str:
    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


# -- planning -------------------------------------------------------------------

def study_specs(params: dict) -> list[dict]:
    """Every study's identity, format and findings, drawn from sample.seed (deterministic)."""
    cfg = _cfg(params)
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
            "StudyInstanceUID": _uid(seed, case, "study"),
            "SeriesInstanceUID": _uid(seed, case, "series"),
            "FrameOfReferenceUID": _uid(seed, case, "for"),
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
                "StudyInstanceUID": _uid(seed, case, "study"), "SeriesInstanceUID": _uid(seed, case, "series"),
                "FrameOfReferenceUID": _uid(seed, case, "for"),
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


def plan(params: dict) -> list[list[dict]]:
    cfg = _cfg(params)
    specs = study_specs(params)
    size = max(1, int(cfg["studies_per_task"]))
    return [specs[i:i + size] for i in range(0, len(specs), size)]


# -- the phantom ---------------------------------------------------------------

@dataclass
class Phantom:
    labels: np.ndarray  # uint8 TotalSegmentator ids, RAS+ voxel order
    hu: np.ndarray  # int16
    affine: np.ndarray  # RAS+
    findings: list[dict]  # with location details filled in


def _grid(shape):
    X, Y, Z = shape
    u = (np.arange(X) + 0.5) / X * 2 - 1  # +u: patient right
    v = (np.arange(Y) + 0.5) / Y * 2 - 1  # +v: anterior
    w = (np.arange(Z) + 0.5) / Z * 2 - 1  # +w: superior
    return np.meshgrid(u, v, w, indexing="ij")


def _ellipsoid(U, V, W, c, r):
    return ((U - c[0]) / r[0]) ** 2 + ((V - c[1]) / r[1]) ** 2 + ((W - c[2]) / r[2]) ** 2 <= 1.0


def _tube(U, V, W, c_uv, radius, w_lo, w_hi):
    return (((U - c_uv[0]) ** 2 + (V - c_uv[1]) ** 2) <= radius ** 2) & (W >= w_lo) & (W <= w_hi)


def build_phantom(spec: dict, cfg: dict) -> Phantom:
    shape = tuple(int(s) for s in cfg["shape"])
    sp = np.array(cfg["spacing_mm"], dtype=float) * np.array(spec["scale"])
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -sp * (np.array(shape) - 1) / 2 + np.array([0.0, 0.0, -150.0])
    rng = np.random.default_rng(spec["noise_seed"])
    U, V, W = _grid(shape)
    # per-study build and position: a mild stretch and shift of the whole anatomy
    stretch, shift = rng.uniform(0.93, 1.07, 3), rng.uniform(-0.04, 0.04, 3)
    U, V, W = U * stretch[0] + shift[0], V * stretch[1] + shift[1], W * stretch[2] + shift[2]
    lab = np.zeros(shape, np.uint8)
    blood = 170.0 if spec["contrast"] else 42.0
    enh = 50.0 if spec["contrast"] else 0.0
    hu = np.full(shape, -1000.0, np.float32)
    findings = {f["finding"]: dict(f) for f in spec["findings"]}

    body = (U / 0.86) ** 2 + ((V + 0.02) / 0.62) ** 2 <= 1.0
    inner = (U / 0.80) ** 2 + ((V + 0.02) / 0.56) ** 2 <= 1.0
    hu[body] = -95.0  # subcutaneous fat
    hu[inner] = 35.0  # muscle / soft tissue

    def put(mask, name_or_id, value):
        ident = TS[name_or_id] if isinstance(name_or_id, str) else name_or_id
        lab[mask] = ident
        hu[mask] = value

    # lungs (w > dome), split into lobes by an oblique fissure
    for side, cu in (("right", 0.38), ("left", -0.38)):
        lung = _ellipsoid(U, V, W, (cu, 0.0, 0.45), (0.30, 0.44, 0.60)) & (W > (0.02 if side == "right" else -0.04))
        lung &= inner
        lower = (W - 0.55 * (V + 0.1)) < 0.32  # fissure slopes down anteriorly
        if side == "right":
            middle = ~lower & (V > 0.05) & (W < 0.55)
            put(lung & lower, "lung_lower_lobe_right", -850.0)
            put(lung & middle, "lung_middle_lobe_right", -850.0)
            put(lung & ~lower & ~middle, "lung_upper_lobe_right", -850.0)
        else:
            put(lung & lower, "lung_lower_lobe_left", -850.0)
            put(lung & ~lower, "lung_upper_lobe_left", -850.0)
    lung_all = np.isin(lab, [10, 11, 12, 13, 14])
    vessels = lung_all & (rng.random(shape) < 0.035)
    hu[vessels] = -300.0  # vessel dots give lung its normal texture

    # mediastinum and abdomen
    heart_scale = 1.0 + rng.normal(0, 0.04)
    if "cardiomegaly" in findings:
        heart_scale = float(rng.uniform(1.28, 1.42))
        findings["cardiomegaly"]["size_mm"] = None
    hr = np.array([0.27, 0.22, 0.20]) * heart_scale
    heart = _ellipsoid(U, V, W, (-0.08, 0.2, 0.30), hr)
    if "pericardial_effusion" in findings:
        shell = _ellipsoid(U, V, W, (-0.08, 0.2, 0.30), hr + 0.09) & ~heart
        put(shell & body, "heart", 8.0)  # fluid rim, inside the heart's label as the crop must hold it
    put(heart, "heart", blood)
    aorta = (_tube(U, V, W, (0.06, 0.16), 0.065, 0.38, 0.72) | _tube(U, V, W, (-0.12, -0.28), 0.058, -0.95, 0.74))
    for t in np.linspace(0, 1, 24):  # arch from ascending to descending
        c = (0.06 + (-0.18) * t, 0.16 + (-0.44) * t, 0.72 + 0.12 * np.sin(np.pi * t))
        aorta |= _ellipsoid(U, V, W, c, (0.065, 0.065, 0.06))
    put(aorta, "aorta", blood)
    put(_tube(U, V, W, (0.0, 0.12), 0.06, 0.52, 1.0), "trachea", -990.0)
    hu[_tube(U, V, W, (0.0, 0.12), 0.06, 0.52, 1.0) & ~_tube(U, V, W, (0.0, 0.12), 0.045, 0.52, 1.0)] = 20.0
    put(_tube(U, V, W, (-0.04, -0.16), 0.035, -0.2, 1.0) & (lab == 0), "esophagus", 38.0)

    liver = _ellipsoid(U, V, W, (0.33, 0.04, -0.18), (0.44, 0.42, 0.30)) & inner & ~lung_all & (lab == 0)
    put(liver, "liver", 58.0 + enh)
    put(_ellipsoid(U, V, W, (0.32, 0.3, -0.42), (0.07, 0.07, 0.1)) & inner, "gallbladder", 8.0)
    sp_r = np.array([0.13, 0.2, 0.2]) * (float(rng.uniform(1.45, 1.6)) if "splenomegaly" in findings else 1.0)
    put(_ellipsoid(U, V, W, (-0.56, -0.22, -0.16), sp_r) & inner & ~lung_all, "spleen", 48.0 + enh)
    stomach = _ellipsoid(U, V, W, (-0.32, 0.18, -0.2), (0.2, 0.2, 0.17)) & (lab == 0) & inner
    put(stomach, "stomach", 25.0)
    hu[stomach & (V > 0.28)] = -990.0  # gas in the fundus, anterior (supine)
    put(_ellipsoid(U, V, W, (-0.06, 0.0, -0.5), (0.30, 0.05, 0.06)) & (lab == 0), "pancreas", 42.0 + enh * 0.6)
    for side, cu, name in (("right", 0.32, "kidney_right"), ("left", -0.32, "kidney_left")):
        put(_ellipsoid(U, V, W, (cu, -0.3, -0.62 if side == "right" else -0.55), (0.1, 0.09, 0.22)),
            name, 32.0 + enh * 2.4)
        put(_ellipsoid(U, V, W, (cu * 0.7, -0.24, -0.32), (0.035, 0.035, 0.06)),
            f"adrenal_gland_{side}", 30.0)
    colon = (_tube(U, V, W, (0.56, 0.08), 0.08, -1.0, -0.58) | _tube(U, V, W, (-0.56, 0.0), 0.075, -1.0, -0.55)
             | ((np.abs(U) <= 0.56) & (((V - 0.34) / 0.07) ** 2 + ((W + 0.62) / 0.08) ** 2 <= 1)))
    colon &= inner & (lab == 0)
    put(colon, "colon", 20.0)
    hu[colon & (rng.random(shape) < 0.45)] = -950.0
    bowel = _ellipsoid(U, V, W, (0.0, 0.22, -0.86), (0.38, 0.22, 0.16)) & inner & (lab == 0)
    put(bowel, "small_bowel", 30.0)
    hu[bowel & (rng.random(shape) < 0.12)] = -900.0

    # spine, cord, back muscles, ribs, sternum
    n_z = shape[2]
    for level, name in enumerate(VERTEBRAE):
        k_hi = n_z - 1 - 3 * level
        slab = np.zeros(shape, bool)
        slab[:, :, max(0, k_hi - 1):k_hi + 1] = True
        body_v = _tube(U, V, W, (0.0, -0.42), 0.1, -2, 2) & slab
        put(body_v, VERTEBRA_ID[name], 260.0)
        hu[body_v & ~_tube(U, V, W, (0.0, -0.42), 0.075, -2, 2)] = 650.0  # cortex
    put(_tube(U, V, W, (0.0, -0.55), 0.035, -2, 2), "spinal_cord", 30.0)
    put(_ellipsoid(U, V, W, (-0.2, -0.47, 0.0), (0.08, 0.065, 2.0)) & inner & (lab == 0), "autochthon_left", 50.0)
    put(_ellipsoid(U, V, W, (0.2, -0.47, 0.0), (0.08, 0.065, 2.0)) & inner & (lab == 0), "autochthon_right", 50.0)
    ring = ((U / 0.78) ** 2 + ((V + 0.02) / 0.54) ** 2 > 0.86) & inner
    for n in range(1, 13):
        w_rib = 0.88 - 0.145 * (n - 1) - 0.16 * (V + 0.5)  # ribs slope down anteriorly
        rib = ring & (np.abs(W - w_rib) < 0.025) & (np.abs(U) > 0.16)
        put(rib & (U < 0), RIB_ID[("left", n)], 600.0)
        put(rib & (U > 0), RIB_ID[("right", n)], 600.0)
    put(_tube(U, V, W, (0.0, 0.52), 0.06, 0.2, 0.9) & inner, "sternum", 380.0)

    details = _draw_findings(findings, lab, hu, (U, V, W), sp, rng, body)
    hu += rng.normal(0, 12.0, shape).astype(np.float32)
    hu[~body] = -1000.0 + rng.normal(0, 6.0, int((~body).sum())).astype(np.float32)
    return Phantom(labels=lab, hu=np.clip(np.rint(hu), -1024, 3071).astype(np.int16), affine=affine,
                   findings=details)


def _pick_voxel(mask: np.ndarray, f: dict) -> tuple[int, int, int]:
    idx = np.argwhere(mask)
    order = np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0]))
    return tuple(idx[order[int(f["u"] * (len(idx) - 1))]])


def _sphere(shape, center, radius_vox):
    ii, jj, kk = np.ogrid[:shape[0], :shape[1], :shape[2]]
    r = np.asarray(radius_vox, dtype=float) * np.ones(3)
    return ((ii - center[0]) / r[0]) ** 2 + ((jj - center[1]) / r[1]) ** 2 + ((kk - center[2]) / r[2]) ** 2 <= 1


def _erode(mask: np.ndarray, n: int) -> np.ndarray:
    from scipy import ndimage
    return ndimage.binary_erosion(mask, iterations=n) if n > 0 else mask


def _draw_findings(findings: dict, lab, hu, grid, sp, rng, body) -> list[dict]:
    from scipy import ndimage

    U, V, W = grid
    shape = lab.shape
    out = []
    lobes = {"right": {"upper": 12, "middle": 13, "lower": 14}, "left": {"upper": 10, "lower": 11}}
    for key, f in findings.items():
        f = dict(f)
        if key == "nodule":
            lobe = ["upper", "lower", "middle"][int(f["v"] * 3)] if f["side"] == "right" else \
                ["upper", "lower"][int(f["v"] * 2)]
            r_vox = (f["size_mm"] / 2) / sp
            region = _erode(lab == lobes[f["side"]][lobe], 2)
            if not region.any():
                region = lab == lobes[f["side"]][lobe]
            c = _pick_voxel(region, f)
            ball = _sphere(shape, c, np.maximum(r_vox, 0.9)) & np.isin(lab, [10, 11, 12, 13, 14])
            hu[ball] = 35.0
            f["location"] = f"{f['side']} {lobe} lobe"
        elif key == "ground_glass_opacity":
            lobe = 12 if f["side"] == "right" else 10
            region = _erode(lab == lobe, 1)
            c = _pick_voxel(region if region.any() else lab == lobe, f)
            ii, jj, kk = np.ogrid[:shape[0], :shape[1], :shape[2]]
            d2 = (ii - c[0]) ** 2 + (jj - c[1]) ** 2 + ((kk - c[2]) * sp[2] / sp[0]) ** 2
            patch = np.exp(-d2 / (2 * 3.2 ** 2)) * np.isin(lab, [10, 11, 12, 13, 14])
            hu += (280.0 * patch).astype(np.float32)
            f["location"] = f"{f['side']} upper lobe"
        elif key == "consolidation":
            lobe = 14 if f["side"] == "right" else 11
            region = (lab == lobe) & (V < np.percentile(V[lab == lobe], 55))
            hu[region] = 38.0
            bronchus = region & (np.abs(U - np.median(U[region])) < 0.03)
            hu[bronchus] = -900.0  # air bronchogram
            f["location"] = f"{f['side']} lower lobe"
        elif key == "atelectasis":
            lobe = 14 if f["side"] == "right" else 11
            region = (lab == lobe)
            cut = np.percentile(W[region], 20)
            plate = region & (W <= cut) & (V < np.percentile(V[region], 50))
            hu[plate] = 45.0
            f["location"] = f"{f['side']} lung base"
        elif key == "emphysema":
            lungs = np.isin(lab, [10, 11, 12, 13, 14])
            noise = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 0.8)
            holes = lungs & (noise > np.percentile(noise[lungs], 55)) & (W > 0.3)
            hu[holes] = -995.0
            hu[lungs & (W > 0.3) & ~holes] -= 60.0
        elif key == "pleural_effusion":
            lobe_ids = [12, 13, 14] if f["side"] == "right" else [10, 11]
            hemi = np.isin(lab, lobe_ids)
            v_cut = np.percentile(V[hemi], 30)
            fluid = hemi & (V < v_cut) & (W < np.percentile(W[hemi], 60))
            lab[fluid] = 0  # fluid is not lung (TotalSegmentator leaves it unlabelled in `total`)
            hu[fluid] = 12.0
            f["location"] = f"{f['side']} pleural space"
        elif key == "arterial_calcification":
            aorta = lab == TS["aorta"]
            wall = aorta & ~_erode(aorta, 1)
            part = wall & ((W > 0.65) if f["location"] == "aortic arch" else (W < 0.6))
            idx = np.argwhere(part)
            n = min(len(idx), int(rng.integers(4, 9)))
            for p in idx[rng.choice(len(idx), size=n, replace=False)]:
                hu[tuple(p)] = float(rng.uniform(550, 1000))
        elif key == "liver_mass":
            liver = _erode(lab == TS["liver"], 2)
            c = _pick_voxel(liver if liver.any() else lab == TS["liver"], f)
            ball = _sphere(shape, c, (f["size_mm"] / 2) / sp) & (lab == TS["liver"])
            hu[ball] -= 70.0  # hypodense: a metastasis-like lesion against enhancing liver
            segment = "right lobe" if U[c] > 0.3 else "left lobe"
            f["location"] = f"{segment} of the liver"
        elif key == "renal_cyst":
            kid = TS["kidney_right"] if f["side"] == "right" else TS["kidney_left"]
            region = _erode(lab == kid, 1)
            c = _pick_voxel(region if region.any() else lab == kid, f)
            # exophytic: a cyst bulges out of the kidney into the fat around it
            ball = _sphere(shape, c, np.maximum((f["size_mm"] / 2) / sp, 1.0)) & ((lab == kid) | (lab == 0)) & body
            lab[ball] = TS["kidney_cyst_right"] if f["side"] == "right" else TS["kidney_cyst_left"]
            hu[ball] = 6.0
            f["location"] = f"{f['side']} kidney"
        for k in ("u", "v", "w"):
            f.pop(k, None)
        out.append(f)
    return sorted(out, key=lambda d: d["finding"])


# -- writing --------------------------------------------------------------------

def _dicom_layout(ph: Phantom, code: str):
    """Phantom reoriented to the DICOM (column, row, slice) axis code; returns data and LPS affine."""
    img = nib.Nifti1Image(ph.hu, ph.affine)
    t = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(code)))
    moved = img.as_reoriented(t)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ moved.affine
    return np.asanyarray(moved.dataobj), lps


def _base_dataset(spec: dict, modality: str = "CT") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = spec["PatientName"]
    ds.PatientID = spec["PatientID"]
    ds.PatientBirthDate = spec["birth"]
    ds.PatientSex = spec["sex"]
    ds.PatientAge = f"{spec['age']:03d}Y"
    ds.StudyInstanceUID = spec["StudyInstanceUID"]
    ds.SeriesInstanceUID = spec["SeriesInstanceUID"]
    ds.FrameOfReferenceUID = spec["FrameOfReferenceUID"]
    ds.StudyDate = spec["StudyDate"]
    ds.SeriesDate = spec["StudyDate"]
    ds.StudyTime = "101500"
    ds.AccessionNumber = spec["AccessionNumber"]
    ds.StudyID = f"S{spec['index']:04d}"
    ds.SeriesNumber = 2
    ds.Modality = modality
    ds.Manufacturer = "MEDCONCEPT SYNTHETIC"
    ds.ManufacturerModelName = "Phantom-64"
    ds.InstitutionName = "Medconcept Synthetic Hospital"
    ds.InstitutionAddress = "1 Phantom Road, Nowhere"
    ds.StationName = f"CTSTATION{spec['patient'] % 3}"
    ds.DeviceSerialNumber = f"SN{40000 + spec['patient'] % 3}"
    ds.ReferringPhysicianName = "REFERRER^SYNTH"
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    if spec["contrast"]:
        ds.ContrastBolusAgent = "IODINATED"
    return ds


def _meta(sop_class: str, sop_uid: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "MEDCONCEPT1"
    return meta


def _stored(hu_slice: np.ndarray, variant: int) -> tuple[np.ndarray, dict]:
    """Stored values and rescale tags for one of three common HU encodings."""
    if variant == 0:  # unsigned 12-bit, intercept -1024
        return (hu_slice.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16), dict(
            PixelRepresentation=0, BitsStored=12, HighBit=11, RescaleIntercept="-1024", RescaleSlope="1")
    if variant == 1:  # signed, HU stored directly
        return hu_slice.astype(np.int16), dict(PixelRepresentation=1, BitsStored=16, HighBit=15,
                                               RescaleIntercept="0", RescaleSlope="1")
    # signed, padding -2000 outside the reconstruction circle
    rows, cols = hu_slice.shape
    rr, cc = np.ogrid[:rows, :cols]
    outside = ((rr - rows / 2 + 0.5) ** 2 + (cc - cols / 2 + 0.5) ** 2) > (0.49 * min(rows, cols)) ** 2
    out = hu_slice.astype(np.int16).copy()
    out[outside] = -2000
    return out, dict(PixelRepresentation=1, BitsStored=16, HighBit=15, RescaleIntercept="0", RescaleSlope="1",
                     PixelPaddingValue=-2000)


def _slice_file_names(spec: dict, n: int) -> list[str]:
    """File names and nesting vary between cases, as they do between PACS exports."""
    style = spec["index"] % 4
    if style == 0:
        return [f"IM{k + 1:05d}" for k in range(n)]
    if style == 1:
        return [f"series/{(k * 37) % 1000:03d}-{k}.dcm" for k in range(n)]
    if style == 2:
        return [f"DICOM/S0001/I{(n - k) * 10:04d}" for k in range(n)]
    return [f"slice_{k:03d}.DCM" for k in range(n)]


def _write_dicom_series(ph: Phantom, spec: dict, case_dir: Path, seed: int, syntax: str = ExplicitVRLittleEndian,
                        modality: str = "CT", tilt_vox: float = 0.0, variant: int | None = None) -> list[Path]:
    data, lps = _dicom_layout(ph, spec["orientation"])
    cols, rows, n = data.shape
    col_sp, row_sp = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    iop = [*(lps[:3, 0] / col_sp), *(lps[:3, 1] / row_sp)]
    variant = spec["hu_variant"] if variant is None else variant
    names = _slice_file_names(spec, n)
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    paths = []
    for k in range(n):
        hu_slice = data[:, :, k].T  # (rows, columns)
        pos = lps[:3, 3] + k * lps[:3, 2]
        if tilt_vox:
            from scipy import ndimage
            # slice k is acquired shifted by k*tilt along rows: sample the phantom there
            pos = pos + k * tilt_vox * lps[:3, 1]
            hu_slice = np.rint(ndimage.shift(hu_slice.astype(np.float32), (-k * tilt_vox, 0), order=1,
                                             mode="nearest")).astype(np.int16)
        stored, tags = _stored(hu_slice, variant)
        ds = _base_dataset(spec, modality)
        sop_uid = _uid(seed, spec["case"], "sop", k)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{x:.6f}" for x in pos]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in iop]
        ds.PixelSpacing = [f"{row_sp:.6f}", f"{col_sp:.6f}"]
        ds.SliceThickness = f"{float(np.linalg.norm(lps[:3, 2])):.4f}"
        ds.GantryDetectorTilt = "0"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape
        ds.BitsAllocated = 16
        for tag, value in tags.items():
            setattr(ds, tag, value)
        if modality == "CT":
            ds.RescaleType = "HU"
        else:
            for tag in ("RescaleIntercept", "RescaleSlope"):
                delattr(ds, tag)
            ds.MagneticFieldStrength = "1.5"
        ds.file_meta = _meta(sop_class, sop_uid, ExplicitVRLittleEndian)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        if syntax == JPEG2000Lossless:
            ds.compress(JPEG2000Lossless, np.ascontiguousarray(stored), encoding_plugin="pylibjpeg")
        path = case_dir / names[k]
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _write_enhanced(ph: Phantom, spec: dict, case_dir: Path, seed: int) -> Path:
    data, lps = _dicom_layout(ph, spec["orientation"])
    cols, rows, n = data.shape
    col_sp, row_sp = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    ds = _base_dataset(spec)
    sop_uid = _uid(seed, spec["case"], "sop", 0)
    ds.SOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{row_sp:.6f}", f"{col_sp:.6f}"]
    measures.SliceThickness = f"{float(np.linalg.norm(lps[:3, 2])):.4f}"
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{x:.6f}" for x in [*(lps[:3, 0] / col_sp), *(lps[:3, 1] / row_sp)]]
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = "-1024", "1", "HU"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orient]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    order = list(range(n))[::-1]  # frames stored top-down: the reader must sort them
    for k in order:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [f"{x:.6f}" for x in lps[:3, 3] + k * lps[:3, 2]]
        content = Dataset()
        content.InStackPositionNumber = k + 1
        item.PlanePositionSequence = [plane]
        item.FrameContentSequence = [content]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    pixels = np.stack([(data[:, :, k].T.astype(np.int32) + 1024).astype(np.int16) for k in order])
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.file_meta = _meta(ENHANCED_CT, sop_uid, ExplicitVRLittleEndian)
    path = case_dir / "enhanced.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _write_nifti_study(ph: Phantom, spec: dict, input_dir: Path, mask_path: Path) -> Path:
    from tasks.ct.nifti_io import write_nifti

    t = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(spec["orientation"])))
    img = nib.Nifti1Image(ph.hu, ph.affine).as_reoriented(t)
    path = input_dir / f"{spec['case']}.nii.gz"
    write_nifti(np.asanyarray(img.dataobj).astype(np.int16), img.affine, path)
    sidecar = {k: spec[k] for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber")}
    sidecar["Modality"] = "CT"
    (input_dir / f"{spec['case']}.json").write_text(json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    lab = nib.Nifti1Image(ph.labels, ph.affine).as_reoriented(t)  # masks come in the volume's own orientation
    write_nifti(np.asanyarray(lab.dataobj).astype(np.uint8), lab.affine, mask_path)
    return path


def _write_broken(ph: Phantom, spec: dict, case_dir: Path, seed: int) -> None:
    kind = spec["broken"]
    small = spec | {"orientation": "LPS"}
    if kind == "mr_series":
        _write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 18:28], ph.affine, []), small, case_dir, seed,
                            modality="MR", variant=0)
        return
    if kind == "single_slice":
        _write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 24:25], ph.affine, []), small, case_dir, seed)
        return
    if kind == "mixed_matrix":
        paths = _write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 16:32], ph.affine, []), small, case_dir, seed)
        for path in paths[::2]:  # every other slice at 48x48: another reconstruction mixed in
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array[8:56, 8:56].copy()
            ds.Rows, ds.Columns = arr.shape
            ds.PixelData = arr.tobytes()
            ds.save_as(path, enforce_file_format=True)
        return
    paths = _write_dicom_series(Phantom(ph.labels, ph.hu[:, :, 8:40], ph.affine, []), small, case_dir, seed)
    if kind == "missing_slice":
        paths[13].unlink()
    elif kind == "truncated_file":
        raw = paths[9].read_bytes()
        paths[9].write_bytes(raw[: len(raw) - 64 * 64])  # cut inside the pixel data


def generate_shard(params: dict, shard: list[dict]) -> dict:
    cfg = _cfg(params)
    seed = int(params["sample"]["seed"])
    root = Path(params["sample"]["output_dir"]) / OUTPUT_SUBDIR
    input_dir, mask_dir = root / "input", root / "masks"
    counts = {"items": 0, "studies": 0, "dicom_series": 0, "jpeg2000_series": 0, "enhanced_series": 0,
              "tilted_series": 0, "nifti_studies": 0, "broken_studies": 0, "findings": 0}
    parts = root / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    for spec in shard:
        ph = build_phantom(spec, cfg)
        counts["items"] += 1
        (parts / f"{spec['case']}.json").write_text(json.dumps(ph.findings, sort_keys=True))
        if spec.get("broken"):
            _write_broken(ph, spec, input_dir / spec["case"], seed)
            counts["broken_studies"] += 1
            continue
        counts["studies"] += 1
        counts["findings"] += len(ph.findings)
        mask_path = mask_dir / f"{spec['SeriesInstanceUID']}.nii.gz"
        fmt = spec["format"]
        if fmt == "nifti":
            _write_nifti_study(ph, spec, input_dir, mask_path)
            counts["nifti_studies"] += 1
            continue
        from tasks.ct.nifti_io import write_nifti

        write_nifti(ph.labels, ph.affine, mask_path)
        case_dir = input_dir / spec["case"]
        if fmt == "dicom-enhanced":
            _write_enhanced(ph, spec, case_dir, seed)
            counts["enhanced_series"] += 1
        elif fmt == "dicom-tilt":
            _write_dicom_series(ph, spec, case_dir, seed, tilt_vox=0.125)
            counts["tilted_series"] += 1
        else:
            syntax = JPEG2000Lossless if fmt == "dicom-j2k" else ExplicitVRLittleEndian
            _write_dicom_series(ph, spec, case_dir, seed, syntax=syntax)
            counts["jpeg2000_series"] += fmt == "dicom-j2k"
        counts["dicom_series"] += 1
    return counts


def finalize(params: dict, results: list[dict]) -> dict:
    """studies.csv: the ground truth another engineer writes reports from."""
    cfg = _cfg(params)
    root = Path(params["sample"]["output_dir"]) / OUTPUT_SUBDIR
    rows = []
    parts = root / ".parts"
    for spec in study_specs(params):
        # findings with the locations the generator settled on (written by generate_shard)
        findings = [] if spec.get("broken") else json.loads((parts / f"{spec['case']}.json").read_text())
        fmt = spec["format"]
        path = f"input/{spec['case']}.nii.gz" if fmt == "nifti" else f"input/{spec['case']}/"
        abnormal = {f["anatomy"] for f in findings}
        rows.append({
            "case": spec["case"], "PatientID": spec["PatientID"], "PatientName": spec["PatientName"],
            "StudyInstanceUID": spec["StudyInstanceUID"], "SeriesInstanceUID": spec["SeriesInstanceUID"],
            "AccessionNumber": spec["AccessionNumber"], "StudyDate": spec["StudyDate"], "sex": spec["sex"],
            "age": spec["age"], "format": fmt, "orientation": spec["orientation"],
            "contrast": int(spec["contrast"]), "path": path,
            "mask": "" if spec.get("broken") else f"masks/{spec['SeriesInstanceUID']}.nii.gz",
            "expected": spec["expected"],
            "findings": ";".join(f["finding"] for f in findings),
            "normal_anatomies": "" if spec.get("broken") else ";".join(
                a for a in FINDINGS_BY_ANATOMY if a not in abnormal),
            "findings_json": json.dumps(findings, sort_keys=True),
        })
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "studies.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    shutil.rmtree(parts, ignore_errors=True)
    return {"patients": len({r["PatientID"] for r in rows if r["expected"] == "ok"})}
