"""Deterministic PMC-style package archives (.tar.gz): fixed mtimes, owners and order."""
from __future__ import annotations

import gzip
import io
import tarfile

FIXED_MTIME = 1_600_000_000


def tar_gz(members: list[tuple[str, bytes]], links: list[tuple[str, str, bytes]] = ()) -> bytes:
    """members: (path, data); links: (path, target, type) with type tarfile.SYMTYPE/LNKTYPE."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, data in members:
                info = tarfile.TarInfo(path)
                info.size = len(data)
                info.mtime = FIXED_MTIME
                info.mode = 0o644
                info.uname = info.gname = "pmc"
                tar.addfile(info, io.BytesIO(data))
            for path, target, kind in links:
                info = tarfile.TarInfo(path)
                info.type = kind
                info.linkname = target
                info.mtime = FIXED_MTIME
                tar.addfile(info)
    return raw.getvalue()
