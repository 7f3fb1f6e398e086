"""A SimString database writer in numpy: the bytes of simstring's C++ writer, in bounded memory.

QuickUMLS writes its term database with simstring's C++ writer (`toolbox.SimstringDBWriter`:
trigrams, no begin/end marks, unicode strings as UTF-32 `wchar_t`). That writer keeps the
posting list of every n-gram of every string in one `std::map` until it closes: gigabytes
for a full UMLS release. This one writes the same files:

- the master file `<name>`: a 36-byte header (magic "SSDB", byte-order check, stream
  version 2, file size, char size 4, n, begin/end flag, string count, the largest n-gram
  count), then each string in UTF-32LE with a 0 terminator; a string's id is its byte offset;
- one CDB++ file `<name>.<N>.cdb` per n-gram count N that occurs: for every distinct n-gram
  of the strings with N n-grams, in `std::wstring` order, the ids of its strings in insertion
  order. A string's n-grams are its windows of n code points (padded with 0x01 when shorter
  than n; with n-1 marks on both ends when `be`), an n-gram seen k times in one string
  giving keys "abc", "abc2", ..., "abck".

Memory: strings are taken a chunk at a time (CHUNK_TERMS); each chunk's strings go to the
master file and its n-grams, packed as one int64 each, to one spill file per N on disk
(with one id per string). close() then loads, sorts and writes one N at a time, so memory
holds one chunk or the largest N's postings, never the vocabulary's.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

SSDB_MAGIC = b"SSDB"
BYTEORDER_CHECK = 0x62445371
STREAM_VERSION = 2
CHAR_SIZE = 4                      # sizeof(wchar_t) on Linux: UTF-32 code units
HEADER = struct.Struct("<4s8I")    # magic, byte order, version, size, char size, n, be, strings, max N
MARK = 0x01                        # ngram.h's padding mark
BITS = 21                          # a code point (<= 0x10FFFF) in 21 bits: n <= 3 fit one int64
CP_MASK = (1 << BITS) - 1
MAX_N = 3
CHUNK_TERMS = 100_000              # strings per vectorised pass (~50 MB of n-grams for UMLS terms)

# CDB++ (cdbpp.h)
CDB_MAGIC = b"CDB+"
CDB_VERSION = 1
NUM_TABLES = 256
CDB_DATA_BEGIN = 16 + 8 * NUM_TABLES   # header + (offset, size) per table
MURMUR_M = np.uint32(0x5BD1E995)
MURMUR_SEED = 0x87654321
DIGITS = 10                        # a uint32 count has at most 10 decimal digits


def _u32(values) -> np.ndarray:
    """As uint32, wrapping as the C++ casts do (a master file over 4 GiB wraps its offsets)."""
    return (np.asarray(values, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _starts(counts: np.ndarray) -> np.ndarray:
    """Where each of consecutive runs of these lengths starts."""
    ends = np.cumsum(counts, dtype=np.int64)
    return ends - counts


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of range(start, start + count) for each pair."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    return np.repeat(np.asarray(starts, dtype=np.int64) - _starts(counts), counts) + np.arange(total)


def murmurhash2_words(words: list[np.ndarray], sizes: np.ndarray) -> np.ndarray:
    """cdbpp's murmurhash2 of keys of whole uint32 words (UTF-32 keys: no tail bytes).

    words[i]: each key's i-th word, -1 where a key is shorter; sizes: key lengths in bytes."""
    h = (np.uint32(MURMUR_SEED) ^ sizes.astype(np.uint32)).astype(np.uint32)
    for column in words:
        live = column >= 0
        k = column[live].astype(np.uint32) * MURMUR_M
        k ^= k >> np.uint32(24)
        k *= MURMUR_M
        hl = h[live] * MURMUR_M
        h[live] = hl ^ k
    h ^= h >> np.uint32(13)
    h *= MURMUR_M
    h ^= h >> np.uint32(15)
    return h


