"""Findings drawn into the phantom with an appearance a model can learn.

A nodule is a dense sphere in a lung lobe, emphysema a texture of holes, a renal cyst
a water-dense ball bulging out of the kidney, ... Each finding gets the location the
drawing settled on (the reports describe it). Cardiomegaly and splenomegaly change
organ sizes and are drawn with the body (tasks/sample/ct_body.py).
"""
from __future__ import annotations

import numpy as np

from tasks.sample.ct_labels import LUNG_LOBES, TS


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


def draw_findings(findings: dict, lab, hu, grid, sp, rng, body) -> list[dict]:
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
            ball = _sphere(shape, c, np.maximum(r_vox, 0.9)) & np.isin(lab, LUNG_LOBES)
            hu[ball] = 35.0
            f["location"] = f"{f['side']} {lobe} lobe"
        elif key == "ground_glass_opacity":
            lobe = 12 if f["side"] == "right" else 10
            region = _erode(lab == lobe, 1)
            c = _pick_voxel(region if region.any() else lab == lobe, f)
            ii, jj, kk = np.ogrid[:shape[0], :shape[1], :shape[2]]
            d2 = (ii - c[0]) ** 2 + (jj - c[1]) ** 2 + ((kk - c[2]) * sp[2] / sp[0]) ** 2
            patch = np.exp(-d2 / (2 * 3.2 ** 2)) * np.isin(lab, LUNG_LOBES)
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
            lungs = np.isin(lab, LUNG_LOBES)
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
