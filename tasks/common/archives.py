"""Tar members with fixed metadata, so the same content always gives the same archive bytes."""
from __future__ import annotations

import tarfile


def tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
