"""The params schema: one typed model per params.yaml section, the single source of
names, types and defaults. `validate_params` turns a loaded params dict into checked
plain values, or raises ParamsError with one line per problem naming the key."""
from __future__ import annotations

import difflib

from pydantic import ValidationError

from tasks.common.params import ParamsError
from tasks.schema.base import Section, resolve_locations  # noqa: F401  (re-exported)
from tasks.schema.ct import CtConvertParams, DeidParams, SegmentParams, SplitReportsParams
from tasks.schema.literature import (FiguresParams, IngestParams, LinkConceptsParams, SampleParams,
                                     UmlsIndexParams)
from tasks.schema.training import (PRESET_KEYS, DaskParams, EvaluateParams, FvlmPrepareParams, PipelineParams,
                                   TrainConceptclipParams, TrainFvlmParams)


class Params(Section):
    dask: DaskParams = DaskParams()
    sample: SampleParams = SampleParams()
    ingest: IngestParams = IngestParams()
    figures: FiguresParams = FiguresParams()
    umls_index: UmlsIndexParams = UmlsIndexParams()
    deid: DeidParams = DeidParams()
    ct_convert: CtConvertParams = CtConvertParams()
    segment: SegmentParams
    link_concepts: LinkConceptsParams = LinkConceptsParams()
    pipeline: PipelineParams = PipelineParams()
    split_reports: SplitReportsParams
    train_conceptclip: TrainConceptclipParams
    fvlm_prepare: FvlmPrepareParams = FvlmPrepareParams()
    train_fvlm: TrainFvlmParams
    evaluate: EvaluateParams = EvaluateParams()


SECTIONS = tuple(Params.model_fields)
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list": "a list", "tuple": "a list", "dict": "a mapping", "literal": "one of"}


def _model_at(path: tuple) -> type[Section] | None:
    """The section model that holds the key at `path` (None past a free-form mapping)."""
    model: type[Section] = Params
    for key in path:
        field = next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)
        sub = getattr(field, "annotation", None)
        if not (isinstance(sub, type) and issubclass(sub, Section)):
            return None
        model = sub
    return model


def _known_keys(model: type[Section]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _expected(error: dict) -> str:
    kind = error["type"]
    if kind == "literal_error":
        return f"one of {error['ctx']['expected']}"
    if kind == "string_pattern_mismatch":  # e.g. ingest.retracted: PMC ids
        return f"text matching {error['ctx']['pattern']}"
    for word, phrase in _TYPE_WORDS.items():
        if kind.startswith(word):
            return phrase
    return error["msg"].lower()


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags ('int', 'literal[...]') from an error location."""
    return tuple(p for p in loc if not (isinstance(p, str) and (p in _TYPE_WORDS or "[" in p or p.endswith("]"))))


def describe(error: dict) -> str:
    loc = _clean_loc(error["loc"])
    key = _dotted(loc)
    if error["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = _known_keys(parent) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        what = "params section" if len(loc) == 1 else "key"
        hint = f" (did you mean {_dotted((*loc[:-1], close[0]))!r}?)" if close else \
            (f" (known: {', '.join(known)})" if known and len(known) <= 12 else "")
        return f"unknown {what} {key!r}{hint}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    value = error.get("input")
    if error["type"].endswith(("_greater_than", "_greater_than_equal", "_less_than", "_less_than_equal")) or \
            error["type"] in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return f"{key}: {error['msg'].lower()}, got {value!r}"
    return f"{key}: expected {_expected(error)}, got {value!r} ({type(value).__name__})"


def validate_params(raw: dict) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        by_key: dict[str, list[dict]] = {}
        for error in exc.errors():
            by_key.setdefault(_dotted(_clean_loc(error["loc"])), []).append(error)
        lines = []
        for key, errors in by_key.items():
            if len(errors) == 1 or errors[0]["type"] in {"extra_forbidden", "missing"}:
                lines.append(describe(errors[0]))
            else:  # a union: one error per branch, said as one expectation
                wanted = " or ".join(dict.fromkeys(_expected(e) for e in errors))
                value = errors[0].get("input")
                lines.append(f"{key}: expected {wanted}, got {value!r} ({type(value).__name__})")
        raise ParamsError("; ".join(lines)) from None


def as_plain(params: Params) -> dict:
    """The validated params as plain dicts, keys as in params.yaml."""
    return params.model_dump(by_alias=True, mode="json")


def resolve_training_preset(section: dict) -> dict:
    """The section with its preset's loop settings filled in where the section says null."""
    presets = section["presets"]
    name = section["preset"]
    if name not in presets:
        raise ParamsError(f"preset {name!r} is not one of {sorted(presets)}")
    resolved = {k: v for k, v in section.items() if k != "presets"}
    # the shared loop settings and a stage's own preset keys (train_conceptclip's cache_images)
    for key in dict.fromkeys([*PRESET_KEYS, *presets[name]]):
        if resolved.get(key) is None:
            resolved[key] = presets[name][key]
    return resolved


def with_absolute_locations(params: dict, base) -> dict:
    """Validated params with every Location made absolute against `base` (URLs kept): the
    form handed to Dask workers, which may run in other folders on other machines."""
    from pathlib import Path

    model = Params.model_validate({k: v for k, v in params.items() if k in SECTIONS})
    resolved = as_plain(resolve_locations(model, Path(base)))
    return {**params, **resolved}
