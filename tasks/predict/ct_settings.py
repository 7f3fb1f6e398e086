"""predict's settings for a CT: ct_convert's, the usability rules, the preprocessing, the label
map, the prompt pair and the finding names, each with where it came from (ct.json records both)."""
from __future__ import annotations

import json
from pathlib import Path

from tasks.ct.conversion_settings import conversion_settings
from tasks.predict.model_folder import NotAModelFolder

REPO = Path(__file__).resolve().parent.parent.parent
_USABILITY_KEYS = ("min_voxels", "drop_fov_cut", "keep_fov_cut")


def convert_cfg(config: dict) -> tuple[dict, str]:
    """(ct_convert's cfg as its flow builds it, where its settings came from): the training
    data's settings that config.json records (`ct_convert`, from train_fvlm), over the schema's
    defaults for the keys that place a stage's work; the schema's defaults alone for a folder
    trained before they were recorded."""
    from pydantic import ValidationError

    from tasks.schema import describe
    from tasks.schema.ct import CtConvertParams, DeidParams

    recorded = config.get("ct_convert")
    try:
        section = CtConvertParams(**(recorded or {}))
    except ValidationError as exc:  # an unknown key or a wrong value: named as params errors are
        problems = "; ".join(describe({**e, "loc": ("ct_convert", *e["loc"])}) for e in exc.errors())
        raise NotAModelFolder(f"fVLM config.json ct_convert (the training data's settings): {problems}") from None
    source = ("the model folder's config.json ct_convert (the training data's settings)" if recorded else
              "the schema's ct_convert defaults (tasks/schema/ct.py CtConvertParams): the model folder "
              "does not record the ct_convert settings of its training data")
    deid = DeidParams()
    return {**section.model_dump(), "source_paths": deid.source_paths, "deid_key": deid.key}, source


def conversion_record(cfg: dict, source: str) -> dict:
    return {"settings": conversion_settings(cfg), "source": source}


def usability_settings(model_dir: Path) -> tuple[dict, str]:
    """train_fvlm's min_voxels, drop_fov_cut and keep_fov_cut: the training run's (lineage.json)
    when the folder has them, else the schema's defaults."""
    from tasks.schema.training import TrainFvlmParams

    lineage = model_dir / "lineage.json"
    if lineage.is_file():
        try:
            run = json.loads(lineage.read_text(encoding="utf-8"))["params"]["train_fvlm"]
            if all(k in run for k in _USABILITY_KEYS):
                return {k: run[k] for k in _USABILITY_KEYS}, "the model folder's lineage.json (the training run)"
        except (ValueError, KeyError, TypeError):
            pass
    fields = TrainFvlmParams.model_fields
    return ({k: fields[k].default for k in _USABILITY_KEYS},
            "the schema's train_fvlm defaults (the model folder's lineage.json does not give them)")


def check_preprocess(config: dict) -> dict:
    """config.json's preprocess, checked against what this version's fvlm_prepare writes."""
    from tasks.training import fvlm_tensors

    pre = config["preprocess"]
    for key in ("volume_size", "axes", "hu_windows", "mask_pooling"):
        if key not in pre:
            raise NotAModelFolder(f"fVLM config.json preprocess has no {key!r}; retrain with this version of medconcept")
    if pre["axes"] != fvlm_tensors.AXES or pre["mask_pooling"] != fvlm_tensors.MASK_POOLING:
        raise NotAModelFolder(f"fVLM config.json preprocess axes {pre['axes']!r} / mask_pooling {pre['mask_pooling']!r}: "
                              f"this version prepares {fvlm_tensors.AXES!r} / {fvlm_tensors.MASK_POOLING!r}")
    if [int(v) for v in pre["volume_size"]] != [int(v) for v in config["model"]["ct"]["volume_size"]]:
        raise NotAModelFolder(f"fVLM config.json preprocess volume_size {pre['volume_size']} differs from the "
                              f"model's ct.volume_size {config['model']['ct']['volume_size']}")
    return {"volume_size": [int(v) for v in pre["volume_size"]], "axes": pre["axes"],
            "hu_windows": [[float(lo), float(hi)] for lo, hi in pre["hu_windows"]],
            "mask_pooling": pre["mask_pooling"], "volume_dtype": "float16",
            "source": "the model folder's config.json preprocess (as fvlm_prepare made the training tensors)"}


