"""WebDataset tar shards of figures (`<key>.jpg` + `<key>.json`), byte-for-byte reproducible."""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from tasks.common.archives import tar_info

SHARD_PATTERN = "figures-{:06d}.tar"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def safe_key_part(text: str) -> str:
    """A key fragment WebDataset accepts: no dots (they start the extension), no slashes."""
    return _UNSAFE.sub("-", text).strip("-") or "x"


def figure_key(pmcid: str, figure_id: str, taken: set[str]) -> str:
    base = f"{safe_key_part(pmcid)}_{safe_key_part(figure_id)}"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
    taken.add(key)
    return key


def json_bytes(record: dict) -> bytes:
    return (json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def write_shard(path: str | Path, samples: Iterable[tuple[str, bytes, dict | bytes]]) -> dict[str, list[int]]:
    """samples: (key, jpeg bytes, metadata, or its json_bytes already). Members sorted by key,
    .jpg before .json. Returns key -> [offset, size] of its JPEG in the tar (read_jpeg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tar.tmp")
    keys, index = [], {}
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, jpeg, meta in sorted(samples, key=lambda s: s[0]):
            if keys and keys[-1] == key:
                raise ValueError(f"duplicate key {key!r} in shard {path.name}")
            meta_bytes = meta if isinstance(meta, bytes) else json_bytes(meta)
            index[key] = [tar.offset + tarfile.BLOCKSIZE, len(jpeg)]  # USTAR: one header block
            tar.addfile(tar_info(f"{key}.jpg", len(jpeg)), io.BytesIO(jpeg))
            tar.addfile(tar_info(f"{key}.json", len(meta_bytes)), io.BytesIO(meta_bytes))
            keys.append(key)
    tmp.replace(path)
    return index


def read_jpeg(path: str | Path, offset: int, size: int) -> bytes:
    """One sample's JPEG from a shard, by the place write_shard returned (no tar scan)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"{path}: {size} bytes expected at offset {offset}, {len(data)} found")
    return data


def read_articles(path: str | Path, pmcids: Iterable[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(pmcid, {path inside the package: bytes}) for the asked articles of an ingest shard, in pmcid order.

    The tar index is read once and only the asked members are read, so a task can take
    a slice of a large shard.
    """
    wanted = set(pmcids)
    by_article: dict[str, list[tarfile.TarInfo]] = {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar.getmembers():
            if not info.isfile() or "/" not in info.name:
                continue
            pmcid = info.name.split("/", 1)[0]
            if pmcid in wanted:
                by_article.setdefault(pmcid, []).append(info)
        for pmcid in sorted(by_article):
            members = {}
            for info in by_article[pmcid]:
                handle = tar.extractfile(info)
                if handle is not None:
                    members[info.name.split("/", 1)[1]] = handle.read()
            yield pmcid, members
