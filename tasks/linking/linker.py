"""The concept linker: text in, UMLS concept mentions out. Reused by every stage that links text.

    linker = ConceptLinker.from_index("data/umls_index", params["link_concepts"])  # a complete section
    mentions = linker.link("No pleural effusion. Ground-glass opacity (GGO) in the left lung.")
    batches = linker.link_many(texts)          # one list of Mention per text

Pipeline per text: scispaCy tokenisation (hyphens split, so "Lidocaine-induced" yields
"Lidocaine") and sentence splitting on a blank English pipeline, or an installed spaCy
model named in params; scispaCy abbreviation detection, each short form linked as its
long form; case-sensitive acronyms of the vocabulary; QuickUMLS candidates per sentence;
filters (semantic types or groups, minimum similarity, stop-concepts) applied before the
overlap policy picks non-overlapping mentions; the assertion rules (tasks/common/assertion.py)
mark negation and uncertainty, the sentence a trigger's scope.

Wrong senses of a word matched alone (a head noun read in another semantic group than its
phrase: "dural tail sign" is no tail, "sagittal suture" no surgical suture, "posterior elements"
no chemical elements, "mild dilatation" no procedure) are kept out by these settings:
`shadow_groups` (longest match: a longer span that matched a concept of these groups, objects
or organisms the filters drop, still hides the matches inside it: "ground glass" is no Glass;
QuickUMLS's own best match picks among the candidates its type filter kept, so the head noun
alone would win), `sense_rules` (the groups a one-word match may have next to
given words), `acronyms_as_written` (a vocabulary acronym matches only in capitals: "main stem
bronchus" is no STEM) and `exact_before_hyphen` (a combining form, "parieto-", matches only
exactly); `stop_concepts` lists concepts no caption means.

`get_linker(index_dir, params)` keeps one linker per process (one QuickUMLS matcher per
Dask worker), since opening the databases costs far more than linking one caption.
"""
from __future__ import annotations

import json
import os
import threading
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from tasks.common.assertion import AssertionRules
from tasks.common.nlp import make_pipeline
from tasks.linking import quickumls_adapter as qa
from tasks.linking.variants import variants
from tasks.linking.index_files import quickumls_dir, open_quickumls, load_concepts
from tasks.linking.spans import HYPHEN_TOKENS_PER_WORD, loose_dash, inside_longer_span, WordContext, balanced_brackets, candidate_rank

# The keys of the params section `link_concepts` that the linker reads (the schema,
# tasks/schema/literature.py, holds their types and defaults); other keys are ignored.
LINKER_KEYS = (
    "spacy_model", "split_hyphens", "sentencizer", "abbreviations", "acronyms", "similarity", "threshold",
    "window", "min_match_length", "overlap", "best_match", "semantic_types", "semantic_groups",
    "min_similarity", "stop_concepts", "same_start", "variants", "negation", "context_max_scope",
    "context_rules", "shadow_groups", "acronyms_as_written", "exact_before_hyphen", "sense_rules",
)


@dataclass(frozen=True)
class Mention:
    """One concept mention; start/end are character offsets into the text given to link()."""
    sentence: int
    start: int
    end: int
    text: str
    cui: str
    preferred_name: str
    similarity: float
    semantic_types: tuple[str, ...]
    semantic_group: str
    negated: bool
    uncertain: bool
    matched_term: str          # the vocabulary string that matched
    abbreviation_of: str | None = None  # long form, when the mention is an abbreviation

    def as_dict(self) -> dict:
        row = asdict(self)
        row["semantic_types"] = list(self.semantic_types)
        return row


def linker_settings(params: dict) -> dict:
    """The linker's settings from a complete `link_concepts` section (or a dict holding its keys)."""
    missing = [key for key in LINKER_KEYS if key not in params]
    if missing:
        raise ValueError(f"linker settings lack {', '.join(missing)} (pass the whole link_concepts section)")
    settings = {key: params[key] for key in LINKER_KEYS}
    if settings["overlap"] not in ("length", "score"):
        raise ValueError(f"link_concepts.overlap must be 'length' or 'score', not {settings['overlap']!r}")
    if settings["similarity"] not in ("jaccard", "dice", "cosine", "overlap"):
        raise ValueError(f"link_concepts.similarity {settings['similarity']!r} is not a QuickUMLS measure")
    for rule in settings["sense_rules"]:
        if rule["where"] not in ("before", "after"):
            raise ValueError(f"link_concepts.sense_rules: where must be 'before' or 'after', not {rule['where']!r}")
    return settings


