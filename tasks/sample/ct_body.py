"""The phantom: a chest-abdomen body in RAS+ voxel space, built from ellipsoids and tubes.

Body outline, lung lobes, trachea, esophagus, heart, aorta, liver, gallbladder, spleen,
stomach, pancreas, kidneys, adrenals, bowel, vertebrae T1-L4, ribs, sternum and back
muscles, labelled with TotalSegmentator ids; the study's findings are drawn into it
(tasks/sample/ct_findings.py) before noise is added.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.sample.ct_findings import draw_findings
from tasks.sample.ct_labels import LUNG_LOBES, RIB_ID, TS, VERTEBRA_ID, VERTEBRAE


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
    lung_all = np.isin(lab, LUNG_LOBES)
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

    details = draw_findings(findings, lab, hu, (U, V, W), sp, rng, body)
    hu += rng.normal(0, 12.0, shape).astype(np.float32)
    hu[~body] = -1000.0 + rng.normal(0, 6.0, int((~body).sum())).astype(np.float32)
    return Phantom(labels=lab, hu=np.clip(np.rint(hu), -1024, 3071).astype(np.int16), affine=affine,
                   findings=details)
