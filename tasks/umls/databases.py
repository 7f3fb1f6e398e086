"""QuickUMLS's two databases, the bytes its own writers write for the same terms.

Stores what QuickUMLS's `install.parse_and_encode_ngrams` stores (simstring: every term;
cui-semtypes: term -> {(cui, preferred)}, cui -> {semantic types}): the simstring database
with tasks.umls.simstring_writer (the bytes of QuickUMLS's `toolbox.SimstringDBWriter`,
whose C++ writer holds every n-gram posting list in memory until it closes: gigabytes for
a full release), the other with QuickUMLS's own `toolbox.CuiSemTypesDB`; every key once and
in sorted order, and set values pickled in sorted order: `parse_and_encode_ngrams` pickles Python
sets, whose byte order follows string hashing (PYTHONHASHSEED), so two builds of one
vocabulary gave different bytes; and unqlite stamps each file's header with its creation
time, which is set to a fixed one here. (The leveldb backend keeps logs and numbered
files: not byte-reproducible.) unqlite holds every page a transaction dirtied in memory
until it commits (a full release's term store: gigabytes), so the stores commit every
PUTS_PER_COMMIT puts; where the pages sit in the file depends on where the commits fall
(the same count every build, so the same bytes), not on what a lookup returns.

The extracted terms go to sorted runs on disk (tasks.umls.spill), not to a dict, and the
simstring writer spills its n-grams to disk and writes one n-gram count at a time, so
memory does not grow with the vocabulary (one chunk of runs, the largest n-gram count's
postings, unqlite's pages).
"""
from __future__ import annotations

import ctypes
import marshal
import pickle
from operator import itemgetter
from pathlib import Path
from typing import Iterable

from tasks.linking import quickumls_adapter as qa
from tasks.umls.simstring_writer import SimstringWriter
from tasks.umls.spill import BLOCK, SortedSpill, read_blocks as _read_blocks

UNQLITE_SIGNATURE = b"unqlite" + bytes.fromhex("db7c2712")  # signature + magic number
UNQLITE_FIXED_TIME = (1 << 5 | 1) << 16  # DOS date 1980-01-01 00:00, as reproducible zips use
PUTS_PER_COMMIT = 10_000  # unqlite's dirty pages stay ~0.1 GB; fewer commits rewrite fewer pages


class _SortedSet:
    """Pickles as `set(sorted items)`: the same bytes in every process, loads as a plain set."""

    def __init__(self, items):
        self.items = sorted(items)

    def __reduce__(self):
        return set, (self.items,)


def set_bytes(items) -> bytes:
    return pickle.dumps(_SortedSet(items))


def fix_unqlite_creation_time(path: Path) -> None:
    """Overwrite the header's creation time (DOS format, 4 bytes after the magic number).

    unqlite reads it back for information only; nothing checks it."""
    with open(path, "r+b") as handle:
        header = handle.read(len(UNQLITE_SIGNATURE))
        if header != UNQLITE_SIGNATURE:
            raise ValueError(f"umls_index: {path} is not an unqlite database")
        handle.write(UNQLITE_FIXED_TIME.to_bytes(4, "big"))


class DatabaseWriter:
    """add() what QuickUMLS's `install.extract_from_mrconso` yields, then write()."""

    def __init__(self, spill_dir: str | Path):
        self.folder = Path(spill_dir)
        self.terms = SortedSpill(spill_dir, key=itemgetter(0))       # (term, cui, preferred)
        self.types = SortedSpill(spill_dir, key=itemgetter(0))       # (cui, semantic types)
        self._last = (None, None)  # (cui as given, as stored): a CUI's rows come together

    def add(self, term: str, cui: str, semtypes, preferred: int) -> None:
        # what QuickUMLS's CuiSemTypesDB.insert stores a term and a CUI as
        if cui != self._last[0]:
            stored = qa.db_string(cui)
            if stored != self._last[1]:  # a CUI's first row's types count
                self.types.add((stored, tuple(semtypes)))
            self._last = (cui, stored)
        self.terms.add((qa.db_string(term), self._last[1], preferred))

    def write(self, qu_dir: str | Path, database_backend: str) -> int:
        """Write `umls-simstring.db/` and `cui-semtypes.db/` under qu_dir; returns the term count.

        One database at a time, each closed (and its memory handed back) before the next:
        the simstring writer's largest n-gram count and unqlite's dirty pages would add up."""
        qu_dir = Path(qu_dir)
        cuisty_dir = qu_dir / "cui-semtypes.db"
        values = self.folder / "term_values"  # (term, pickled CUIs) in term order, for the second store
        try:
            simstring = SimstringWriter(qa.simstring_path(qu_dir / "umls-simstring.db"), n=qa.SIMSTRING_NGRAM,
                                        be=qa.SIMSTRING_BEGIN_END, spill_dir=self.folder)
            n_terms = 0
            with open(values, "wb") as handle:
                block = []
                for term, rows in self.terms.groups():
                    simstring.insert(term)
                    block.append((term, set_bytes({(cui, pref) for _, cui, pref in rows})))
                    if len(block) == BLOCK:
                        marshal.dump(block, handle)
                        block = []
                    n_terms += 1
                marshal.dump(block, handle)
            self.terms.remove()  # its runs and last chunk: the writers need the memory
            simstring.close()
            del simstring
            release_freed_memory()
            cuisty = qa.cui_semtypes_db(cuisty_dir, database_backend)
            for count, (term, value) in enumerate(_read_blocks(values), 1):
                qa.put_term(cuisty, term, value)
                if count % PUTS_PER_COMMIT == 0:
                    qa.commit_stores(cuisty, "cui")
            qa.close_stores(cuisty, "cui")
            release_freed_memory()
            for count, (cui, rows) in enumerate(self.types.groups(), 1):
                qa.put_semtypes(cuisty, cui, set_bytes(set(rows[0][1])))
                if count % PUTS_PER_COMMIT == 0:
                    qa.commit_stores(cuisty, "semtypes")
            qa.close_stores(cuisty, "semtypes")
            del cuisty
            release_freed_memory()
        finally:
            values.unlink(missing_ok=True)
            self.terms.remove()
            self.types.remove()
        if database_backend == "unqlite":
            for path in sorted(cuisty_dir.glob("*.unqlite")):
                fix_unqlite_creation_time(path)
        return n_terms


def release_freed_memory() -> None:
    """Hand freed memory back to the system: Arrow's pool and glibc keep it otherwise, and the
    next writer needs it."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def write_databases(extracted: Iterable[tuple], qu_dir: str | Path, database_backend: str,
                    spill_dir: str | Path | None = None) -> int:
    """The databases of `install.extract_from_mrconso`'s (term, cui, semtypes, preferred) rows."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".umls_spill_", dir=spill_dir or qu_dir) as tmp:
        writer = DatabaseWriter(tmp)
        for term, cui, semtypes, preferred in extracted:
            writer.add(term, cui, semtypes, preferred)
        return writer.write(qu_dir, database_backend)
