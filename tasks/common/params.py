"""params.yaml loading with `dvc exp run -S` style overrides."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class ParamsError(ValueError):
    """A params file or an override that cannot be applied."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `section.key=value` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise ParamsError(f"override {text!r} is not of the form section.key=value")
    dotted, raw = text.split("=", 1)
    path = [part for part in dotted.strip().split(".") if part]
    if not path:
        raise ParamsError(f"override {text!r} names no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
        value = float(value)  # PyYAML (YAML 1.1) reads 3e-4 as text; DVC (YAML 1.2) as a number
    return path, value


_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)")


def apply_overrides(params: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of params with each override applied. A key or section that does not
    exist is added, so that the schema names it (with the closest known key)."""
    result = copy.deepcopy(dict(params))
    for text in overrides:
        path, value = parse_override(text)
        node: Any = result
        for key in path[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ParamsError(f"override {text!r}: {'.'.join(path[:-1])!r} is not a section")
        node[path[-1]] = value
    return result


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict[str, Any]:
    """params.yaml plus overrides, checked against the schema (tasks/schema): plain values,
    every key known and typed; a problem raises ParamsError naming the key."""
    from tasks.schema import as_plain, validate_params

    return as_plain(validate_params(load_raw_params(path, overrides)))


def load_raw_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found")
    with path.open(encoding="utf-8") as handle:
        params = yaml.safe_load(handle) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"params file {path} must hold a mapping of sections")
    return apply_overrides(params, overrides)


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    if name not in params or not isinstance(params[name], dict):
        raise ParamsError(f"params has no section {name!r}")
    return dict(params[name])
