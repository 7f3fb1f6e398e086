"""Atomic stage outputs: a stage builds its output folder as a hidden sibling and swaps it
into place at the very end, so after a kill at any moment the folder holds either the
previous complete outputs or nothing (never a mix a later stage would misread)."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


def _siblings(final: Path) -> tuple[Path, Path]:
    return final.parent / f".{final.name}.partial", final.parent / f".{final.name}.previous"


def recover(final: Path) -> None:
    """Tidy what a killed run left: a half-built folder goes; a swap killed between its two
    renames leaves the previous outputs aside, which go back in place."""
    partial, previous = _siblings(final)
    shutil.rmtree(partial, ignore_errors=True)
    if previous.exists():
        if final.exists():
            shutil.rmtree(previous)
        else:
            os.rename(previous, final)


@contextmanager
def atomic_output_dir(final: str | Path, keep: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty folder to build the outputs in; on success it becomes `final`.

    keep: names inside `final` that outlive a run (resume checkpoints): carried over
    into the new folder unless the run wrote its own.
    """
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    partial, previous = _siblings(final)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for name in keep:
        if (final / name).exists() and not (partial / name).exists():
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            os.rename(final / name, partial / name)
    if final.exists():
        os.rename(final, previous)
    os.rename(partial, final)
    shutil.rmtree(previous, ignore_errors=True)
