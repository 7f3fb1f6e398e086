"""A deterministic WordPiece vocabulary trainer.

`tokenizers`' WordPieceTrainer learns merges the BPE way but breaks ties between
equally frequent pairs (and orders the `##` alphabet) by Rust hash order, so two
processes give different ids for the same texts. This trainer follows the same
procedure with every order fixed: special tokens, the characters seen (by code
point), their `##` continuations (by code point), then merged pieces, most frequent
pair first. Ties go to the pair of older tokens (lower ids), as in `tokenizers`,
whose ids are now themselves assigned in a fixed order.
"""
from __future__ import annotations

import heapq
from collections import Counter
from typing import Callable, Iterable

PREFIX = "##"


def count_words(texts: Iterable[str], split: Callable[[str], list[str]], chunk: int = 512) -> Counter:
    """How often each pre-tokenized word occurs in `texts`.

    `split` must end words at whitespace: texts go to it `chunk` at a time, joined by a
    newline, which saves a call per text on large corpora.
    """
    words: Counter = Counter()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= chunk:
            words.update(split("\n".join(batch)))
            batch = []
    if batch:
        words.update(split("\n".join(batch)))
    return words


def _pairs(symbols: list[str]) -> Iterable[tuple[str, str]]:
    return zip(symbols, symbols[1:])


def _merged(symbols: list[str], pair: tuple[str, str], joined: str) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(joined)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_vocab(word_counts: dict[str, int], vocab_size: int, special_tokens: list[str],
                min_frequency: int = 1) -> list[str]:
    """The vocabulary, in id order: a pure function of the word counts and settings."""
    vocab: list[str] = []
    ids: dict[str, int] = {}

    def add(token: str) -> None:
        if token not in ids:
            ids[token] = len(vocab)
            vocab.append(token)

    for token in special_tokens:
        add(token)
    items = sorted((w, int(c)) for w, c in word_counts.items() if w and c > 0)
    for char in sorted({c for w, _ in items for c in w}):
        add(char)
    for char in sorted({c for w, _ in items for c in w[1:]}):
        add(PREFIX + char)

    words = [[w[0]] + [PREFIX + c for c in w[1:]] for w, _ in items]
    counts = [c for _, c in items]
    pair_count: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for index, symbols in enumerate(words):
        for pair in _pairs(symbols):
            pair_count[pair] += counts[index]
            where.setdefault(pair, set()).add(index)
    # max-heap by count, then the lower (left, right) ids; stale entries are skipped
    heap = [(-n, ids[pair[0]], ids[pair[1]], pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, _, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negative:
            continue
        if -negative < max(1, int(min_frequency)):
            break
        left, right = pair
        joined = left + right[len(PREFIX):] if right.startswith(PREFIX) else left + right
        add(joined)
        changed: set[tuple[str, str]] = set()
        for index in where.pop(pair, ()):
            old = words[index]
            new = _merged(old, pair, joined)
            if len(new) == len(old):
                continue
            count = counts[index]
            for p in _pairs(old):
                pair_count[p] -= count
                if p[0] in pair or p[1] in pair:
                    changed.add(p)
            for p in _pairs(new):
                pair_count[p] += count
                if joined in p:  # the only pairs this word did not have before
                    where.setdefault(p, set()).add(index)
                    changed.add(p)
            words[index] = new
        # the heap's order is total, so the order of pushes does not matter
        for p in changed:
            n = pair_count[p]
            if n > 0:
                heapq.heappush(heap, (-n, ids[p[0]], ids[p[1]], p))
            else:
                del pair_count[p]
    return vocab
