"""The repository files a stage command runs or reads: its import closure, found in the code.

A stage's code deps are the repository modules its command executes: the module named by
`python -m <module>` (or a script path), every repository module it imports at any depth
(`import` and `from ... import` anywhere in a file, function-level and relative imports
included, `from pkg import name` where name is a submodule), the `__init__.py` of every
package Python executes on the way, and dotted module names given as string constants
(`importlib.import_module("tasks.sample.ct_phantoms")`, `-m tasks.training.rank_main`).

Its repository data are the non-.py files under the packages that it reads by default: a
file the stage's declared params name (`split_reports.lexicon: tasks/reports/lexicon.yaml`,
every preset's `model_config`, so `-S <stage>.preset=base` reads a declared file too), or a
file named beside one of its modules.
"""
from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

PACKAGES = ("flows", "tasks", "models")


class StageCommandError(ValueError):
    """A stage command whose Python module cannot be found."""


def is_repository_path(path: str) -> bool:
    """A path inside one of the repository's packages (flows/, tasks/, models/)."""
    first = Path(path).parts[0] if Path(path).parts else ""
    return first in PACKAGES


def command_module(cmd: str) -> str:
    """The dotted module a stage command runs: `python -m flows.ingest` -> flows.ingest."""
    tokens = shlex.split(cmd)
    for i, token in enumerate(tokens):
        if token == "-m" and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.endswith(".py") and i > 0:
            return token.removesuffix(".py").replace("/", ".")
    raise StageCommandError(f"no `python -m <module>` or script path in stage command {cmd!r}")


def module_file(root: Path, dotted: str) -> Path | None:
    """The file that defines a repository module (a .py file or a package's __init__.py)."""
    parts = dotted.split(".")
    if not parts or parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def is_package_dir(root: Path, dotted: str) -> bool:
    parts = dotted.split(".")
    return bool(parts) and parts[0] in PACKAGES and root.joinpath(*parts).is_dir()


def _package_of(dotted: str, is_init: bool) -> str:
    return dotted if is_init else dotted.rpartition(".")[0]


def _relative_base(module: str, is_init: bool, level: int, name: str | None) -> str:
    package = _package_of(module, is_init).split(".")
    if level - 1 > len(package):
        raise ImportError(f"relative import beyond the top package in {module}")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _parse(source: str, where: str) -> ast.AST:
    try:
        return ast.parse(source, filename=where)
    except SyntaxError as exc:
        raise StageCommandError(f"cannot parse {where}: {exc}") from exc


def imported_modules(source: str, module: str, is_init: bool) -> set[str]:
    """Dotted names a module's source may import (repository or not), as written."""
    found: set[str] = set()
    for node in ast.walk(_parse(source, module)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _relative_base(module, is_init, node.level, node.module) if node.level else node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            # importlib.import_module("tasks.x.y") and `-m tasks.x.y` name modules in strings
            if "." in text and text.split(".")[0] in PACKAGES and text.replace(".", "").replace("_", "").isalnum():
                found.add(text)
    return found


def _string_constants(source: str, where: str) -> set[str]:
    return {node.value for node in ast.walk(_parse(source, where))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 300}


def _with_parents(dotted: str) -> list[str]:
    """The module and every package above it, outermost first (what `import a.b.c` executes)."""
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class Closure:
    modules: tuple[str, ...]  # repository-relative .py paths, sorted
    data: tuple[str, ...]  # repository-relative non-.py files read at fixed paths, sorted

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.modules) | set(self.data)))


def module_closure(root: str | Path, start: str) -> list[str]:
    """Repository .py files that running `python -m <start>` executes, sorted, relative to root."""
    root = Path(root).resolve()
    if module_file(root, start) is None:
        raise StageCommandError(f"module {start!r} is not a repository module under {root}")
    return sorted(_closure(root, start))


def _closure(root: Path, start: str) -> set[str]:
    seen_modules: set[str] = set()
    files: set[str] = set()
    pending = [start]
    while pending:
        dotted = pending.pop()
        for name in _with_parents(dotted):
            if name in seen_modules:
                continue
            path = module_file(root, name)
            if path is None:
                continue  # a namespace package folder, or a name that is an attribute
            seen_modules.add(name)
            files.add(path.relative_to(root).as_posix())
            for imported in imported_modules(_read(path), name, path.name == "__init__.py"):
                if imported and imported.split(".")[0] in PACKAGES:
                    pending.append(imported if module_file(root, imported) or is_package_dir(root, imported)
                                   else imported.rpartition(".")[0])
    return files


@lru_cache(maxsize=4096)
def _read_cached(path: str, mtime_ns: int) -> str:
    return Path(path).read_text(encoding="utf-8")


def _read(path: Path) -> str:
    return _read_cached(str(path), path.stat().st_mtime_ns)


def repository_data_files(root: Path) -> list[str]:
    """Non-.py files inside the packages (configs, lexicons), relative to root."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
                out.append(path.relative_to(root).as_posix())
    return out


def _strings_in(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings_in(item)


def data_read_by(root: str | Path, modules: Iterable[str], param_values: Iterable) -> list[str]:
    """Repository data files named by the stage's params values, or by name beside one of its
    modules (`Path(__file__).parent / "lexicon.yaml"`).

    A repository path written out in code is a params default (the schema's), so the stage
    that declares that param reads it; `paths_named_in_code` finds any that params.yaml lacks.
    """
    root = Path(root).resolve()
    candidates = set(repository_data_files(root))
    named: set[str] = set()
    for value in param_values:
        named.update(s.strip().removeprefix("./") for s in _strings_in(value))
    for module in modules:
        folder = Path(module).parent
        named.update((folder / text).as_posix() for text in _string_constants(_read(root / module), module)
                     if "/" not in text)
    return sorted(candidates & named)


def paths_named_in_code(root: str | Path, modules: Iterable[str]) -> dict[str, list[str]]:
    """Repository data files that modules name by their repository path: file -> modules."""
    root = Path(root).resolve()
    candidates = set(repository_data_files(root))
    found: dict[str, list[str]] = {}
    for module in sorted(modules):
        for text in _string_constants(_read(root / module), module):
            if text.removeprefix("./") in candidates:
                found.setdefault(text.removeprefix("./"), []).append(module)
    return found


def stage_closure(root: str | Path, cmd: str, param_values: Iterable = ()) -> Closure:
    """Code modules and repository data of a stage command with these params values."""
    root = Path(root).resolve()
    modules = module_closure(root, command_module(cmd))
    return Closure(tuple(modules), tuple(data_read_by(root, modules, list(param_values))))
