"""MedPix 2.0 captions (../shared/data/captions/medpix) and the committed judgements of the
linker's mentions on them (tests/data/medpix_link_judgements.tsv; its header says how they were made)."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

JUDGEMENTS = Path(__file__).resolve().parent.parent / "data" / "medpix_link_judgements.tsv"


def caption_sample(shared_data: Path) -> list[tuple[str, str]]:
    """(image id, caption) of every distinct caption text, each at its first image in image-id order."""
    rows = [json.loads(line) for line in (shared_data / "captions" / "medpix" / "descriptions.jsonl")
            .read_text(encoding="utf-8").splitlines() if line.strip()]
    seen: set[str] = set()
    sample = []
    for row in sorted(rows, key=lambda r: r["image"]):
        caption = (row.get("Description") or {}).get("Caption")
        if caption and caption not in seen:
            seen.add(caption)
            sample.append((row["image"], caption))
    return sample


def caption_hash(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:12]


def read_judgements(path: Path = JUDGEMENTS) -> list[dict]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))


def judgement_key(image: str, start: int, end: int, cui: str) -> tuple[str, int, int, str]:
    return image, int(start), int(end), cui