def _digit_order(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sort key, digit count, digits left to right; -1 past the end) of decimal counts >= 2:
    the sort key orders them as their strings compare ("10" < "2"), as std::wstring does."""
    counts = np.asarray(counts, dtype=np.int64)
    ndigits = np.ones(len(counts), dtype=np.int64)
    for power in range(1, DIGITS):
        ndigits += counts >= 10 ** power
    digits = np.full((DIGITS, len(counts)), -1, dtype=np.int64)
    key = np.zeros(len(counts), dtype=np.int64)
    for pos in range(DIGITS):
        present = ndigits > pos
        digit = (counts // 10 ** np.maximum(ndigits - 1 - pos, 0)) % 10
        digits[pos] = np.where(present, digit, -1)
        key = key * 11 + np.where(present, digit + 1, 0)
    return key, ndigits, digits


def _place(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cdbpp's 256 open-addressing tables: (table sizes, slot hashes, slot offsets).

    Table t gets the keys whose hash % 256 is t, twice as many slots as keys, each key at
    the first free slot from (hash >> 8) % size on, in put order. Tables are independent,
    so the i-th key of every table is placed in one vectorised step."""
    table = (hashes & np.uint32(NUM_TABLES - 1)).astype(np.uint16)
    counts = np.bincount(table, minlength=NUM_TABLES).astype(np.int64)
    by_table = np.argsort(table, kind="stable")       # put order kept within a table
    first = _starts(counts)
    sizes = 2 * counts
    slot_base = 2 * first
    slot_hash = np.zeros(int(sizes.sum()), dtype=np.uint32)
    slot_off = np.zeros(len(slot_hash), dtype=np.uint32)
    filled = np.zeros(len(slot_hash), dtype=bool)
    home = np.zeros(len(hashes), dtype=np.int64)
    if len(hashes):
        home[by_table] = (hashes[by_table] >> np.uint32(8)).astype(np.int64) % np.repeat(sizes, counts)
    tables_by_count = np.argsort(-counts, kind="stable")
    for rank in range(int(counts.max(initial=0))):
        tabs = tables_by_count[:int(np.searchsorted(-counts[tables_by_count], -rank, side="left"))]
        keys = by_table[first[tabs] + rank]
        pos, size, base = home[keys], sizes[tabs], slot_base[tabs]
        busy = filled[base + pos]
        while busy.any():
            pos[busy] = (pos[busy] + 1) % size[busy]
            busy = filled[base + pos]
        slot = base + pos
        filled[slot] = True
        slot_hash[slot] = hashes[keys]
        slot_off[slot] = offsets[keys]
    return sizes, slot_hash, slot_off


def write_cdb(path: Path, keys: np.ndarray, occurrence: np.ndarray, first: np.ndarray, ids: np.ndarray,
              n: int) -> None:
    """A CDB++ file of n-gram keys (packed code points, with their occurrence: "abc2" is 2) in
    put order; the values of key j are ids[first[j]:first[j + 1]]."""
    count = np.diff(np.append(first, len(ids)))
    suffixed = np.flatnonzero(occurrence >= 2)
    _, ndigits, digits = _digit_order(occurrence[suffixed])
    klen = np.full(len(keys), n, dtype=np.int64)
    klen[suffixed] += ndigits
    width = 2 + klen + count                            # ksize, key, vsize, values: all uint32 words
    start = _starts(width)
    data = np.empty(int(width.sum()), dtype=np.uint32)
    data[start] = _u32(4 * klen)
    columns = []                                        # each key's i-th word, -1 past its end
    for j in range(n):
        unit = (keys >> (BITS * (n - 1 - j))) & CP_MASK
        data[start + 1 + j] = unit
        columns.append(unit)
    for pos in range(int(ndigits.max(initial=0))):
        have = digits[pos] >= 0
        column = np.full(len(keys), -1, dtype=np.int64)
        column[suffixed[have]] = 0x30 + digits[pos][have]   # L'0' + digit
        data[start[suffixed[have]] + 1 + n + pos] = column[suffixed[have]]
        columns.append(column)
    data[start + 1 + klen] = _u32(4 * count)
    data[_ranges(start + 2 + klen, count)] = ids
    hashes = murmurhash2_words(columns, 4 * klen)
    offsets = _u32(CDB_DATA_BEGIN + 4 * start)
    sizes, slot_hash, slot_off = _place(hashes, offsets)
    table_words = np.empty(2 * len(slot_hash), dtype=np.uint32)
    table_words[0::2], table_words[1::2] = slot_hash, slot_off
    data_end = CDB_DATA_BEGIN + 4 * len(data)
    table_at = data_end + 8 * _starts(sizes)            # tables follow the records, in table order
    refs = np.empty(2 * NUM_TABLES, dtype=np.uint32)
    refs[0::2] = _u32(np.where(sizes > 0, table_at, 0))
    refs[1::2] = _u32(sizes)
    with open(path, "wb") as handle:
        handle.write(CDB_MAGIC + struct.pack("<3I", (data_end + 4 * len(table_words)) & 0xFFFFFFFF,
                                             CDB_VERSION, BYTEORDER_CHECK))
        handle.write(refs.tobytes())
        handle.write(data.tobytes())
        handle.write(table_words.tobytes())


