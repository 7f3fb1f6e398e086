"""Article shards: uncompressed tar files with members `PMCID/<path>`, byte-for-byte reproducible.

Ingest writes each package once into a staging tar as it validates it, remembering
where each member's bytes sit; the final shards (ordered by PMCID, duplicates left
out) are then assembled by plain copies from those offsets, without decompressing
or parsing anything a second time.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable

from tasks.common.archives import tar_info

SHARD_PATTERN = "articles-{:06d}.tar"


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


class StagingWriter:
    """Appends articles to a staging tar; returns (member name, data offset, size) per member."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self.path, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, pmcid: str, members: dict[str, bytes]) -> list[tuple[str, int, int]]:
        placed = []
        for rel in sorted(members):
            data = members[rel]
            info = tar_info(f"{pmcid}/{rel}", len(data))
            self._tar.addfile(info, io.BytesIO(data))
            # Data follows the header block(s); the file offset is now past the padded data.
            end = self._tar.offset
            padded = (len(data) + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
            placed.append((info.name, end - padded, len(data)))
        return placed

    def close(self) -> None:
        self._tar.close()


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise IOError(f"staging file ended early at offset {offset}")
    return data


def assemble_shard(path: str | Path, articles: Iterable[tuple[str, list[tuple[str, int, int]]]]) -> None:
    """articles: (staging tar path, [(member name, offset, size)]) in final order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tar.tmp")
    handles: dict[str, BinaryIO] = {}
    try:
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for staging, members in articles:
                handle = handles.get(staging) or handles.setdefault(staging, open(staging, "rb"))
                for name, offset, size in members:
                    tar.addfile(tar_info(name, size), io.BytesIO(_read_at(handle, offset, size)))
    finally:
        for handle in handles.values():
            handle.close()
    tmp.replace(path)
