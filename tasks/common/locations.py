"""Locations as outputs record them.

Stages receive absolute paths (made so at the flow boundary, for Dask workers elsewhere);
what they write into their tables is relative to the folder the run started in, so two
clones in different folders write the same bytes. URLs and paths outside stay as given.
"""
from __future__ import annotations

from pathlib import Path


def is_url(location: str | Path) -> bool:
    """An fsspec URL (s3://, https://, ...); file:// is a local path."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def recorded(location: str | Path, run_root: str | Path) -> str:
    text = str(location)
    if is_url(text):
        return text
    path, root = Path(text), Path(run_root)
    return path.relative_to(root).as_posix() if path.is_absolute() and path.is_relative_to(root) else path.as_posix()


# What opening a location raises when it is not there for this process (a wrong path, or one
# a Dask worker elsewhere cannot see), as opposed to errors about the file's content. Stages
# reject such items as `unreadable_source`; when every item fails so, the runner stops.
OPEN_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
UNREADABLE_SOURCE = "unreadable_source"
