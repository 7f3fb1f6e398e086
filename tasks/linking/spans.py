"""Text tests on a candidate span: dashes, brackets, nesting, the words around it, ranking."""
from __future__ import annotations


HYPHEN_TOKENS_PER_WORD = 2   # the matcher's token window per word of link_concepts.window
_DASHES = "-\u2010\u2011\u2012\u2013\u2014"


def loose_dash(ngram: str) -> bool:
    """A dash at an end of the n-gram or beside a space joins nothing inside it."""
    if ngram[0] in _DASHES or ngram[-1] in _DASHES:
        return True
    return any(ch in _DASHES and (ngram[i - 1] == " " or ngram[i + 1] == " ")
               for i, ch in enumerate(ngram[1:-1], start=1))


def inside_longer_span(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Whether (start, end) lies inside a longer span of `spans`."""
    return any(s <= start and end <= e and e - s > end - start for s, e in spans)


class WordContext:
    """The words around a span of one doc: what sense_rules and exact_before_hyphen look at."""

    def __init__(self, doc):
        self.doc = doc
        self.by_start = {tok.idx: tok.i for tok in doc}
        self.by_end = {tok.idx + len(tok): tok.i for tok in doc}

    def one_word(self, start: int, end: int) -> bool:
        return not any(ch.isspace() for ch in self.doc.text[start:end])

    def before_hyphen(self, end: int) -> bool:
        """Whether a hyphen follows the span directly ("parieto-")."""
        i = self.by_end.get(end)
        return i is not None and i + 1 < len(self.doc) and self.doc[i + 1].text in _DASHES \
            and not self.doc[i].whitespace_

    def word_after(self, end: int) -> set[str]:
        """The next word, lowercase, directly after the span or after a hyphen ("tail sign",
        "grape-like"); empty when punctuation or nothing follows."""
        i = self.by_end.get(end)
        if i is None or i + 1 >= len(self.doc):
            return set()
        nxt = self.doc[i + 1]
        if nxt.text in _DASHES and not self.doc[i].whitespace_ and i + 2 < len(self.doc):
            nxt = self.doc[i + 2]
        return {nxt.lower_} if nxt.is_alpha else set()

    def words_before(self, start: int, most: int) -> set[str]:
        """The words of the span's phrase before it, lowercase: up to `most` words, back to the
        first punctuation, number or short function word ("mild ventricular dilatation":
        mild, ventricular)."""
        i = self.by_start.get(start)
        found: set[str] = set()
        if i is None:
            return found
        j = i - 1
        while j >= 0 and len(found) < most:
            tok = self.doc[j]
            if tok.text in _DASHES and j > 0 and not self.doc[j - 1].whitespace_:
                j -= 1   # "fronto-parietal": the words a hyphen joins are one phrase
                continue
            if not tok.is_alpha or tok.is_stop:
                break
            found.add(tok.lower_)
            j -= 1
        return found
_OPENING, _CLOSING = "([{", ")]}"


def balanced_brackets(ngram: str) -> bool:
    """Whether every bracket the n-gram holds is closed inside it, in order."""
    if not any(ch in ngram for ch in "()[]{}"):  # the cheap test first: most n-grams have none
        return True
    depth = []
    for ch in ngram:
        if ch in _OPENING:
            depth.append(_CLOSING[_OPENING.index(ch)])
        elif ch in _CLOSING:
            if not depth or depth.pop() != ch:
                return False
    return not depth


def candidate_rank(cand: dict) -> tuple:
    """Best candidate first; a total order (cui, then the matched term), so that ties never
    fall to the order QuickUMLS returned them in."""
    return (-cand["similarity"], -cand["preferred"], cand["cui"], str(cand["term"]))
