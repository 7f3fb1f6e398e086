"""How ct_convert converted a study, kept with its outputs (conversion.json beside studies.parquet)
and copied by train_fvlm into the model folder, so predict converts a user's CT the same way."""
from __future__ import annotations

import json
from pathlib import Path

CONVERSION_FILE = "conversion.json"
# keys that say where the work lies and how it is cut up, not how one series is converted
LAYOUT_KEYS = ("source", "output_dir", "input_kind", "ct_rate", "files_per_task", "series_per_task")
_RUN_KEYS = ("source_paths", "deid_key", "root", "run_root")  # added by the flows; the key is a secret


def conversion_settings(cfg: dict) -> dict:
    """The ct_convert section less LAYOUT_KEYS, and never the de-identification key."""
    return {k: v for k, v in sorted(cfg.items()) if k not in (*LAYOUT_KEYS, *_RUN_KEYS)}


def write_conversion_settings(cfg: dict, folder: str | Path) -> Path:
    path = Path(folder) / CONVERSION_FILE
    path.write_text(json.dumps({"stage": "ct_convert", "settings": conversion_settings(cfg)}, indent=2,
                               sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_conversion_settings(studies: str | Path) -> dict | None:
    """The settings beside a studies table, or None for one ct_convert did not write."""
    path = Path(studies).parent / CONVERSION_FILE
    return json.loads(path.read_text(encoding="utf-8"))["settings"] if path.is_file() else None
