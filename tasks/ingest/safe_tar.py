"""Reading untrusted .tar.gz packages as a stream, without trusting member names or sizes.

Members come off the compressed stream one at a time (tarfile's stream mode, no seeking);
each header is checked against the limits before any of its bytes are read, and only the
members the caller wants are copied, in chunks, into a MemberStore: in memory up to
SPOOL_BYTES, then a temporary file. Memory therefore does not grow with the package.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping

from tasks.common.rejection import Rejected

SPOOL_BYTES = 16 << 20  # kept members held in memory per package before spilling to disk
COPY_CHUNK = 1 << 20
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)
# tarfile's own "r:*" choice, by magic bytes; its readers raise what the seeking reader did
_DECOMPRESSORS = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
                  (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


@dataclass(frozen=True)
class Limits:
    max_member_bytes: int
    max_package_bytes: int
    max_members: int


@dataclass(frozen=True)
class Member:
    name: str  # normalised path inside the archive
    size: int


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")


def _check_name(name: str) -> str:
    if _is_absolute(name):
        raise Rejected("member_path_absolute", f"member {name!r} has an absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise Rejected("member_path_traversal", f"member {name!r} climbs out with '..'")
    return posixpath.normpath(name.replace("\\", "/")).lstrip("./") or "."


def _check_link(info: tarfile.TarInfo, name: str) -> None:
    target = info.linkname
    if info.issym():
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    else:  # hard links name a path from the archive root
        resolved = posixpath.normpath(target)
    top = name.split("/", 1)[0]
    if _is_absolute(target) or resolved.startswith("..") or resolved.split("/", 1)[0] != top:
        raise Rejected("member_link_escape", f"link {name!r} points outside the package: {target!r}")


class _Spool:
    """One temporary file shared by a store and its views, closed when the last one goes."""

    def __init__(self, max_size: int):
        self.file = tempfile.SpooledTemporaryFile(max_size=max_size)
        self.end = 0

    def __del__(self):
        self.file.close()


class MemberStore(Mapping[str, bytes]):
    """Member bytes by name, kept in a spool; reading one member loads only that member."""

    def __init__(self, spool: _Spool | None = None, where: dict[str, tuple[int, int]] | None = None):
        self._spool = spool or _Spool(SPOOL_BYTES)
        self._where = where if where is not None else {}

    def add(self, name: str, reader: BinaryIO, size: int) -> None:
        spool = self._spool
        spool.file.seek(spool.end)
        left = size
        while left:
            chunk = reader.read(min(COPY_CHUNK, left))
            if not chunk:
                raise Rejected("corrupt_archive", f"member {name!r} is shorter than its header says")
            spool.file.write(chunk)
            left -= len(chunk)
        self._where[name] = (spool.end, size)
        spool.end += size

    def __getitem__(self, name: str) -> bytes:
        offset, size = self._where[name]
        self._spool.file.seek(offset)
        return self._spool.file.read(size)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def view(self, names: Mapping[str, str]) -> "MemberStore":
        """The members `names` maps to (new name -> stored name), sharing this spool."""
        return MemberStore(self._spool, {new: self._where[old] for new, old in names.items()})


class _Prefixed:
    """A reader that first returns bytes already taken from `rest` (to sniff the format)."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data if len(data) == size else data + self._rest.read(size - len(data))

    def __enter__(self) -> "_Prefixed":
        return self

    def __exit__(self, *exc) -> None:
        pass  # the caller owns `rest`


def _decompressed(fileobj: BinaryIO) -> BinaryIO:
    head = fileobj.read(6)
    stream = _Prefixed(head, fileobj)
    for magic, opener in _DECOMPRESSORS:
        if head.startswith(magic):
            return opener(stream)
    return stream


def scan_members(fileobj: BinaryIO, limits: Limits,
                 wanted: Callable[[str, int], bool]) -> tuple[list[Member], MemberStore]:
    """Every regular file (name, size) in archive order, and a store of those `wanted(name, size)`
    accepts; links inside the package are checked and dropped, nothing else is read."""
    files: list[Member] = []
    seen: set[str] = set()
    store = MemberStore()
    total = 0
    try:
        with _decompressed(fileobj) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, info in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise Rejected("too_many_members", f"more than {limits.max_members} members")
                name = _check_name(info.name)
                if info.issym() or info.islnk():
                    _check_link(info, name)
                    continue
                if info.isdir():
                    continue
                if not info.isfile():
                    raise Rejected("member_special_file", f"member {name!r} is a device or FIFO")
                if info.size > limits.max_member_bytes:
                    raise Rejected("member_too_large", f"member {name!r} is {info.size} bytes")
                total += info.size
                if total > limits.max_package_bytes:
                    raise Rejected("package_too_large", f"members exceed {limits.max_package_bytes} bytes")
                if wanted(name, info.size):
                    store.add(name, tar.extractfile(info), info.size)
                if name in seen:
                    raise Rejected("duplicate_member", f"member {name!r} appears twice")
                seen.add(name)
                files.append(Member(name, info.size))
    except Rejected:
        raise
    except READ_ERRORS as exc:
        raise Rejected("corrupt_archive", f"not a readable tar.gz ({type(exc).__name__}: {exc})") from exc
    if not files:
        raise Rejected("empty_package", "the archive holds no files")
    return files, store


def read_members(data: bytes, limits: Limits) -> dict[str, bytes]:
    """All regular files of an archive held in memory, by normalised path."""
    _, store = scan_members(io.BytesIO(data), limits, lambda name, size: True)
    return dict(store.items())


def top_folder(names: Iterable[str]) -> str | None:
    """The one folder a PMC package holds every file in, if it does."""
    names = list(names)
    tops = {name.split("/", 1)[0] for name in names}
    return tops.pop() if len(tops) == 1 and all("/" in name for name in names) else None


def strip_top_folder(members: dict[str, bytes]) -> dict[str, bytes]:
    """PMC packages hold one folder; paths are kept relative to it."""
    top = top_folder(members)
    return {name[len(top) + 1:]: data for name, data in members.items()} if top else dict(members)
