"""dvc.yaml's repository deps against the code: what each stage lacks or lists in excess,
and a rewrite of only that part of each `deps:` list.

Repository deps are the deps inside flows/, tasks/ and models/ (code and the data files in
them); every other dep (data/...) is the stage's data and is kept as written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.lineage.code_deps import Closure, is_repository_path, stage_closure

SYNC_COMMAND = "python scripts/sync_stage_deps.py --write"


class DvcYamlLayoutError(ValueError):
    """A dvc.yaml whose deps lists the text rewrite cannot edit safely."""


@dataclass(frozen=True)
class StageDeps:
    stage: str
    expected: tuple[str, ...]  # repository files the stage's code runs or reads
    declared: tuple[str, ...]  # repository files dvc.yaml's deps cover (folders expanded)

    @property
    def missing(self) -> list[str]:
        return sorted(set(self.expected) - set(self.declared))

    @property
    def excess(self) -> list[str]:
        return sorted(set(self.declared) - set(self.expected))

    @property
    def in_sync(self) -> bool:
        return not self.missing and not self.excess

    def message(self) -> str:
        if self.in_sync:
            return f"stage {self.stage!r}: deps match the code ({len(self.expected)} repository files)"
        parts = [f"stage {self.stage!r}: dvc.yaml deps do not match the code its command runs"]
        if self.missing:
            parts.append(f"  missing (run or read, not declared): {', '.join(self.missing)}")
        if self.excess:
            parts.append(f"  excess (declared, not run or read): {', '.join(self.excess)}")
        parts.append(f"  fix: {SYNC_COMMAND}")
        return "\n".join(parts)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _lookup(params: dict, dotted: str, stage: str):
    value = params
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"stage {stage!r} declares param {dotted!r}, which params.yaml lacks")
        value = value[key]
    return value


def declared_param_values(root: Path, stage: str, entry: dict) -> list:
    """The values of the params a stage declares (`section`, `section.key`, `{file: [keys]}`)."""
    files: dict[str, dict] = {}

    def params_of(name: str) -> dict:
        if name not in files:
            files[name] = load_yaml(root / name)
        return files[name]

    values = []
    for item in entry.get("params") or []:
        if isinstance(item, str):
            values.append(_lookup(params_of("params.yaml"), item, stage))
        elif isinstance(item, dict):
            for file, keys in item.items():
                for key in keys or []:
                    values.append(_lookup(params_of(file), key, stage))
    return values


def dep_paths(entry: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else str(d) for d in entry.get("deps") or []]


def expand(root: Path, path: str) -> list[str]:
    """A declared dep as the files DVC hashes for it (a folder: its files, bytecode left out)."""
    target = root / path
    if target.is_dir():
        return sorted(p.relative_to(root).as_posix() for p in target.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return [Path(path).as_posix()]


def stage_expected(root: Path, name: str, entry: dict) -> Closure:
    return stage_closure(root, entry["cmd"], declared_param_values(root, name, entry))


def compare_stage(root: Path, name: str, entry: dict) -> StageDeps:
    expected = stage_expected(root, name, entry).files
    declared = sorted({f for dep in dep_paths(entry) if is_repository_path(dep) for f in expand(root, dep)})
    return StageDeps(name, tuple(expected), tuple(declared))


def compare_all(root: str | Path) -> list[StageDeps]:
    root = Path(root).resolve()
    stages = load_yaml(root / "dvc.yaml").get("stages") or {}
    return [compare_stage(root, name, entry) for name, entry in stages.items()]


def synced_deps(root: Path, name: str, entry: dict) -> list[str]:
    """The stage's deps with the repository part replaced: sorted files first, then its data."""
    data = [d for d in dep_paths(entry) if not is_repository_path(d)]
    return list(stage_expected(root, name, entry).files) + data


