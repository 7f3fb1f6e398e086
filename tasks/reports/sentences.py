"""Sentence splitting with scispaCy's tokenizer on a blank English pipeline.

No trained spaCy model can be installed offline, so sentences come from the
rule-based sentencizer over scispaCy's biomedical tokenizer (which keeps
"3.3 cm", "13x9.3 mm" and "e.g." whole). A sentence longer than `max_chars` (text
without sentence ends: a dump, a table) is cut at whitespace into pieces of at most
that many characters, so that the work per sentence stays bounded and a report costs
time in proportion to its length.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from tasks.common.nlp import make_pipeline


@dataclass(frozen=True)
class Sentence:
    start: int  # offset in the segment text
    text: str


@lru_cache(maxsize=2)
def sentence_pipeline(use_scispacy_tokenizer: bool = True):
    return make_pipeline(scispacy_tokenizer=use_scispacy_tokenizer, sentencizer="rule",
                         punct_chars=[".", "!", "?", ";\n", "•"])


def _clean(text: str) -> tuple[int, str]:
    stripped = text.strip()
    return text.find(stripped) if stripped else 0, stripped


def split_sentences(texts: Iterable[str], use_scispacy_tokenizer: bool = True,
                    batch_size: int = 64, max_chars: int | None = None) -> list[list[Sentence]]:
    """Sentences of each text, with offsets into that text; none longer than `max_chars`."""
    nlp = sentence_pipeline(use_scispacy_tokenizer)
    results: list[list[Sentence]] = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        whole = doc.text  # built from the tokens at each access: once per text
        sentences = []
        for sent in doc.sents:
            lead, text = _clean(sent.text)
            # A lone "?" or "." left by the splitter belongs to the previous sentence.
            if sentences and (not any(ch.isalnum() for ch in text)):
                prev = sentences[-1]
                end = sent.start_char + lead + len(text)
                sentences[-1] = Sentence(prev.start, whole[prev.start:end].strip())
                continue
            if text:
                sentences.append(Sentence(sent.start_char + lead, text))
        if max_chars is not None:
            sentences = [piece for sentence in sentences for piece in cut_long(sentence, max_chars)]
        results.append(sentences)
    return results


def cut_long(sentence: Sentence, max_chars: int) -> list[Sentence]:
    """The sentence in pieces of at most `max_chars`, cut at the last whitespace before
    the limit (mid-word only where a piece has none)."""
    if len(sentence.text) <= max_chars:
        return [sentence]
    pieces, text, base = [], sentence.text, sentence.start
    while len(text) > max_chars:
        cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\n", 0, max_chars + 1))
        cut = cut if cut > 0 else max_chars
        head, rest = text[:cut].rstrip(), text[cut:]
        if head:
            pieces.append(Sentence(base, head))
        stripped = rest.lstrip()
        base += cut + len(rest) - len(stripped)
        text = stripped
    if text:
        pieces.append(Sentence(base, text))
    return pieces