class ConceptLinker:
    def __init__(self, matcher, nlp, concepts: dict, settings: dict, acronyms: dict[str, list[str]] | None = None):
        self.matcher = matcher
        self.nlp = nlp
        self.concepts = concepts
        self.settings = settings
        self.acronyms = acronyms or {}
        self.assertion = AssertionRules(settings["context_rules"], settings["context_max_scope"]) \
            if settings["negation"] else None
        self._types = set(settings["semantic_types"]) if settings["semantic_types"] else None
        self._groups = set(settings["semantic_groups"]) if settings["semantic_groups"] else None
        self._stop = set(settings["stop_concepts"])
        self._shadow_groups = frozenset(settings["shadow_groups"] or ())
        # (where, words, groups) per sense rule; words lowercase
        self._sense_rules = [(rule["where"], frozenset(w.lower() for w in rule["words"]), frozenset(rule["groups"]))
                             for rule in settings["sense_rules"]]
        # an all-capitals vocabulary term -> its concepts (the index lowercases every term)
        self._acronym_cuis = {term.lower(): frozenset(cuis) for term, cuis in self.acronyms.items()} \
            if settings["acronyms_as_written"] else {}
        self._long_form_cache: dict[str, dict | None] = {}
        self._lookup_cache: dict[str, tuple[dict, ...]] = {}
        self._start_stop = qa.stopwords(matcher) | qa.negations(matcher)  # negation is the assertion rules' job
        self._inner_punct = qa.valid_punct(matcher)

    @classmethod
    def from_index(cls, index_dir: str | Path, params: dict) -> "ConceptLinker":
        """A linker over a umls_index output folder; params: the `link_concepts` section."""
        settings = linker_settings(params)
        matcher = open_quickumls(
            index_dir, overlapping_criteria="length" if settings["overlap"] == "length" else "score",
            # QuickUMLS counts tokens; the window counts words (_ngrams), and a split hyphen
            # adds two tokens ("tree-in-bud opacities" is 6 tokens, 2 words)
            threshold=settings["threshold"], window=HYPHEN_TOKENS_PER_WORD * settings["window"],
            similarity_name=settings["similarity"], min_match_length=settings["min_match_length"],
            # shadow_groups needs the candidates of other types too (_keep filters them after)
            accepted_semtypes=set(settings["semantic_types"]) if settings["semantic_types"]
            and not settings["shadow_groups"] else None,
        )
        nlp = make_pipeline(settings["spacy_model"], split_hyphens=settings["split_hyphens"],
                            sentencizer=settings["sentencizer"], abbreviations=settings["abbreviations"])
        acronyms = {}
        acronym_file = quickumls_dir(index_dir) / "acronyms.json"
        if settings["acronyms"] and acronym_file.is_file():
            acronyms = json.loads(acronym_file.read_text(encoding="utf-8"))
        return cls(matcher, nlp, load_concepts(index_dir), settings, acronyms)

    # -- public API -------------------------------------------------------------------------
    def link(self, text: str) -> list[Mention]:
        return self._link_doc(self.nlp(text))

    def link_many(self, texts: Iterable[str], batch_size: int = 256) -> list[list[Mention]]:
        return [self._link_doc(doc) for doc in self.nlp.pipe(texts, batch_size=batch_size)]

    # -- internals --------------------------------------------------------------------------
    def _concept(self, cui: str):
        return self.concepts.get(cui) or (cui, (), "UNKN", frozenset())

    def _keep(self, cand: dict) -> bool:
        return self._matches(cand) and self._wanted(cand)

    def _matches(self, cand: dict) -> bool:
        """Whether the candidate's term is what the text says (similarity, first letters, case)."""
        if cand["similarity"] < self.settings["min_similarity"]:
            return False
        k = self.settings["same_start"]
        if k and cand["similarity"] < 1.0 and " " not in cand["ngram"] and " " not in cand["term"]:
            if cand["ngram"][:k].lower() != cand["term"][:k].lower():
                return False
        if self._acronym_cuis:
            # "stem" or "bun" in running text is the word, not the vocabulary's STEM or BUN
            cuis = self._acronym_cuis.get(str(cand["term"]).lower())
            if cuis and cand["cui"] in cuis and not cand["ngram"].isupper():
                return False
        return True

    def _wanted(self, cand: dict) -> bool:
        """Whether the filters keep the candidate's concept (stop concepts, types, groups)."""
        cui = cand["cui"]
        if cui in self._stop:
            return False
        if self._types is not None and not (set(cand["semtypes"]) & self._types):
            return False
        if self._groups is not None:
            groups = self._concept(cui)[3]
            if groups and not (groups & self._groups):
                return False
        return True

    def _resolve_long_form(self, long_form: str) -> dict | None:
        """Best concept for an abbreviation's long form, matched as one whole string."""
        if long_form not in self._long_form_cache:
            forms = [long_form] + (list(variants(long_form)) if self.settings["variants"] else [])
            groups = qa.get_all_matches(self.matcher, [(0, len(long_form), f) for f in forms])
            cands = [c for group in groups for c in group if self._keep(c)]
            cands.sort(key=candidate_rank)
            if len(self._long_form_cache) > 100_000:  # long-lived workers: keep memory flat
                self._long_form_cache.clear()
            self._long_form_cache[long_form] = cands[0] if cands else None
        return self._long_form_cache[long_form]

    def _link_doc(self, doc) -> list[Mention]:
        sents = list(doc.sents)
        # Abbreviations defined in this text: every short-form occurrence -> long form.
        abbrev: dict[tuple[int, int], str] = {}
        if self.settings["abbreviations"] and doc.has_extension("abbreviations"):
            for short in doc._.abbreviations:
                long_form = short._.long_form
                if long_form is not None:
                    abbrev[(short.start_char, short.end_char)] = long_form.text
        # QuickUMLS once over the whole doc (cheaper than per sentence), n-grams that
        # cross a sentence boundary dropped before lookup, candidates bucketed by sentence.
        starts = [sent.start_char for sent in sents]
        ends = [sent.end_char for sent in sents]
        ngram_groups: dict[int, list] = {}
        shadows: list[tuple[int, int]] = []   # spans matched to a concept of shadow_groups
        context = WordContext(doc) if self._sense_rules or self.settings["exact_before_hyphen"] else None
        for group in self._candidates(self._ngrams(doc, starts, ends)):
            matching = [c for c in group if self._matches(c)]
            kept = [c for c in matching if self._wanted(c)]
            if kept and context is not None:
                kept = self._in_context(kept, context)
            if matching and not kept and self._shadow_groups \
                    and any(self._concept(c["cui"])[3] & self._shadow_groups for c in matching):
                shadows.append((matching[0]["start"], matching[0]["end"]))
            # A defined short form means its long form: never another concept.
            if kept and (kept[0]["start"], kept[0]["end"]) not in abbrev:
                ngram_groups.setdefault(bisect_right(starts, kept[0]["start"]) - 1, []).append((0, kept))
        if shadows:
            ngram_groups = {s_index: [(prio, cands) for prio, cands in groups
                                      if not inside_longer_span(cands[0]["start"], cands[0]["end"], shadows)]
                            for s_index, groups in ngram_groups.items()}
        mentions: list[Mention] = []
        for s_index, sent in enumerate(sents):
            groups = ngram_groups.get(s_index, [])  # (priority, candidates): abbreviations, acronyms first
            for (start, end), long_form in abbrev.items():
                if sent.start_char <= start < sent.end_char:
                    best = self._resolve_long_form(long_form)
                    if best is not None:
                        groups.append((2, [dict(best, start=start, end=end, ngram=doc.text[start:end],
                                                abbreviation_of=long_form)]))
            if self.acronyms:
                for tok in sent:
                    cuis = self.acronyms.get(tok.text)
                    if cuis and (tok.idx, tok.idx + len(tok)) not in abbrev:
                        cands = [{"start": tok.idx, "end": tok.idx + len(tok), "ngram": tok.text,
                                  "term": tok.text, "cui": cui, "similarity": 1.0,
                                  "semtypes": set(self._concept(cui)[1]), "preferred": 0} for cui in cuis]
                        cands = [c for c in cands if self._keep(c)]
                        if cands:
                            groups.append((1, cands))
            chosen = self._select(groups)
            if not chosen:
                continue
            scan = self.assertion.scan(sent.text) if self.assertion is not None else None
            for cand in chosen:
                negated, uncertain = (False, False) if scan is None else self.assertion.flags(
                    scan, cand["start"] - sent.start_char, cand["end"] - sent.start_char)
                cui = cand["cui"]
                name, types, group, _ = self._concept(cui)
                mentions.append(Mention(
                    sentence=s_index, start=int(cand["start"]), end=int(cand["end"]),
                    text=doc.text[cand["start"]:cand["end"]], cui=cui, preferred_name=name,
                    similarity=round(float(cand["similarity"]), 4),
                    semantic_types=tuple(types) or tuple(sorted(cand["semtypes"])), semantic_group=group,
                    negated=negated, uncertain=uncertain,
                    matched_term=str(cand["term"]), abbreviation_of=cand.get("abbreviation_of"),
                ))
        return mentions

    def _in_context(self, cands: list[dict], context: "WordContext") -> list[dict]:
        """The candidates of one span that its neighbouring words allow (sense_rules,
        exact_before_hyphen); only one-word spans are judged, by the words around them."""
        start, end = cands[0]["start"], cands[0]["end"]
        if not context.one_word(start, end):
            return cands
        if self.settings["exact_before_hyphen"] and context.before_hyphen(end):
            # "parieto-occipital": a combining form is no near-spelling of a drug name ("Pariet")
            cands = [c for c in cands if c["similarity"] >= 1.0]
        for where, words, groups in self._sense_rules:
            if not cands:
                break
            near = context.words_before(start, self.settings["window"] - 1) if where == "before" \
                else context.word_after(end)
            if near and not words.isdisjoint(near):
                cands = [c for c in cands if self._concept(c["cui"])[3] & groups]
        return cands

    def _candidates(self, ngrams) -> list[list[dict]]:
        """QuickUMLS's candidate groups for the n-grams, as one `_get_all_matches` call gives
        them (it looks each n-gram up on its own), but each distinct text looked up once per
        process: captions repeat their phrases, and the simstring lookups are most of the time."""
        cache = self._lookup_cache
        groups = []
        for start, end, ngram in ngrams:
            found = cache.get(ngram)
            if found is None:
                group = qa.get_all_matches(self.matcher, [(0, 0, ngram)])
                found = tuple(group[0]) if group else ()
                if len(cache) > 200_000:  # long-lived workers: keep memory flat
                    cache.clear()
                cache[ngram] = found
            if found:
                groups.append([dict(cand, start=start, end=end) for cand in found])
        return groups

    def _ngrams(self, doc, starts: list[int], ends: list[int]):
        """QuickUMLS's n-grams within sentences, minus those opening with a stopword (without a
        POS tagger QuickUMLS lets "with X" compete with "X" and the longer one wins on length),
        those of more words than the window, across punctuation, or with a bracket left open."""
        stop = self._start_stop
        single = len(starts) == 1
        most_spaces = self.settings["window"] - 1
        # Punctuation other than dashes and brackets ends a span ("CT: tree-in-bud" is not a term):
        # QuickUMLS means to (its invalid middle tokens) but compares tokens with token indices.
        barriers = [tok.idx for tok in doc if tok.is_punct and not tok.is_bracket and tok.text not in self._inner_punct]
        for start, end, ngram in qa.make_ngrams(self.matcher, doc):
            if not single and end > ends[bisect_right(starts, start) - 1]:
                continue
            if ngram.count(" ") > most_spaces:  # more words than the window
                continue
            if barriers:
                inside = bisect_right(barriers, start)
                if inside < len(barriers) and barriers[inside] < end:
                    continue
            if not balanced_brackets(ngram):  # "pentoxifylline (0" is not a longer "pentoxifylline"
                continue
            if "-" in ngram and loose_dash(ngram):  # "CT- multiple fractures" is not "multiple fractures"
                continue
            first = ngram.split(" ", 1)[0].lower()
            if first not in stop:
                yield start, end, ngram
                if self.settings["variants"]:
                    for form in variants(ngram):
                        yield start, end, form

    def _select(self, groups: list[tuple[int, list[dict]]]) -> list[dict]:
        """Best candidate per span; with best_match, non-overlapping spans by the overlap policy."""
        def best(cands):
            return min(cands, key=candidate_rank)

        picked = [(prio, best(cands)) for prio, cands in groups]
        if not self.settings["best_match"]:
            return sorted((c for _, c in picked), key=lambda c: (c["start"], c["end"], *candidate_rank(c)))
        if self.settings["overlap"] == "length":
            order = lambda pc: (-pc[0], -(pc[1]["end"] - pc[1]["start"]), -pc[1]["similarity"], pc[1]["start"],
                                *candidate_rank(pc[1]))
        else:
            order = lambda pc: (-pc[0], -pc[1]["similarity"], -(pc[1]["end"] - pc[1]["start"]), pc[1]["start"],
                                *candidate_rank(pc[1]))
        taken: list[tuple[int, int]] = []
        chosen = []
        for _, cand in sorted(picked, key=order):
            if any(cand["start"] < e and s < cand["end"] for s, e in taken):
                continue
            taken.append((cand["start"], cand["end"]))
            chosen.append(cand)
        return sorted(chosen, key=lambda c: (c["start"], c["end"]))


_CACHE: dict[tuple[str, str], tuple[str, ConceptLinker]] = {}  # (index, settings) -> (build stamp, linker)
_LOCK = threading.Lock()


def _index_stamp(index_dir: str | Path) -> str:
    """The index files' names, sizes and mtimes: a rebuilt index needs a new linker (a Dask
    worker shared by several stages may outlive one build)."""
    root = Path(index_dir)
    stats = [(p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(root.rglob("*")) if p.is_file()]
    return json.dumps(stats)


def get_linker(index_dir: str | Path, params: dict) -> ConceptLinker:
    """One linker per process, index build and settings: Dask workers open QuickUMLS once."""
    key = (os.path.abspath(index_dir), json.dumps(linker_settings(params), sort_keys=True, default=str))
    stamp = _index_stamp(index_dir)
    with _LOCK:
        if key not in _CACHE or _CACHE[key][0] != stamp:
            _CACHE[key] = (stamp, ConceptLinker.from_index(index_dir, params))
        return _CACHE[key][1]
