"""End-to-end flow: every dvc.yaml stage in DVC's order, each as a named Prefect sub-run.

Stages DVC finds up to date are skipped; the others are reproduced through DVC's
own API, so dvc.lock ends exactly as `dvc repro` leaves it.

    python -m flows.pipeline [--overlay FILE ...] [-S section.key=value ...] [--target STAGE ...]

`--overlay FILE` (for example params/ct_rate.yaml) is a partial params file: each of its
values is an override, as if given with -S (and -S given after it win). `--target STAGE`
runs only that stage and the stages it depends on, as `dvc repro STAGE` does.

`-S` overrides are first checked against the params schema (a bad one stops the run with
one line and exit status 2). DVC runs each stage with params.yaml, so an override of a
stage's section is then written into params.yaml, on its own line and nothing else
changed, before any stage runs, as `dvc exp run -S` does in the workspace: DVC reruns
exactly the stages that declare the changed param, dvc.lock records it, and it stays in
params.yaml afterwards (`git diff params.yaml` shows it; `dvc exp run -S` instead also
keeps the run as a named experiment). `-S pipeline.*` (retries) applies to this run only.
An override that cannot be written that way (a value params.yaml spreads over several
lines, a key params.yaml lacks, a value DVC would read otherwise than the stages) is
refused with one line, params.yaml left as it was. `--params` must be params.yaml: the
stages never read another file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows._runtime import REPO_ROOT, ensure_prefect_api
from flows._stage import build_arg_parser
from tasks.common.params import ParamsError, load_params, load_raw_params, parse_override
from tasks.lineage.dag import reproduce_stage, stale_stages, stage_order

PIPELINE_SECTION = "pipeline"   # the pipeline flow's own settings: never written, read by no stage
PARAMS_FILE = "params.yaml"     # the file DVC gives every stage


def _stage_summaries(root: Path, stage: str) -> dict:
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    summaries = {}
    for metric in stages[stage].get("metrics", []):
        path = root / (next(iter(metric)) if isinstance(metric, dict) else metric)
        if path.is_file() and path.suffix == ".json":
            summaries[str(path.relative_to(root))] = json.loads(path.read_text(encoding="utf-8"))
    return summaries


def _markdown(stage: str, status: str, summaries: dict) -> str:
    lines = [f"# {stage}: {status}", ""]
    for path, summary in summaries.items():
        lines += [f"## {path}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in summary.items()]
        lines.append("")
    return "\n".join(lines)


# -- -S overrides: checked, then written into params.yaml for DVC ------------------------------
def readers(root: Path, path: list[str]) -> list[str]:
    """The stages whose dvc.yaml `params:` declare the param at `path` (or a part of it)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    found = []
    for stage, spec in stages.items():
        for entry in spec.get("params") or []:
            declared = entry.get(PARAMS_FILE, []) if isinstance(entry, dict) else [entry]
            if any(str(d).split(".")[:len(path)] == path[:len(str(d).split("."))] for d in declared):
                found.append(stage)
    return sorted(set(found))