class SimstringWriter:
    """simstring.writer(path, n, be, unicode=True) as numpy: insert(str)s, then close().

    Strings are written as given (QuickUMLS's toolbox NFKD-normalises first: pass db strings);
    a NUL ends a string, as the C++ writer's char* does. spill_dir: where the n-gram spill
    goes (default: a hidden folder beside the master file)."""

    def __init__(self, path: str | Path, n: int = 3, be: bool = False, spill_dir: str | Path | None = None,
                 chunk_terms: int = CHUNK_TERMS):
        if not 1 <= n <= MAX_N:
            raise ValueError(f"SimstringWriter packs n-grams of at most {MAX_N} code points, not {n}")
        self.path, self.n, self.be, self.chunk_terms = Path(path), n, be, chunk_terms
        self.spill = Path(tempfile.mkdtemp(prefix=".simstring_spill_", dir=spill_dir or self.path.parent))
        self.master = open(self.path, "wb")
        self.master.write(bytes(HEADER.size))           # the header, written at close
        self.position = HEADER.size                     # byte offset of the next string: its id
        self.entries = 0
        self.sizes: set[int] = set()                    # n-gram counts with a spill file
        self.pending: list[str] = []

    def insert(self, term: str) -> None:
        self.pending.append(term)
        if len(self.pending) >= self.chunk_terms:
            self._flush()

    def insert_many(self, terms: Iterable[str]) -> None:
        for term in terms:
            self.insert(term)

    def _flush(self) -> None:
        terms, self.pending = self.pending, []
        if not terms:
            return
        joined = "".join(terms)
        if "\0" in joined:
            terms = [term.partition("\0")[0] for term in terms]
            joined = "".join(terms)
        cps = np.frombuffer(joined.encode("utf-32-le"), dtype="<u4")
        del joined
        lengths = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        del terms
        words = np.insert(cps, np.cumsum(lengths), 0)   # each string with its terminator
        ids = _u32(self.position + 4 * _starts(lengths + 1))
        self.master.write(words.tobytes())
        self.position += 4 * len(words)
        self.entries += len(lengths)
        del words
        n, lead = self.n, (self.n - 1 if self.be else 0)
        padded = lengths + 2 * lead if self.be else np.maximum(lengths, n)
        src = np.full(int(padded.sum()), MARK, dtype=np.int64)
        src[_ranges(_starts(padded) + lead, lengths)] = cps
        del cps
        grams = np.maximum(padded - n + 1, 0)           # a string's n-gram count N: its CDB file
        at = _ranges(_starts(padded), grams)
        keys = src[at]
        for j in range(1, n):
            keys = (keys << BITS) | src[at + j]
        del src, at
        order = np.argsort(grams, kind="stable")        # strings grouped by N, kept in order
        keys = keys[_ranges(_starts(grams)[order], grams[order])]
        sizes, ids = grams[order], ids[order]
        bounds = np.flatnonzero(np.diff(sizes)) + 1
        term_start = np.concatenate(([0], bounds))
        term_end = np.append(bounds, len(sizes))
        key_start = _starts(sizes)
        for a, b in zip(term_start.tolist(), term_end.tolist()):
            size = int(sizes[a])
            if size == 0:                               # no n-gram: in the master file only
                continue
            with open(self.spill / f"{size}.keys", "ab") as handle:
                handle.write(keys[key_start[a]:key_start[a] + size * (b - a)].tobytes())
            with open(self.spill / f"{size}.ids", "ab") as handle:
                handle.write(ids[a:b].tobytes())
            self.sizes.add(size)

    def _write_size(self, size: int) -> None:
        """The CDB of the strings with `size` n-grams, from their spill files."""
        keys = np.fromfile(self.spill / f"{size}.keys", dtype=np.int64)
        term_ids = np.fromfile(self.spill / f"{size}.ids", dtype="<u4")
        order = np.argsort(keys, kind="stable")         # ids stay in insertion order per key
        keys = keys[order]
        term = order // size
        del order
        ids = term_ids[term]
        del term_ids
        occurrence = np.ones(len(keys), dtype=np.int64)
        repeat = np.flatnonzero((keys[1:] == keys[:-1]) & (term[1:] == term[:-1])) + 1
        del term
        if len(repeat):                                 # one n-gram twice in a string: "abc2", ...
            run = np.ones(len(keys), dtype=bool)
            run[repeat] = False
            index = np.arange(len(keys))
            occurrence = index - np.maximum.accumulate(np.where(run, index, 0)) + 1
            dup = occurrence >= 2
            d_keys, d_occ, d_ids = keys[dup], occurrence[dup], ids[dup]
            rank, _, _ = _digit_order(d_occ)
            d_order = np.lexsort((rank, d_keys))        # stable: ids in order within a key
            d_keys, d_occ, d_ids = d_keys[d_order], d_occ[d_order], d_ids[d_order]
            keep = ~dup
            keys, ids = keys[keep], ids[keep]
            # "abc" < "abc10" < "abc2" < "abd": suffixed keys go after their plain n-gram
            at = np.searchsorted(keys, d_keys, side="right") + np.arange(len(d_keys))
            total = len(keys) + len(d_keys)
            is_dup = np.zeros(total, dtype=bool)
            is_dup[at] = True
            merged_keys = np.empty(total, dtype=np.int64)
            merged_ids = np.empty(total, dtype=np.uint32)
            occurrence = np.ones(total, dtype=np.int64)
            merged_keys[at], merged_ids[at], occurrence[at] = d_keys, d_ids, d_occ
            merged_keys[~is_dup], merged_ids[~is_dup] = keys, ids
            keys, ids = merged_keys, merged_ids
        new = np.ones(len(keys), dtype=bool)
        new[1:] = (keys[1:] != keys[:-1]) | (occurrence[1:] != occurrence[:-1])
        first = np.flatnonzero(new)
        write_cdb(Path(f"{self.path}.{size}.cdb"), keys[first], occurrence[first], first, ids, self.n)

    def close(self) -> None:
        if self.master.closed:
            return
        try:
            self._flush()
            for size in sorted(self.sizes):
                self._write_size(size)
                for suffix in ("keys", "ids"):
                    os.unlink(self.spill / f"{size}.{suffix}")
            self.master.seek(0)
            self.master.write(HEADER.pack(SSDB_MAGIC, BYTEORDER_CHECK, STREAM_VERSION,
                                          self.position & 0xFFFFFFFF, CHAR_SIZE, self.n, int(self.be),
                                          self.entries & 0xFFFFFFFF, max(self.sizes, default=0)))
        finally:
            self.master.close()
            shutil.rmtree(self.spill, ignore_errors=True)

    def __enter__(self) -> "SimstringWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
