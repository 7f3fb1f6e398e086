"""Reading untrusted .tar.gz packages into memory without trusting their member names or sizes."""
from __future__ import annotations

import io
import posixpath
import tarfile
import zlib
from dataclasses import dataclass

from tasks.common.rejection import Rejected


@dataclass(frozen=True)
class Limits:
    max_member_bytes: int
    max_package_bytes: int
    max_members: int


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


def read_members(data: bytes, limits: Limits) -> dict[str, bytes]:
    """Regular files of the archive by normalised path; links inside the package are dropped."""
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
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
                handle = tar.extractfile(info)
                content = handle.read(limits.max_member_bytes + 1) if handle else b""
                if len(content) != info.size:
                    raise Rejected("corrupt_archive", f"member {name!r} is shorter than its header says")
                if name in members:
                    raise Rejected("duplicate_member", f"member {name!r} appears twice")
                members[name] = content
    except Rejected:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise Rejected("corrupt_archive", f"not a readable tar.gz ({type(exc).__name__}: {exc})") from exc
    if not members:
        raise Rejected("empty_package", "the archive holds no files")
    return members


def strip_top_folder(members: dict[str, bytes]) -> dict[str, bytes]:
    """PMC packages hold one folder; paths are kept relative to it."""
    tops = {name.split("/", 1)[0] for name in members}
    if len(tops) == 1 and all("/" in name for name in members):
        return {name.split("/", 1)[1]: data for name, data in members.items()}
    return dict(members)
