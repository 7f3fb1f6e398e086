"""Content hashes and deterministic keys."""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, BinaryIO, Iterable

_CHUNK = 1 << 20


def sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def sources_digest(root: Path, rels: Iterable[str]) -> Any:
    """A running sha256 over each file's relative path and bytes, in the order given (the code
    a cache key or a shared cluster depends on)."""
    digest = hashlib.sha256()
    for rel in rels:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def keyed_pseudonym(value: str, key: str, prefix: str = "", length: int = 16) -> str:
    """HMAC-SHA256 pseudonym: stable for one key, not reversible without it."""
    mac = hmac.new(key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}{mac[:length]}"


def stable_fraction(value: str, salt: str = "") -> float:
    """Map a string to [0, 1) deterministically (for splits by source)."""
    digest = hashlib.sha256(f"{salt}:{value}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
