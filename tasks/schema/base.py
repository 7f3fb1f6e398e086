"""What every params section model shares: strict types, no unknown keys, path fields.

A field typed `Location` holds a local path or an fsspec URL; `resolve_locations` makes
local ones absolute once, at the flow boundary, so Dask workers elsewhere read the same
files (workers may run in other folders on other machines).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tasks.common.locations import is_url


class _LocationMarker:
    """Metadata tag: this string field is a local path or an fsspec URL."""


def _date_to_text(value: Any) -> Any:
    # YAML reads 2024-01-31 as a date; the params hold ISO text
    return value.isoformat() if isinstance(value, (_dt.date, _dt.datetime)) else value


Location = Annotated[str, _LocationMarker()]
# YAML has no tuples: fixed-length lists
IntPair = Annotated[list[int], Field(min_length=2, max_length=2)]
FloatPair = Annotated[list[float], Field(min_length=2, max_length=2)]
IntTriple = Annotated[list[int], Field(min_length=3, max_length=3)]
FloatTriple = Annotated[list[float], Field(min_length=3, max_length=3)]
IsoDate = Annotated[str, BeforeValidator(_date_to_text)]


class Section(BaseModel):
    """A params section: strict types (no "abc" for an int, no string for a list), and
    every key known."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, populate_by_name=True,
                              protected_namespaces=())


def _resolve_one(value: str, base: Path) -> str:
    if is_url(value):
        return value
    local = value[len("file://"):] if value.startswith("file://") else value
    path = Path(local)
    return str(path if path.is_absolute() else (base / path).resolve())


def _is_location(annotation: Any) -> bool:
    if any(isinstance(m, _LocationMarker) for m in getattr(annotation, "__metadata__", ())):
        return True
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return any(_is_location(a) for a in get_args(annotation))
    return False


def resolve_locations(model: Section, base: Path) -> Section:
    """A copy of `model` whose Location fields (nested sections too) are absolute."""
    updates: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, Section):
            updates[name] = resolve_locations(value, base)
        elif isinstance(value, str) and (_is_location(field.annotation)
                                         or any(isinstance(m, _LocationMarker) for m in field.metadata)):
            updates[name] = _resolve_one(value, base)
    return model.model_copy(update=updates)
