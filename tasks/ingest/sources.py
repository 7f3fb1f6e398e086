"""Where packages come from: a local folder, any fsspec URL, or a PMC OA file list."""
from __future__ import annotations

import csv
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path

import fsspec

from tasks.common.locations import is_url

OA_LIST_COLUMNS = ("File", "Accession ID", "Last Updated", "License")


@dataclass(frozen=True)
class PackageSource:
    uri: str  # what is opened: a local path or an fsspec URL
    name: str  # what outputs record: path relative to the source root, or the URL
    oa_licence: str | None = None  # the OA list's License column, when known
    accession: str | None = None


def _local(text: str) -> Path:
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def is_oa_list(source: str) -> bool:
    return source.lower().endswith((".csv", ".txt"))


def list_folder(source: str) -> list[PackageSource]:
    if is_url(source):
        fs, root = fsspec.core.url_to_fs(source)
        found = sorted(p for p in fs.find(root) if p.endswith(".tar.gz"))
        protocol = source.split("://", 1)[0]
        out = []
        for path in found:
            uri = path if "://" in path else f"{protocol}://{path}"
            out.append(PackageSource(uri=uri, name=uri))
        return out
    root = _local(source)
    if not root.is_dir():
        raise FileNotFoundError(f"ingest source {source!r} is not a folder, URL or OA file list")
    return [
        PackageSource(uri=str(path), name=path.relative_to(root).as_posix())
        for path in sorted(root.rglob("*.tar.gz"))
    ]


def read_oa_list(source: str, base_url: str | None, updated_after: str | None,
                 updated_before: str | None) -> tuple[list[PackageSource], int]:
    """Rows of PMC's oa_file_list.csv within the Last Updated window; returns (sources, skipped)."""
    with fsspec.open(source, "rb") as handle:
        text = handle.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in OA_LIST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"OA file list {source} lacks columns {missing}")
    if is_url(source):
        base = base_url or posixpath.dirname(source)
    else:
        base = base_url or str(_local(source).parent)
    sources, skipped = [], 0
    for row in reader:
        updated = (row.get("Last Updated") or "")[:10]
        if (updated_after and updated < str(updated_after)) or (updated_before and updated >= str(updated_before)):
            skipped += 1
            continue
        rel = row["File"].strip()
        uri = f"{base.rstrip('/')}/{rel}" if is_url(base) else str(_local(base) / rel)
        sources.append(PackageSource(uri=uri, name=rel, oa_licence=row.get("License"),
                                     accession=row.get("Accession ID")))
    sources.sort(key=lambda s: s.name)
    return sources, skipped


def read_bytes(source: PackageSource, max_bytes: int) -> bytes:
    with fsspec.open(source.uri, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        from tasks.common.rejection import Rejected

        raise Rejected("package_too_large", f"the archive is larger than {max_bytes} bytes")
    return data
