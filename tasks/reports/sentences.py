"""Sentence splitting with scispaCy's tokenizer on a blank English pipeline.

No trained spaCy model can be installed offline, so sentences come from the
rule-based sentencizer over scispaCy's biomedical tokenizer (which keeps
"3.3 cm", "13x9.3 mm" and "e.g." whole).
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
                    batch_size: int = 64) -> list[list[Sentence]]:
    """Sentences of each text, with offsets into that text."""
    nlp = sentence_pipeline(use_scispacy_tokenizer)
    results: list[list[Sentence]] = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        sentences = []
        for sent in doc.sents:
            lead, text = _clean(sent.text)
            # A lone "?" or "." left by the splitter belongs to the previous sentence.
            if sentences and (not any(ch.isalnum() for ch in text)):
                prev = sentences[-1]
                end = sent.start_char + lead + len(text)
                sentences[-1] = Sentence(prev.start, doc.text[prev.start:end].strip())
                continue
            if text:
                sentences.append(Sentence(sent.start_char + lead, text))
        results.append(sentences)
    return results
