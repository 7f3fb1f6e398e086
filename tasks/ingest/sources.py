"""Where packages come from: a local folder, any fsspec URL, or a PMC OA file list.

An OA file list is untrusted text: each `File` entry must name a file under
`ingest.base_url` (or the list's own folder). Entries that climb out with `..`, absolute
paths, URLs to another scheme or host, empty or garbled entries (control characters,
fsspec's '::' chaining) and repeats become sources that carry their rejection and no
location, so nothing can open them. The check is lexical (symlinks inside the base
folder are the operator's, not the list's).
"""
from __future__ import annotations

import csv
import hashlib
import io
import posixpath
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import unquote, urlsplit

import fsspec

from tasks.common.locations import is_url
from tasks.common.rejection import Rejected

OA_LIST_COLUMNS = ("File", "Accession ID", "Last Updated", "License")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackageSource:
    uri: str | None  # what is opened: a local path or an fsspec URL; None when rejected
    name: str  # what outputs record: path relative to the source root, or the URL
    oa_licence: str | None = None  # the OA list's License column, when known
    accession: str | None = None
    rejection: tuple[str, str] | None = None  # (reason, detail) found while listing: never opened
    updated: str | None = None  # the OA list's Last Updated: orders versions of one PMCID (ingest)


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


def _origin(location: str) -> tuple[str, str, str]:
    """(scheme, host, path) of a base or an entry URL; a local path is ('file', '', path)."""
    if is_url(location):
        parts = urlsplit(location)
        return parts.scheme.lower(), parts.netloc.lower(), parts.path or "/"
    return "file", "", str(_local(location))


def _relative_under(entry: str) -> str:
    """The entry as a normalised path below the base, or Rejected when it climbs out.
    Checked as a server would read it too: percent-escapes decoded, backslashes as '/'."""
    depth = 0
    for part in unquote(entry).replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise Rejected("file_outside_base", f"File {entry!r} climbs out of the base folder with '..'")
    if depth == 0:
        raise Rejected("file_outside_base", f"File {entry!r} names the base folder itself, not a file in it")
    return posixpath.normpath(entry)


def confine(base: str, entry: str) -> tuple[str, str]:
    """(uri, name) of one OA list `File` entry resolved under `base`, or Rejected."""
    if not entry:
        raise Rejected("empty_file_entry", "the File column is empty")
    if _CONTROL.search(entry):
        raise Rejected("invalid_file_entry", f"File {entry!r} holds control characters")
    if "::" in entry:  # fsspec would read it as a chain of filesystems, not one path
        raise Rejected("invalid_file_entry", f"File {entry!r} holds '::', fsspec's URL chaining")
    if _SCHEME.match(entry):
        scheme, host, path = _origin(entry)
        base_scheme, base_host, base_path = _origin(base)
        if (scheme, host) != (base_scheme, base_host):
            raise Rejected("foreign_url", f"File {entry!r} is not on {base_scheme}://{base_host} (the base)")
        inside = posixpath.relpath(posixpath.normpath(unquote(path)), posixpath.normpath(base_path))
        if inside.startswith("..") or inside == ".":
            raise Rejected("file_outside_base", f"File {entry!r} lies outside the base {base!r}")
        entry = inside
    elif entry.startswith(("/", "\\")) or _DRIVE.match(entry):
        raise Rejected("absolute_file_path", f"File {entry!r} is an absolute path, not one below the base")
    rel = _relative_under(entry)
    uri = f"{base.rstrip('/')}/{rel}" if is_url(base) else str(_local(base) / rel)
    return uri, rel


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
    list_name = posixpath.basename(source.rstrip("/"))
    sources, skipped, taken = [], 0, set()
    for row in reader:
        updated = (row.get("Last Updated") or "")[:10]
        if (updated_after and updated < str(updated_after)) or (updated_before and updated >= str(updated_before)):
            skipped += 1
            continue
        entry = (row["File"] or "").strip()
        where = f"{list_name} line {reader.line_num}"
        try:
            uri, name = confine(base, entry)
            if name in taken:
                raise Rejected("duplicate_file_entry", f"File {entry!r} is listed again ({where})")
        except Rejected as error:
            # The entry itself names the rejected row, unless it is empty or already taken.
            name = entry if entry and entry not in taken else where
            uri, rejection = None, (error.reason, error.detail)
        else:
            rejection = None
        taken.add(name)
        sources.append(PackageSource(uri=uri, name=name, oa_licence=row.get("License"),
                                     accession=row.get("Accession ID"), rejection=rejection,
                                     updated=(row.get("Last Updated") or "").strip() or None))
    sources.sort(key=lambda s: s.name)
    return sources, skipped


class CappedReader:
    """Reads one package once, front to back: hashes and counts every byte, and refuses
    more than `max_bytes` (checked as bytes arrive, so nothing larger is ever held)."""

    def __init__(self, handle: BinaryIO, max_bytes: int):
        self._handle, self.max_bytes, self.count = handle, max_bytes, 0
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.max_bytes + 1 - self.count
        try:
            data = self._handle.read(size)
        except OSError as exc:  # the source failed, not the archive: see SourceReadError
            raise SourceReadError(exc) from exc
        self.count += len(data)
        if self.count > self.max_bytes:
            raise Rejected("package_too_large", f"the archive is larger than {self.max_bytes} bytes")
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        """sha256 of the whole file: reads what the archive reader left (padding, trailer)."""
        while self.read(_CHUNK):
            pass
        return self._hash.hexdigest()


class SourceReadError(Exception):
    """An OSError while reading the source, kept apart from the archive reader's errors
    (which mean a corrupt archive); `original` is re-raised as the source's failure."""

    def __init__(self, original: OSError):
        super().__init__(str(original))
        self.original = original


@contextmanager
def open_package(source: PackageSource, max_bytes: int) -> Iterator[CappedReader]:
    """The package as a CappedReader; a size known up front is checked before any read."""
    if source.rejection is not None or source.uri is None:
        raise Rejected(*(source.rejection or ("unreadable_source", "the source has no location")))
    with fsspec.open(source.uri, "rb") as handle:
        size = getattr(handle, "size", None)
        if isinstance(size, int) and size > max_bytes:
            raise Rejected("package_too_large", f"the archive is larger than {max_bytes} bytes")
        try:
            yield CappedReader(handle, max_bytes)
        except SourceReadError as error:
            raise error.original from None
