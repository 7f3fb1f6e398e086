"""Article shards: uncompressed tar files with members `PMCID/<path>`, byte-for-byte reproducible.

Ingest writes each package once into a staging tar (its entry in the stage's cache,
tasks/incremental/store.py) as it validates it, remembering where each member's bytes sit;
the final shards (ordered by PMCID, one version per PMCID) are then assembled by plain
copies from those offsets, without decompressing or parsing anything a second time. A
shard is named after its first PMCID (`articles-PMC1234567.tar`): its boundaries are set by
content (tasks/incremental/layout.py), so a name stays with the same articles.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable, Mapping

from tasks.common.archives import tar_info

SHARD_PATTERN = "articles-{}.tar"


def shard_name(first_pmcid: str) -> str:
    return SHARD_PATTERN.format(first_pmcid)


class StagingWriter:
    """Appends articles to a staging tar; returns (member name, data offset, size) per member."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self.path, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, pmcid: str, members: Mapping[str, bytes]) -> tuple[list[tuple[str, int, int]], str]:
        """(member name, data offset, size) per member, and the sha256 of the members (names,
        sizes and bytes: what figures reads of the article)."""
        placed, digest = [], hashlib.sha256()
        for rel in sorted(members):
            data = members[rel]  # one member in memory at a time (a MemberStore loads on access)
            digest.update(f"{rel}\0{len(data)}\0".encode("utf-8"))
            digest.update(data)
            info = tar_info(f"{pmcid}/{rel}", len(data))
            self._tar.addfile(info, io.BytesIO(data))
            # Data follows the header block(s); the file offset is now past the padded data.
            end = self._tar.offset
            padded = (len(data) + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
            placed.append((info.name, end - padded, len(data)))
        return placed, digest.hexdigest()

    def close(self) -> None:
        self._tar.close()


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise IOError(f"staging file ended early at offset {offset}")
    return data


def assemble_shard(path: str | Path, articles: Iterable[tuple[str, list[tuple[str, int, int]]]]) -> None:
    """articles: (staging tar path, [(member name, offset, size)]) in final order. One staging
    file is open at a time (there is one per package)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for staging, members in articles:
            with open(staging, "rb") as handle:
                for name, offset, size in members:
                    tar.addfile(tar_info(name, size), io.BytesIO(_read_at(handle, offset, size)))
    tmp.replace(path)
