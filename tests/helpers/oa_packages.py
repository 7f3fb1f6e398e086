"""Tiny PMC OA packages for ingest tests: a valid JATS article, a licence, a figure, and
optional extra members whose bytes are streamed (a large movie never sits in memory)."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import BinaryIO

JATS = """<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front>
<journal-meta><journal-title-group><journal-title>Test Journal</journal-title></journal-title-group></journal-meta>
<article-meta><article-id pub-id-type="pmc">{digits}</article-id>
<title-group><article-title>Article {digits}</article-title></title-group>
<pub-date pub-type="epub"><year>2024</year></pub-date>
<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/"><p>CC BY</p></license></permissions>
</article-meta></front><body><p>text</p></body></article>
"""


class Zeros:
    """`size` zero bytes as a file object, produced as they are read."""

    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def write_package(path: Path, pmcid: str, extra: dict[str, bytes | int] | None = None) -> Path:
    """PMCn/PMCn.nxml, PMCn/f1.jpg, PMCn/license.txt and `extra` members (bytes, or a size
    for a member of zeros written without holding it)."""
    digits = pmcid.removeprefix("PMC")
    members: dict[str, bytes | int] = {
        f"{pmcid}.nxml": JATS.format(digits=digits).encode(),
        "f1.jpg": b"\xff\xd8\xff" + digits.encode() * 50,
        "license.txt": b"This article is licensed under CC BY 4.0.",
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"{pmcid}/{name}")
            info.size = content if isinstance(content, int) else len(content)
            data: BinaryIO = Zeros(content) if isinstance(content, int) else io.BytesIO(content)
            tar.addfile(info, data)
    return path


OA_LIST_HEADER = "File,Article Citation,Accession ID,Last Updated,PMID,License\n"


def write_oa_list(path: Path, entries: list[str]) -> Path:
    """An oa_file_list.csv naming `entries` (quoted, so commas and odd characters survive)."""
    rows = "".join(f'"{entry}",Cite,PMC{9000 + i},2024-01-01 00:00:00,{i},CC BY\n' for i, entry in enumerate(entries))
    path.write_text(OA_LIST_HEADER + rows, encoding="utf-8")
    return path
