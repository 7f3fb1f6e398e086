"""Params of the literature stages: sample, ingest, figures, umls_index, link_concepts."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from tasks.schema.base import IntPair, IntTriple, FloatTriple, IsoDate, Location, Section

# A PMC article id as ingest writes it (ingest.retracted)
PmcId = Annotated[str, StringConstraints(pattern=r"^PMC[0-9]+$")]
# The trigger lists of tasks/common/assertion.py that link_concepts.context_rules may replace.
AssertionRuleList = Literal["pseudo", "negation_pre", "negation_post", "uncertain_pre", "uncertain_post",
                            "terminators"]


class SampleVocabulary(Section):
    broken_rows: bool = True


class SampleLiterature(Section):
    n_articles: int = Field(40, ge=1)
    figures_per_article: IntPair = [4, 6]
    compound_fraction: float = Field(0.25, ge=0, le=1)
    two_column_fraction: float = Field(0.4, ge=0, le=1)
    noncommercial_fraction: float = Field(0.15, ge=0, le=1)
    image_size: int = Field(256, ge=32)
    jpeg_quality: int = Field(90, ge=1, le=100)
    broken_inputs: bool = True


class SampleCt(Section):
    n_patients: int = Field(80, ge=1)
    n_studies: int = Field(120, ge=1)
    shape: IntTriple = [64, 64, 48]
    spacing_mm: FloatTriple = [6.0, 6.0, 8.0]
    normal_fraction: float = Field(0.4, ge=0, le=1)
    normal_study_fraction: float = Field(0.1, ge=0, le=1)
    nifti_fraction: float = Field(0.5, ge=0, le=1)
    jpeg2000_fraction: float = Field(0.25, ge=0, le=1)
    enhanced_studies: int = Field(2, ge=0)
    tilted_studies: int = Field(1, ge=0)
    studies_per_task: int = Field(8, ge=1)
    broken_inputs: bool = True


class SampleReports(Section):
    broken_inputs: bool = True       # an empty report, one without findings, a duplicate, undecodable bytes


class SampleParams(Section):
    seed: int = 20261125
    output_dir: Location = "data/sample"
    parts: list[Literal["literature", "vocabulary", "ct", "reports"]] = ["literature", "vocabulary", "ct", "reports"]
    vocabulary: SampleVocabulary = SampleVocabulary()
    literature: SampleLiterature = SampleLiterature()
    ct: SampleCt = SampleCt()
    reports: SampleReports = SampleReports()


class Licences(Section):
    allowed: list[str] = ["cc0", "cc-by", "cc-by-sa", "cc-by-nd", "cc-by-nc", "cc-by-nc-sa", "cc-by-nc-nd"]
    require_commercial_use: bool = False


class IngestParams(Section):
    source: Location = "data/sample/pmc"
    base_url: Location | None = None
    updated_after: IsoDate | None = None
    updated_before: IsoDate | None = None
    output_dir: Location = "data/ingest"
    shard_size: int = Field(1000, ge=1)
    packages_per_task: int = Field(250, ge=1)
    max_member_bytes: int = Field(268435456, ge=1)
    max_package_bytes: int = Field(2147483648, ge=1)
    max_members: int = Field(5000, ge=1)
    max_xml_bytes: int = Field(33554432, ge=1)
    keep_suffixes: list[str] = [".nxml", ".xml", ".pdf", ".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".txt"]
    licences: Licences = Licences()
    retracted: list[PmcId] = []
    incremental: bool = True


class ContactSheet(Section):
    n: int = Field(36, ge=0)
    thumb: int = Field(192, ge=16)


class FiguresParams(Section):
    articles: Location = "data/ingest/articles.parquet"
    shards_dir: Location = "data/ingest/shards"
    output_dir: Location = "data/figures"
    articles_per_task: int = Field(100, ge=1)
    pdf_mode: Literal["auto", "fallback", "never"] = "auto"
    pdf_fallback_unresolved: bool = True
    dpi: int = Field(150, ge=36)
    max_side: int = Field(1024, ge=16)
    jpeg_quality: int = Field(90, ge=1, le=100)
    max_pixels: int = Field(178956970, ge=1)
    max_image_bytes: int = Field(67108864, ge=1)
    max_xml_bytes: int = Field(33554432, ge=1)
    max_pdf_bytes: int = Field(134217728, ge=1)
    max_pdf_pages: int = Field(200, ge=1)
    min_region_pt: float = Field(36, ge=0)
    max_caption_gap_pt: float = Field(144, ge=0)
    near_duplicate_distance: int = 6
    contact_sheet: ContactSheet = ContactSheet()
    panels: Literal["split", "whole", "both"] = "whole"
    panel_labels: Literal["order", "ocr"] = "order"
    incremental: bool = True


class UmlsIndexParams(Section):
    meta_dir: Location = "data/sample/umls/META"
    semantic_groups: Location | None = "data/sample/umls/SemGroups.txt"
    mesh_tree: Location | None = None
    mesh_xml: Location | None = None
    mesh_supplementary_xml: Location | None = None
    mesh_permute_inverted: bool = True
    mesh_permuted_terms: bool = False
    radiology_supplement: Location | None = None
    output_dir: Location = "data/umls_index"
    language: str = "ENG"
    sources: list[str] | None = None
    term_types: list[str] | None = None
    semantic_types: list[str] | None = None
    lowercase: bool = True
    normalize_unicode: bool = True
    database_backend: Literal["unqlite", "leveldb"] = "unqlite"
    acronym_max_len: int = Field(6, ge=0)


class SenseRule(Section):
    """link_concepts.sense_rules: a one-word match next to one of `words` (`where` they stand:
    before the match, within its phrase, or directly after it) keeps only candidates of `groups`."""
    where: Literal["before", "after"]
    words: list[str]
    groups: list[str]


# The defaults of link_concepts.sense_rules (params.yaml names each with its reason).
SENSE_RULES = [
    {"where": "after", "words": ["sign", "signs", "appearance", "configuration", "like", "shaped"],
     "groups": ["DISO"]},
    {"where": "before", "words": ["coronal", "sagittal", "lambdoid", "metopic", "squamosal", "cranial",
                                  "calvarial"], "groups": ["ANAT", "DISO"]},
    {"where": "before", "words": ["anterior", "posterior", "lateral", "medial", "superior", "inferior",
                                  "ventral", "dorsal", "proximal", "distal", "central", "peripheral"],
     "groups": ["ANAT", "DISO", "PHYS", "PROC", "DEVI"]},
    {"where": "before", "words": ["mild", "mildly", "moderate", "moderately", "severe", "marked", "markedly",
                                  "minimal", "extensive", "progressive", "premature", "congenital", "diffuse",
                                  "focal", "aneurysmal"], "groups": ["ANAT", "DISO", "PHYS", "CHEM"]},
]


class LinkConceptsParams(Section):
    figures: Location = "data/figures/figures.parquet"
    index_dir: Location = "data/umls_index"
    output_dir: Location = "data/link_concepts"
    figures_per_task: int = Field(2000, ge=1)
    max_chars: int = Field(20000, ge=1)
    exclude_uncertain: bool = True
    spacy_model: str | None = None
    split_hyphens: bool = True
    sentencizer: Literal["rule", "pysbd"] = "rule"
    abbreviations: bool = True
    acronyms: bool = True
    variants: bool = True
    similarity: Literal["jaccard", "dice", "cosine", "overlap"] = "jaccard"
    threshold: float = Field(0.8, ge=0, le=1)
    window: int = Field(5, ge=1)
    min_match_length: int = Field(3, ge=1)
    best_match: bool = True
    overlap: Literal["length", "score"] = "length"
    min_similarity: float = Field(0.8, ge=0, le=1)
    same_start: int = Field(3, ge=0)
    semantic_types: list[str] | None = None
    semantic_groups: list[str] | None = ["ANAT", "DISO", "PROC", "CHEM", "DEVI", "PHYS"]
    stop_concepts: list[str] = ["C0012634", "C0039082", "C0243095", "D004194", "D013577",
                                "D014894", "D009934", "D009308", "D012722"]
    shadow_groups: list[str] | None = ["ACTI", "CONC", "GENE", "GEOG", "LIVB", "OBJC", "OCCU", "ORGA", "PHEN"]
    acronyms_as_written: bool = True
    exact_before_hyphen: bool = True
    sense_rules: list[SenseRule] = SENSE_RULES
    negation: bool = True
    context_max_scope: int = Field(8, ge=1)
    context_rules: dict[AssertionRuleList, list[str]] = {}
    incremental: bool = True
