"""Figure captions that name exactly what the synthetic image shows.

Present findings are described affirmatively (sometimes with an abbreviation
defined in the text); a few absent findings of the same image kind are negated,
as radiologists write them.
"""
from __future__ import annotations

import numpy as np

from tasks.sample.catalogue import FINDINGS, findings_for

SIDES = ("right", "left")

_PRESENT = {
    "nodule": ["a {mm}-mm solid nodule in the {side} lung", "a well-defined pulmonary nodule in the {side} upper lobe"],
    "pleural_effusion": ["a {side} pleural effusion", "a moderate {side}-sided pleural effusion"],
    "cardiomegaly": ["cardiomegaly", "an enlarged heart (cardiomegaly)"],
    "ground_glass_opacity": ["ground-glass opacity (GGO) in the {side} lung; the GGO is patchy",
                             "a focal ground-glass opacity in the {side} lung"],
    "consolidation": ["consolidation of the {side} lower lobe", "airspace consolidation in the {side} lung"],
    "emphysema": ["centrilobular emphysema in both lungs", "emphysematous change of the lungs"],
    "pneumothorax": ["a {side} apical pneumothorax (PTX); the PTX is small", "a {side}-sided pneumothorax"],
    "liver_mass": ["a hypodense liver mass", "a hypoattenuating hepatic lesion in segment {seg}"],
    "renal_cyst": ["a simple renal cyst in the {side} kidney", "a kidney cyst in the {side} kidney"],
    "splenomegaly": ["splenomegaly", "an enlarged spleen"],
    "arterial_calcification": ["arterial wall calcification of the aorta", "vascular calcification of the aortic wall"],
}

_NEGATED = [
    "No {name} is seen.",
    "There is no evidence of {name}.",
    "No {name} was identified.",
]

# Every phrase names the organs the image shows, so anatomy concepts agree with the pixels.
_MODALITY_PHRASES = {
    "ct_chest": ["Axial contrast-enhanced computed tomography (CT) of the chest through the lungs and heart",
                 "Axial chest CT image at the level of the heart and both lungs",
                 "Non-contrast CT of the thorax showing the lungs and the heart"],
    "ct_abdomen": ["Axial contrast-enhanced CT of the abdomen through the liver, spleen and kidneys",
                   "Axial abdominal computed tomography image of the liver, spleen and kidneys"],
    "radiograph": ["Frontal chest radiograph of the lungs and heart", "Posteroanterior chest X-ray of the lungs and heart"],
}

_NORMAL = {
    "ct_chest": "shows no abnormality",
    "ct_abdomen": "shows no abnormality",
    "radiograph": "shows clear lungs and a normal cardiac silhouette",
}


def _fill(template: str, rng: np.random.Generator) -> str:
    return template.format(
        side=SIDES[int(rng.integers(0, 2))],
        mm=int(rng.integers(6, 25)),
        seg=int(rng.integers(2, 9)),
    )


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def negatable_names(kind: str, present: set[str]) -> list[str]:
    names = []
    for finding in findings_for(kind):
        if finding.key not in present:
            names.append(finding.synonyms[0] if finding.key in {"ground_glass_opacity"} else finding.name.lower())
    return names


def panel_sentence(rng: np.random.Generator, kind: str, present: list[str], n_negated: int) -> str:
    modality = _MODALITY_PHRASES[kind][int(rng.integers(0, len(_MODALITY_PHRASES[kind])))]
    if present:
        phrases = [_fill(_PRESENT[key][int(rng.integers(0, len(_PRESENT[key])))], rng) for key in present]
        sentence = f"{modality} shows {_join(phrases)}."
    else:
        sentence = f"{modality} {_NORMAL[kind]}."
    candidates = negatable_names(kind, set(present))
    if candidates and n_negated:
        picks = rng.choice(len(candidates), size=min(n_negated, len(candidates)), replace=False)
        for index in sorted(int(i) for i in picks):
            template = _NEGATED[int(rng.integers(0, len(_NEGATED)))]
            text = template.format(name=candidates[index])
            sentence += " " + text[0].upper() + text[1:]
    return sentence


def figure_title(rng: np.random.Generator, kind: str) -> str:
    age = int(rng.integers(25, 86))
    sex = ("man", "woman")[int(rng.integers(0, 2))]
    region = {"ct_chest": "Chest CT", "ct_abdomen": "Abdominal CT", "radiograph": "Chest radiograph"}[kind]
    return f"{region} findings in a {age}-year-old {sex}."


def choose_findings(rng: np.random.Generator, kind: str) -> list[str]:
    """0-2 findings the image will show; about one image in six is normal."""
    options = [f.key for f in findings_for(kind)]
    count = int(rng.choice([0, 1, 1, 1, 2, 2]))
    picks = rng.choice(len(options), size=min(count, len(options)), replace=False)
    return sorted(options[int(i)] for i in picks)


def finding_cuis(keys: list[str]) -> list[str]:
    return sorted(FINDINGS[key].cui for key in keys)
