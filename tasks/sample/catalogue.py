"""The concepts the embedded sample speaks about, shared by every generator.

Literature figures, the UMLS-format vocabulary, CT phantoms and radiology reports
all draw from this one catalogue, so a caption's words, the vocabulary's terms and
an image's pixels agree. CUIs and TUIs are real UMLS identifiers.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Concept:
    key: str
    cui: str
    name: str  # preferred name
    tui: str  # semantic type
    synonyms: tuple[str, ...] = ()
    abbreviation: str | None = None


@dataclass(frozen=True)
class Finding(Concept):
    anatomy: str = ""  # key into ANATOMY
    # Which synthetic image kinds can show it (literature figures).
    image_kinds: tuple[str, ...] = field(default_factory=tuple)


ANATOMY: dict[str, Concept] = {c.key: c for c in [
    Concept("lung", "C0024109", "Lung", "T023", ("lungs", "pulmonary parenchyma")),
    Concept("pleura", "C0032225", "Pleura", "T023", ("pleural space",)),
    Concept("heart", "C0018787", "Heart", "T023", ("cardiac silhouette",)),
    Concept("aorta", "C0003483", "Aorta", "T023", ("aortic",)),
    Concept("trachea", "C0040578", "Trachea", "T023", ("windpipe",)),
    Concept("liver", "C0023884", "Liver", "T023", ("hepatic parenchyma",)),
    Concept("spleen", "C0037993", "Spleen", "T023", ("splenic",)),
    Concept("kidney", "C0022646", "Kidney", "T023", ("kidneys", "renal")),
    Concept("stomach", "C0038351", "Stomach", "T023", ("gastric",)),
    Concept("vertebra", "C0042166", "Vertebra", "T023", ("vertebrae", "spine")),
    Concept("chest", "C0817096", "Chest", "T029", ("thorax", "thoracic")),
    Concept("abdomen", "C0000726", "Abdomen", "T029", ("abdominal",)),
]}

FINDINGS: dict[str, Finding] = {f.key: f for f in [
    Finding("nodule", "C0034079", "Lung nodule", "T033",
            ("pulmonary nodule", "solitary pulmonary nodule", "solid nodule", "nodule"), None, "lung", ("ct_chest", "radiograph")),
    Finding("pleural_effusion", "C0032227", "Pleural effusion", "T046",
            ("pleural fluid", "effusion"), None, "pleura", ("ct_chest", "radiograph")),
    Finding("cardiomegaly", "C0018800", "Cardiomegaly", "T046",
            ("enlarged heart", "cardiac enlargement"), None, "heart", ("ct_chest", "radiograph")),
    Finding("ground_glass_opacity", "C3544344", "Ground glass opacity", "T033",
            ("ground-glass opacity", "ground-glass opacities"), "GGO", "lung", ("ct_chest",)),
    Finding("consolidation", "C0521530", "Lung consolidation", "T047",
            ("consolidation", "airspace consolidation"), None, "lung", ("ct_chest",)),
    Finding("emphysema", "C0034067", "Pulmonary emphysema", "T047",
            ("emphysema", "emphysematous change"), None, "lung", ("ct_chest",)),
    Finding("pneumothorax", "C0032326", "Pneumothorax", "T047",
            ("collapsed lung",), "PTX", "pleura", ("radiograph",)),
    Finding("liver_mass", "C0577053", "Liver mass", "T033",
            ("hepatic mass", "hepatic lesion", "liver lesion"), None, "liver", ("ct_abdomen",)),
    Finding("renal_cyst", "C0341697", "Renal cyst", "T047",
            ("kidney cyst", "simple renal cyst"), None, "kidney", ("ct_abdomen",)),
    Finding("splenomegaly", "C0038002", "Splenomegaly", "T047",
            ("enlarged spleen",), None, "spleen", ("ct_abdomen",)),
    Finding("arterial_calcification", "C0342649", "Vascular calcification", "T046",
            ("arterial wall calcification", "aortic calcification"), None, "aorta", ("ct_chest",)),
    Finding("pericardial_effusion", "C0031039", "Pericardial effusion", "T047",
            ("pericardial fluid",), None, "heart", ()),
    Finding("atelectasis", "C0004144", "Atelectasis", "T047",
            ("lung collapse",), None, "lung", ()),
    Finding("lymphadenopathy", "C0497156", "Lymphadenopathy", "T047",
            ("enlarged lymph nodes",), None, "chest", ()),
    Finding("hiatal_hernia", "C0019291", "Hiatal hernia", "T190",
            ("hiatus hernia",), None, "stomach", ()),
    Finding("bronchiectasis", "C0006267", "Bronchiectasis", "T047",
            ("bronchial dilatation",), None, "lung", ()),
]}

MODALITIES: dict[str, Concept] = {c.key: c for c in [
    Concept("ct", "C0040405", "X-Ray Computed Tomography", "T060",
            ("computed tomography", "CT scan"), "CT"),
    Concept("radiograph", "C0039985", "Plain chest X-ray", "T060",
            ("chest radiograph", "chest X-ray"), "CXR"),
    Concept("contrast", "C0009924", "Contrast Media", "T130", ("contrast agent", "contrast material")),
]}

# Image kinds of literature figures: which anatomy they show and their modality.
IMAGE_KINDS = {
    "ct_chest": {"modality": "ct", "region": "chest"},
    "ct_abdomen": {"modality": "ct", "region": "abdomen"},
    "radiograph": {"modality": "radiograph", "region": "chest"},
}


def findings_for(kind: str) -> list[Finding]:
    return [f for f in FINDINGS.values() if kind in f.image_kinds]


def all_concepts() -> list[Concept]:
    return [*ANATOMY.values(), *FINDINGS.values(), *MODALITIES.values()]
