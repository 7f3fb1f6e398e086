"""Lexical variants of an n-gram tried beside the n-gram itself (as UMLS's lvg would).

Vocabularies list one spelling and one inflection: "Hemodilution" not "haemodilution",
"Hypertension" not "hypertensive", "Parkinson Disease" not "Parkinson's disease".
A vocabulary without UMLS's many sources (MeSH alone) also names an organ by its noun
where text uses the adjective or a Greek root: "Liver Dysfunction" for "hepatic
dysfunction", "Kidney Diseases" for "nephropathy" (MetaMap's synonym variants do the same).
Variants keep the n-gram's span, so mentions still point at the text as written.
"""
from __future__ import annotations

import re
from functools import lru_cache

# British -> American spellings common in clinical text.
_SPELLING = [
    (re.compile(r"aem"), "em"), (re.compile(r"oedem"), "edem"), (re.compile(r"oesoph"), "esoph"),
    (re.compile(r"paed"), "ped"), (re.compile(r"(?<=[a-z])our(?=s?\b)"), "or"), (re.compile(r"isation\b"), "ization"),
    (re.compile(r"oestr"), "estr"), (re.compile(r"haem"), "hem"), (re.compile(r"leukaem"), "leukem"),
]
# Last-word rules: adjective -> disorder noun, plural -> singular.
_SUFFIX = [
    (re.compile(r"(?<=[a-z]{4})tensive$"), "tension"),
    (re.compile(r"(?<=[a-z]{3})emic$"), "emia"),
    (re.compile(r"(?<=[a-z]{3})otic$"), "osis"),
    (re.compile(r"(?<=[a-z]{3})ies$"), "y"),
    (re.compile(r"(?<=[a-z]{3})(?<![su])s$"), ""),
]
_POSSESSIVE = re.compile(r"['’]s\b")
# Organ adjectives and combining forms (Greek/Latin roots) -> the organ's noun.
_ORGAN_ADJECTIVES = {
    "renal": "kidney", "hepatic": "liver", "cardiac": "heart", "pulmonary": "lung", "cerebral": "brain",
    "gastric": "stomach", "ocular": "eye", "cutaneous": "skin", "osseous": "bone",
}
_ORGAN_ROOTS = {
    "nephro": "kidney", "hepato": "liver", "cardio": "heart", "encephalo": "brain", "gastro": "stomach",
    "retino": "retina", "arthro": "joint", "osteo": "bone", "pneumo": "lung", "entero": "intestine",
}
_ROOT_PATHY = re.compile(r"\b(" + "|".join(sorted(_ORGAN_ROOTS, key=len, reverse=True)) + r")?path(y|ies)\b")
_ORGAN_WORD = re.compile(r"\b(" + "|".join(sorted(_ORGAN_ADJECTIVES)) + r")\b")


def _organ_nouns(form: str) -> list[str]:
    """'hepatic dysfunction' -> 'liver dysfunction'; 'nephropathy' -> 'kidney disease'."""
    out = []
    if "path" in form:
        found = _ROOT_PATHY.sub(lambda m: f"{_ORGAN_ROOTS[m.group(1)]} {'disease' if m.group(2) == 'y' else 'diseases'}"
                                if m.group(1) else m.group(0), form)
        if found != form:
            out.append(found)
    if " " in form and _ORGAN_WORD.search(form):  # an adjective alone ("cardiac") is not its organ
        out.append(_ORGAN_WORD.sub(lambda m: _ORGAN_ADJECTIVES[m.group(1)], form))
    return out


_SPELLING_HINT = re.compile(r"ae|oe|our|isation")
_SUFFIX_ENDS = ("tensive", "emic", "otic", "s")


@lru_cache(maxsize=65536)
def variants(ngram: str) -> tuple[str, ...]:
    """Distinct lowercase variants of ngram, the ngram itself excluded (cached: n-grams repeat)."""
    base = ngram.lower()
    spelled = base
    if _SPELLING_HINT.search(base):  # cheap test first: most n-grams have no British spelling
        for pattern, repl in _SPELLING:
            spelled = pattern.sub(repl, spelled)
    if "'" in spelled or "’" in spelled:
        spelled = _POSSESSIVE.sub("", spelled)
    organs = _organ_nouns(spelled) if "path" in spelled or _ORGAN_WORD.search(spelled) else []
    if spelled == base and not organs and not base.endswith(_SUFFIX_ENDS):
        return ()
    out = []
    for form in (spelled, *organs):
        if form != base:
            out.append(form)
        head, _, last = form.rpartition(" ")
        for pattern, repl in _SUFFIX:
            new_last = pattern.sub(repl, last)
            if new_last != last:
                out.append(f"{head} {new_last}".strip())
                break
    return tuple(dict.fromkeys(v for v in out if v and v != base))