# --- text rewrite of dvc.yaml (comments and layout outside the repository deps kept) ---

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):\s*(#.*)?$")
_ITEM = re.compile(r"^(?P<indent> *)- (?P<value>[^#]*?)\s*(#.*)?$")


def _is_code_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _stage_blocks(lines: list[str]) -> dict[str, tuple[int, int, int]]:
    """stage name -> (first line, end line, key indent) inside the top-level `stages:`."""
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "stages:"), None)
    if start is None:
        raise DvcYamlLayoutError("dvc.yaml has no top-level `stages:` line")
    body = [i for i in range(start + 1, len(lines)) if _is_code_line(lines[i])]
    if not body:
        return {}
    stage_indent = _indent(lines[body[0]])
    blocks, current = {}, None
    for i in body:
        if _indent(lines[i]) < stage_indent:
            break
        if _indent(lines[i]) == stage_indent:
            match = _KEY.match(lines[i])
            if not match:
                raise DvcYamlLayoutError(f"dvc.yaml line {i + 1}: expected a stage name, got {lines[i]!r}")
            current = match["key"]
            blocks[current] = [i, i + 1]
        blocks[current][1] = i + 1
    return {name: (a, b, stage_indent) for name, (a, b) in blocks.items()}


def _rewrite_stage(lines: list[str], first: int, end: int, stage_indent: int, name: str, deps: list[str]) -> list[str]:
    """The stage's lines with its `deps:` list holding `deps` (data lines kept verbatim)."""
    block = lines[first:end]
    key_lines = [j for j in range(1, len(block)) if _is_code_line(block[j]) and _KEY.match(block[j])
                 and _indent(block[j]) > stage_indent]
    key_indent = min((_indent(block[j]) for j in key_lines), default=stage_indent + 2)
    deps_at = next((j for j in key_lines if _indent(block[j]) == key_indent and _KEY.match(block[j])["key"] == "deps"),
                   None)
    if deps_at is None:
        cmd_at = next((j for j in key_lines if _KEY.match(block[j])["key"] == "cmd"), None)
        if cmd_at is None:
            cmd_at = next(j for j in range(1, len(block)) if block[j].lstrip().startswith("cmd:"))
        item_indent = " " * (key_indent + 2)
        new = [f"{' ' * key_indent}deps:\n"] + [f"{item_indent}- {d}\n" for d in deps]
        return block[: cmd_at + 1] + new + block[cmd_at + 1:]
    items, pending_comments, j = {}, [], deps_at + 1
    item_indent = None
    while j < len(block):
        line = block[j]
        if not line.strip():
            break
        if line.strip().startswith("#"):  # a comment travels with the dep below it
            pending_comments.append(line)
            j += 1
            continue
        match = _ITEM.match(line)
        if not match or _indent(line) < key_indent or (item_indent is not None and _indent(line) != item_indent):
            break
        item_indent = _indent(line)
        if match["value"].endswith(":"):
            raise DvcYamlLayoutError(f"stage {name!r}: dep {match['value']!r} has options; edit it by hand")
        items[match["value"]] = pending_comments + [line]
        pending_comments = []
        j += 1
    indent = " " * (item_indent if item_indent is not None else key_indent + 2)
    new_lines = []
    for dep in deps:
        new_lines += items.get(dep) or [f"{indent}- {dep}\n"]
    return block[: deps_at + 1] + new_lines + pending_comments + block[j:]


def rewrite_deps(text: str, deps_by_stage: dict[str, list[str]]) -> str:
    """dvc.yaml text with each named stage's deps list replaced, everything else unchanged."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    blocks = _stage_blocks(lines)
    for name in sorted(deps_by_stage, key=lambda n: blocks[n][0], reverse=True):  # bottom up: offsets hold
        first, end, indent = blocks[name]
        lines[first:end] = _rewrite_stage(lines, first, end, indent, name, deps_by_stage[name])
    new_text = "".join(lines)
    parsed = (yaml.safe_load(new_text) or {}).get("stages") or {}
    for name, deps in deps_by_stage.items():
        if dep_paths(parsed.get(name) or {}) != deps:
            raise DvcYamlLayoutError(f"stage {name!r}: the rewrite did not give the intended deps; edit it by hand")
    return new_text


def sync_dvc_yaml(root: str | Path) -> tuple[list[StageDeps], bool]:
    """Rewrite dvc.yaml's repository deps from the code; (the comparison before, changed?)."""
    root = Path(root).resolve()
    path = root / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    stages = (yaml.safe_load(text) or {}).get("stages") or {}
    before = [compare_stage(root, name, entry) for name, entry in stages.items()]
    wanted = {name: synced_deps(root, name, entry) for name, entry in stages.items()}
    current = {name: dep_paths(entry) for name, entry in stages.items()}
    changed = {name: deps for name, deps in wanted.items() if deps != current[name]}
    if changed:
        path.write_text(rewrite_deps(text, changed), encoding="utf-8")
    return before, bool(changed)