def segment_anatomies() -> dict:
    """segment.anatomies of the repository's params.yaml: anatomy -> TotalSegmentator classes."""
    from tasks.common.params import load_params

    return load_params(REPO / "params.yaml")["segment"]["anatomies"]


def anatomy_groups(anatomies: list[str], names: dict[str, str], mask_labels: str | None):
    """(AnatomyGroups for the model's anatomies, where the label ids came from)."""
    from tasks.ct.anatomy import AnatomyGroups, build_groups
    from tasks.schema.ct import TotalSegmentatorParams

    if mask_labels is None:
        wanted = {a: v for a, v in segment_anatomies().items() if a in set(anatomies)}
        return (build_groups(wanted, task=TotalSegmentatorParams().task),
                "params.yaml segment.anatomies (TotalSegmentator v2 class ids)")
    path = Path(mask_labels)
    if not path.is_file():
        raise FileNotFoundError(f"--mask-labels {path}: no such file")
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--mask-labels {path}: not JSON ({exc})") from None
    if not isinstance(given, dict) or not given:
        raise ValueError(f"--mask-labels {path}: expected a JSON object {{label value: anatomy}}")
    by_word = {a.lower(): a for a in anatomies} | {str(names.get(a, a)).lower(): a for a in anatomies}
    ids: dict[str, set[int]] = {}
    label_names: dict[int, str] = {}
    for value, anatomy in given.items():
        try:
            label = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"--mask-labels: label value {value!r} is not an integer") from None
        if not 1 <= label <= 255:
            raise ValueError(f"--mask-labels: label value {label} outside 1..255 (label maps are uint8)")
        key = by_word.get(str(anatomy).strip().lower())
        if key is None:
            raise ValueError(f"--mask-labels: {anatomy!r} (label {label}) is none of the model's anatomies "
                             f"{list(anatomies)}")
        ids.setdefault(key, set()).add(label)
        label_names[label] = key
    return (AnatomyGroups(task="mask-labels", ids={a: tuple(sorted(v)) for a, v in sorted(ids.items())},
                          other_task={}, names=label_names), "--mask-labels")


def prompt_pair(config: dict, tuned_by: str | None) -> tuple[dict, str, dict]:
    """(prompt pair, where it came from, evaluate's test figures per "finding @ anatomy")."""
    if not tuned_by:
        return dict(config["zero_shot"]), "the model folder's config.json zero_shot", {}
    detail = Path(tuned_by) / "metrics_detail.json"
    if not detail.is_file():
        raise ValueError(f"--tuned-by {tuned_by}: no metrics_detail.json (evaluate's fvlm folder)")
    record = json.loads(detail.read_text(encoding="utf-8"))
    chosen = (record.get("tuning") or {}).get("chosen") or {}
    if not {"positive", "negative"} <= set(chosen) or "pairs_evaluated" not in record:
        raise ValueError(f"--tuned-by {tuned_by}: not evaluate's fvlm folder (no chosen prompt pair)")
    auc, support = record.get("zero_shot_auc") or {}, record.get("zero_shot_support") or {}
    tested = {k: {"test_auc": auc[k], "test_support": support.get(k)} for k in sorted(auc)}
    return ({"positive": chosen["positive"], "negative": chosen["negative"]},
            "evaluate's choice on the validation studies (--tuned-by: metrics_detail.json tuning.chosen)", tested)


def finding_words(finding_names: str | None) -> tuple[dict[str, str], str]:
    """finding key -> the name evaluate puts in its prompts."""
    if not finding_names:
        return {}, "the finding keys' words (no --finding-names: evaluate uses split_reports' names where it has them)"
    path = Path(finding_names)
    if not path.is_file():
        raise FileNotFoundError(f"--finding-names {path}: no such file")
    if path.suffix == ".parquet":
        from tasks.evaluate.fvlm_eval import finding_names as names_of

        return names_of(path), "--finding-names: split_reports' anatomy_texts (as evaluate_fvlm reads them)"
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"--finding-names {path}: neither anatomy_texts.parquet nor JSON ({exc})") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise ValueError(f"--finding-names {path}: expected a JSON object {{finding key: name}}")
    return {str(k): v for k, v in names.items()}, "--finding-names JSON"
