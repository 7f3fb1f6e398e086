"""Params of the CT stages: deid, ct_convert, segment, split_reports."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.schema.base import FloatPair, Location, Section


class DeidParams(Section):
    key: str = "medconcept-sample-key-not-secret"
    key_env: str = "MEDCONCEPT_DEID_KEY"
    source_paths: Literal["hashed", "plain"] = "hashed"


class CtRateInputParams(Section):
    """ct_convert.ct_rate: how a CT-RATE folder is read (used when input_kind is ct_rate)."""
    metadata_glob: str = "metadata/*_metadata.csv"
    reconstructions: Literal["first", "all", "thinnest"] = "first"
    hu: Literal["auto", "rescale", "as_stored"] = "auto"
    air_window: FloatPair = [-1100.0, -900.0]
    tissue_window: FloatPair = [-100.0, 100.0]
    min_air_fraction: float = Field(0.005, ge=0, le=1)
    spacing_tolerance: float = Field(0.02, ge=0)
    spacing_conflict: Literal["metadata", "reject"] = "metadata"

    @field_validator("air_window", "tissue_window")
    @classmethod
    def _ordered(cls, value: list[float]) -> list[float]:
        if not value[0] < value[1]:
            raise ValueError(f"expected [low, high] with low < high, got {value}")
        return value

    @model_validator(mode="after")
    def _apart(self) -> "CtRateInputParams":
        if self.air_window[1] >= self.tissue_window[0]:
            raise ValueError(f"air_window {self.air_window} must lie below tissue_window {self.tissue_window}")
        return self


class CtConvertParams(Section):
    source: Location = "data/sample/ct/input"
    output_dir: Location = "data/ct_convert"
    input_kind: Literal["files", "ct_rate"] = "files"
    ct_rate: CtRateInputParams = CtRateInputParams()
    missing_uid: Literal["folder", "reject"] = "folder"
    min_slices: int = Field(2, ge=1)
    uneven_spacing: Literal["reject", "resample"] = "reject"
    gantry_tilt: Literal["reject", "resample"] = "resample"
    duplicate_positions: Literal["reject", "drop"] = "reject"
    non_finite_voxels: Literal["reject", "air"] = "reject"
    spacing_tolerance: float = Field(0.02, ge=0)
    tilt_tolerance_deg: float = Field(0.05, ge=0)
    max_voxels: int = Field(2147483648, ge=1)
    max_p01_hu: float = -200
    max_p99_hu: float = 4000
    files_per_task: int = Field(2000, ge=1)
    series_per_task: int = Field(8, ge=1)


class ProvidedMasks(Section):
    masks_dir: Location = "data/sample/ct/masks"


class TotalSegmentatorParams(Section):
    task: str = "total"
    fast: bool = True
    device: Literal["cpu", "gpu", "mps"] = "cpu"
    roi_subset: Literal["auto"] | list[str] | None = "auto"
    home_dir: Location | None = None
    nr_threads: int = Field(1, ge=1)


class SegmentParams(Section):
    input_dir: Location = "data/ct_convert"
    output_dir: Location = "data/segment"
    backend: Literal["provided", "totalsegmentator"] = "provided"
    provided: ProvidedMasks = ProvidedMasks()
    totalsegmentator: TotalSegmentatorParams = TotalSegmentatorParams()
    geometry_tolerance_mm: float = Field(0.001, ge=0)
    overlays: bool = True
    series_per_task: int = Field(8, ge=1)
    anatomies: dict[str, list[str]]


class ReportColumns(Section):
    study: str = "StudyInstanceUID"
    text: str | None = "report"
    findings: str | None = None
    impression: str | None = None


class LabelRule(Section):
    findings: list[str]
    anatomies: list[str] | None = None


class SplitReportsParams(Section):
    reports: Location = "data/sample/reports/reports.csv"
    columns: ReportColumns = ReportColumns()
    study_key_kind: Literal["study", "accession", "ct_rate_volume", "none"] = "study"
    empty_markers: list[str] = ["Not given."]
    reference_labels: Location | None = "data/sample/reports/labels.csv"
    output_dir: Location = "data/split_reports"
    lexicon: Location = "tasks/reports/lexicon.yaml"
    reports_per_task: int = Field(200, ge=1)
    max_report_chars: int = Field(100000, ge=1)
    max_sentence_chars: int = Field(2000, ge=100)
    linker: Literal["auto"] | bool = "auto"
    linker_index: Location = "data/umls_index"
    linker_scope: Literal["unresolved", "all"] = "unresolved"
    link_cache_size: int = Field(50000, ge=0)
    scispacy_tokenizer: bool = True
    uncertain_as_present: bool = True
    impression_markers: list[str] = ['"', "•"]
    description_sections: list[str] = ["findings"]
    description_fallback_sections: list[str] = ["impression"]
    label_sections: list[str] = ["findings", "impression"]
    default_template: str = "{anatomy} shows no significant abnormality."
    abnormal_template: str = "{anatomy}: {findings}."
    anatomies: list[str] | None = None
    anatomy_aliases: dict[str, str | list[str]]
    anatomy_names: dict[str, str]
    anatomy_cuis: dict[str, str]
    finding_cuis: dict[str, str] = {}
    # domain mappings: params.yaml holds them, the schema their shape
    labels: dict[str, LabelRule]
