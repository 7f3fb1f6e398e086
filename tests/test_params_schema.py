"""The params schema (tasks/schema): params.yaml is complete and typed, bad values are
one-line errors naming the key, and every `-S` example in the docs is accepted."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tasks.common.params import ParamsError, load_params, load_raw_params
from tasks.schema import Params, Section, resolve_locations


def _schema_keys(model: type[Section], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.add(key)
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, Section):
            keys |= _schema_keys(sub, key + ".")
    return keys


def _yaml_keys(node: dict, model: type[Section], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        keys.add(f"{prefix}{key}")
        field = model.model_fields.get(key) or next(
            (f for f in model.model_fields.values() if f.alias == key), None)
        sub = getattr(field, "annotation", None)
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, Section):
            keys |= _yaml_keys(value, sub, f"{prefix}{key}.")
    return keys


def test_params_yaml_names_every_schema_key(repo_root):
    """Every knob exists in params.yaml, so `dvc exp run -S` can set it."""
    raw = load_raw_params(repo_root / "params.yaml")
    missing = _schema_keys(Params) - _yaml_keys(raw, Params)
    assert not missing, f"params.yaml lacks {sorted(missing)}"


def _defaults_differing(model: type[Section], values: dict, prefix: str = "") -> list[str]:
    wrong = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = field.annotation
        if field.is_required() and isinstance(sub, type) and issubclass(sub, Section) \
                and isinstance(values.get(key), dict):
            wrong += _defaults_differing(sub, values[key], f"{prefix}{key}.")
        elif not field.is_required():
            default = field.get_default()
            default = default.model_dump(by_alias=True, mode="json") if isinstance(default, Section) else default
            if values.get(key) != default:
                wrong.append(f"{prefix}{key}: params.yaml {values.get(key)!r}, schema {default!r}")
    return wrong


def test_params_yaml_holds_the_schema_defaults(repo_root):
    """The schema's defaults are the values params.yaml shows: one source, not two."""
    values = load_params(repo_root / "params.yaml")
    wrong = _defaults_differing(Params, values)
    assert not wrong, wrong


@pytest.mark.parametrize("override, message", [
    ("ingest.max_member_byte=1", "unknown key 'ingest.max_member_byte' (did you mean 'ingest.max_member_bytes'?)"),
    ("ingest.keep_suffixes=.jpg", "ingest.keep_suffixes: expected a list, got '.jpg' (str)"),
    ("ingest.packages_per_task=abc", "ingest.packages_per_task: expected an integer, got 'abc' (str)"),
    ("ingset.source=x", "unknown params section 'ingset' (did you mean 'ingest'?)"),
    ("figures.pdf_mode=sometimes", "figures.pdf_mode: expected one of 'auto', 'fallback' or 'never'"),
    ("split_reports.linker=maybe", "split_reports.linker: expected one of 'auto' or true or false"),
    ("train_fvlm.presets.tiny.lr=fast", "train_fvlm.presets.tiny.lr: expected a number, got 'fast' (str)"),
    ("ct_convert.min_slices=0", "ct_convert.min_slices: input should be greater than or equal to 1, got 0"),
])
def test_bad_values_are_one_line_errors_naming_the_key(repo_root, override, message):
    with pytest.raises(ParamsError) as caught:
        load_params(repo_root / "params.yaml", [override])
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_the_stage_command_refuses_a_typo_in_one_line(repo_root):
    result = subprocess.run([sys.executable, "-m", "flows.ingest", "-S", "ingest.max_member_byte=1"],
                            cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: unknown key 'ingest.max_member_byte' "
                                     "(did you mean 'ingest.max_member_bytes'?)")


def test_numbers_read_as_dvc_reads_them(repo_root):
    params = load_params(repo_root / "params.yaml", ["train_conceptclip.lr=3e-4", "ingest.updated_after=2024-01-31"])
    assert params["train_conceptclip"]["lr"] == pytest.approx(3e-4)
    assert params["ingest"]["updated_after"] == "2024-01-31"


def test_a_section_key_wins_over_its_preset(repo_root):
    from tasks.schema import resolve_training_preset

    params = load_params(repo_root / "params.yaml", ["train_conceptclip.lr=3e-4",
                                                     "train_conceptclip.presets.tiny.max_steps=7"])
    resolved = resolve_training_preset(params["train_conceptclip"])
    assert (resolved["lr"], resolved["max_steps"]) == (pytest.approx(3e-4), 7)
    assert resolved["batch_size"] == params["train_conceptclip"]["presets"]["tiny"]["batch_size"]


def test_locations_resolve_to_absolute_paths_and_keep_urls(repo_root, tmp_path):
    from tasks.schema.literature import IngestParams

    ingest = IngestParams(source="data/x", base_url="https://ftp.ncbi.nlm.nih.gov/pub/pmc/", output_dir="/abs/out")
    resolved = resolve_locations(ingest, tmp_path)
    assert resolved.source == str(tmp_path / "data" / "x")
    assert resolved.base_url == "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"
    assert resolved.output_dir == "/abs/out"
    assert resolved.shard_size == ingest.shard_size


def _doc_overrides(repo_root) -> list[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in [repo_root / "README.md", *sorted(
        (repo_root / "docs").glob("*.md"))])
    found = re.findall(r"-S\s+([a-z_]+(?:\.[A-Za-z_]+)+=[^\s`]+)", text)
    return sorted({o.replace("…", "/x") for o in found if "section.key" not in o})


def test_every_documented_override_is_accepted(repo_root):
    overrides = _doc_overrides(repo_root)
    assert len(overrides) >= 8, overrides
    for override in overrides:
        load_params(repo_root / "params.yaml", [override])


@pytest.mark.slow
def test_dvc_exp_run_accepts_every_documented_override(repo_root, tmp_path):
    """DVC applies -S to params.yaml itself and refuses keys it lacks ("not in struct")."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo_root), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    args = [a for o in _doc_overrides(repo_root) for a in ("-S", o)]
    # --dry on the one stage without data deps: DVC applies (or refuses) every -S first
    result = subprocess.run([*dvc, "exp", "run", "--dry", "sample", *args], cwd=clone, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "not in struct" not in result.stderr, result.stdout[-2000:] + result.stderr
    refused = subprocess.run([*dvc, "exp", "run", "--dry", "sample", "-S", "train_conceptclip.no_such_key=1"],
                             cwd=clone, capture_output=True, text=True, timeout=300)
    assert "not in struct" in refused.stdout + refused.stderr  # the check can tell a refusal