def yaml_text(value) -> str:
    """One-line YAML for a value that PyYAML (the stages) and DVC (YAML 1.2) read alike."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}[text]
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa if '.' in mantissa else mantissa + '.0'}{'e' + exponent if exponent else ''}"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_text(str(k))}: {yaml_text(v)}" for k, v in value.items()) + "}"
    text = str(value)
    plain = text and text == text.strip() and not any(c in text for c in ",[]{}#&*!|>'\"%@`") \
        and ": " not in text and not text.startswith(("-", "?", ":"))
    return text if plain and yaml.safe_load(text) == text else json.dumps(text, ensure_ascii=False)


def _value_end(line: str, start: int) -> int:
    """Where a one-line YAML value that starts at `start` ends (before spaces and a comment)."""
    quote, depth, i = None, 0, start
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "#" and depth == 0 and (i == start or line[i - 1] in " \t"):
            break
        i += 1
    if quote or depth:
        raise ValueError("the value continues on the next line")
    return len(line[:i].rstrip())


def set_value(text: str, path: list[str], value) -> str:
    """params.yaml text with the value at `path` replaced on its own line, the rest unchanged."""
    from ruamel.yaml import YAML

    dotted = ".".join(path)
    node = YAML(typ="rt").load(text)
    for key in path[:-1]:
        node = node[key] if key in node else None
        if node is None or not hasattr(node, "lc"):
            raise ParamsError(f"-S {dotted}: params.yaml has no mapping {key!r} to hold it; add it there first")
    if path[-1] not in node:
        raise ParamsError(f"-S {dotted}: params.yaml does not name this key; add it there first")
    if node.fa.flow_style():
        raise ParamsError(f"-S {dotted}: params.yaml writes its parent as one {{...}} mapping; "
                          f"edit it there, or run `dvc exp run -S {dotted}=...`")
    lines = text.splitlines(keepends=True)
    key_line, key_col = node.lc.key(path[-1])
    value_line, value_col = node.lc.value(path[-1])
    line = lines[key_line].rstrip("\r\n")
    if value_line != key_line:  # empty (null) or a block value below the key
        value_col = len(line.split("#", 1)[0].rstrip()) + 1
    following = [ln for ln in lines[key_line + 1:] if ln.strip() and not ln.lstrip().startswith("#")]
    continued = following and len(following[0]) - len(following[0].lstrip()) > key_col
    try:
        end = _value_end(line, value_col) if value_col <= len(line) else len(line)
        if continued:
            raise ValueError("params.yaml spreads the value over several lines")
    except ValueError as exc:
        raise ParamsError(f"-S {dotted}: {exc}; edit params.yaml, or run `dvc exp run -S {dotted}=...`") from exc
    new = line[:value_col].ljust(value_col) + yaml_text(value)
    comment = line[end:].lstrip()
    if comment:  # kept, in its column where the new value leaves room
        comment_col = len(line) - len(comment)
        new = (new.ljust(comment_col) if len(new) < comment_col else new + " ") + comment
    lines[key_line] = new + lines[key_line][len(lines[key_line].rstrip("\r\n")):]
    return "".join(lines)


def _at(data, path: list[str]):
    for key in path:
        data = data[key]
    return data


def write_overrides(root: Path, overrides: list[str]) -> list[str]:
    """Write stage-section overrides into params.yaml (restored on any problem); one line each."""
    from dvc.utils.serialize import loads_yaml

    params_path = root / PARAMS_FILE
    original = params_path.read_text(encoding="utf-8")
    expected = load_params(params_path, overrides)
    text, notes = original, []
    for override in overrides:
        path, value = parse_override(override)
        text = set_value(text, path, value)
        stages = readers(root, path)
        read_by = (f"read by {', '.join(stages)}" if stages
                   else "read by every stage as it runs; no stage declares it, so DVC reruns nothing for it")
        notes.append(f"[pipeline] params.yaml: {'.'.join(path)} = {yaml_text(value)} ({read_by})")
    notes.append("[pipeline] they stay in params.yaml (as after `dvc exp run -S`), so dvc.lock and params.yaml "
                 "agree; `git diff params.yaml` shows them")
    params_path.write_text(text, encoding="utf-8")
    try:
        if load_params(params_path) != expected:
            raise ParamsError("params.yaml, rewritten, does not read as the overrides asked")
        stages_read, dvc_reads = load_raw_params(params_path), loads_yaml(text)
        for override in overrides:
            path, _ = parse_override(override)
            if _at(stages_read, path) != _at(dvc_reads, path):
                raise ParamsError(f"-S {override}: DVC would read {_at(dvc_reads, path)!r} where the stages read "
                                  f"{_at(stages_read, path)!r}; quote the value")
    except Exception:
        params_path.write_text(original, encoding="utf-8")
        raise
    return notes


def prepare_params(root: Path, params_file: str, overrides: list[str]) -> tuple[dict, list[str]]:
    """The pipeline's params with every override checked; stage-section overrides written
    into params.yaml. Raises ParamsError (one line) for anything that would not reach a stage."""
    params = load_params(params_file, overrides)
    if Path(params_file).resolve() != (root / PARAMS_FILE).resolve():
        raise ParamsError(f"the pipeline runs its stages through DVC, which reads {PARAMS_FILE}; --params "
                          f"{params_file} would not reach them (copy it to {PARAMS_FILE}, or pass its changes as -S)")
    own = [o for o in overrides if parse_override(o)[0][0] == PIPELINE_SECTION]
    notes = write_overrides(root, [o for o in overrides if o not in own]) if len(own) < len(overrides) else []
    return params, notes + [f"[pipeline] -S {o}: this run only" for o in own]


def overlay_overrides(path: str | Path) -> list[str]:
    """`section.key=value` overrides for every value of a partial params file (mappings
    are walked into, lists and scalars are values)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"--overlay {path}: no such file")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"--overlay {path}: expected a mapping of params sections")
    found: list[str] = []

    def walk(prefix: list[str], value) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(prefix + [str(key)], inner)
        else:
            found.append(f"{'.'.join(prefix)}={yaml_text(value)}")

    walk([], data)
    return found


# -- the flow ------------------------------------------------------------------------------------
def run_stage_step(root: Path, stage: str) -> dict:
    logger = get_run_logger()
    changes = stale_stages(root, stage)
    if not changes:
        status = "up to date (skipped)"
    else:
        logger.info("%s is stale: %s", stage, changes)
        reproduce_stage(root, stage)
        status = "reproduced"
    summaries = _stage_summaries(root, stage)
    create_markdown_artifact(key=stage.replace("_", "-"), markdown=_markdown(stage, status, summaries),
                             description=f"medconcept stage {stage}")
    print(f"[pipeline] {stage}: {status}", flush=True)
    return {"stage": stage, "status": status, "summaries": summaries}


@flow(name="pipeline")
def pipeline_flow(params: dict, root: str = str(REPO_ROOT), targets: list[str] | None = None) -> list[dict]:
    settings = params[PIPELINE_SECTION]
    results = []
    for stage in stage_order(root, targets):
        # One named sub-run per stage: Prefect's UI shows each with its summary artifact.
        step = flow(name=f"stage-{stage}", retries=settings["retries"],
                    retry_delay_seconds=settings["retry_delay_seconds"])(run_stage_step)
        results.append(step(Path(root), stage))
    return results


def main(argv=None) -> None:
    parser = build_arg_parser("pipeline")
    parser.add_argument("--overlay", action="append", default=[], metavar="FILE",
                        help="a partial params file whose values override params.yaml (repeatable)")
    parser.add_argument("--target", action="append", default=[], metavar="STAGE",
                        help="run only this stage and what it depends on (repeatable)")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        overrides = [o for f in args.overlay for o in overlay_overrides(f)] + args.overrides
        params, notes = prepare_params(root, args.params, overrides)
        stage_order(root, args.target)  # an unknown target fails before anything runs
    except (ParamsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    for note in notes:
        print(note, flush=True)
    ensure_prefect_api()
    results = pipeline_flow(params=params, root=str(root), targets=args.target or None)
    ran = [r["stage"] for r in results if r["status"] == "reproduced"]
    print(f"[pipeline] done: {len(results)} stages, {len(ran)} reproduced ({', '.join(ran) or 'none'})")


if __name__ == "__main__":
    main()
