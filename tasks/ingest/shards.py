"""Article shards: uncompressed tar files with members `PMCID/<path>`, byte-for-byte reproducible."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

SHARD_PATTERN = "articles-{:06d}.tar"


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def write_article_shard(path: str | Path, articles: list[tuple[str, dict[str, bytes]]]) -> dict[str, list[str]]:
    """articles: (pmcid, members) sorted by pmcid; returns member names per pmcid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tar.tmp")
    names: dict[str, list[str]] = {}
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for pmcid, members in articles:
            names[pmcid] = []
            for rel in sorted(members):
                data = members[rel]
                info = tarfile.TarInfo(f"{pmcid}/{rel}")
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(data))
                names[pmcid].append(info.name)
    tmp.replace(path)
    return names


def iter_article_shard(path: str | Path):
    """Yield (pmcid, {relative path: bytes}) one article at a time (members are contiguous)."""
    current, members = None, {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            pmcid, rel = info.name.split("/", 1)
            if pmcid != current and current is not None:
                yield current, members
                members = {}
            current = pmcid
            members[rel] = tar.extractfile(info).read()
    if current is not None:
        yield current, members
