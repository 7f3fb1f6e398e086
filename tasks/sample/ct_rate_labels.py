"""The sample's findings as CT-RATE's 18 abnormality labels (0/1 per study).

CT-RATE's label tables (`multi_abnormality_labels/*_predicted_labels.csv`) hold these
columns after `VolumeName`, in this order. A catalogue finding without a CT-RATE label
(liver mass, renal cyst, splenomegaly, pneumothorax) sets none; a label no catalogue
finding maps to stays 0. Used by the sample's reference label table and by the
CT-RATE-shaped fixture (scripts/make_ct_rate_fixture.py), so both say the same.
"""
from __future__ import annotations

from typing import Iterable

from tasks.sample.catalogue import FINDINGS

CT_RATE_LABELS = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
]

# catalogue finding key -> CT-RATE label
CT_RATE_LABEL_OF = {
    "nodule": "Lung nodule",
    "ground_glass_opacity": "Lung opacity",
    "consolidation": "Consolidation",
    "emphysema": "Emphysema",
    "atelectasis": "Atelectasis",
    "pleural_effusion": "Pleural effusion",
    "cardiomegaly": "Cardiomegaly",
    "pericardial_effusion": "Pericardial effusion",
    "arterial_calcification": "Arterial wall calcification",
    "lymphadenopathy": "Lymphadenopathy",
    "hiatal_hernia": "Hiatal hernia",
    "bronchiectasis": "Bronchiectasis",
}


def ct_rate_labels(finding_keys: Iterable[str]) -> dict[str, int]:
    """{label: 0/1} in CT_RATE_LABELS order for a study's catalogue finding keys."""
    keys = set(finding_keys)
    unknown = sorted(keys - set(FINDINGS))
    if unknown:
        raise KeyError(f"not catalogue findings: {unknown}")
    present = {CT_RATE_LABEL_OF[k] for k in keys if k in CT_RATE_LABEL_OF}
    return {label: int(label in present) for label in CT_RATE_LABELS}
