"""The one spaCy pipeline factory: blank English (or an installed model) plus scispaCy parts.

No trained spaCy model can be fetched offline, so every stage that tokenises or splits
text builds its pipeline here: captions (link_concepts), report sentences
(split_reports) and the bare QuickUMLS baseline of the BC5CDR test.
"""
from __future__ import annotations

import re
import warnings


def make_pipeline(spacy_model: str | None = None, scispacy_tokenizer: bool = True, split_hyphens: bool = False,
                  sentencizer: str | None = "rule", punct_chars: list[str] | None = None,
                  abbreviations: bool = False):
    """A spaCy pipeline for tokens, sentences and abbreviations.

    spacy_model: an installed spaCy/scispaCy model (its tagger, lemmatizer and NER left out);
        None: a blank English pipeline.
    scispacy_tokenizer: scispaCy's biomedical tokenizer, which keeps "3.3 cm", "13x9.3 mm"
        and "e.g." whole.
    split_hyphens: also split letter-hyphen-letter, so the parts of "ground-glass" can
        match alone (scispaCy keeps them whole); likewise a bracketed short form before a
        hyphen ("(SNP)-induced", so the abbreviation detector sees "(SNP)") and word/word
        ("paclitaxel/cisplatin").
    sentencizer: "rule" (spaCy's punctuation rules, with punct_chars when given), "pysbd"
        (scispaCy's pysbd_sentencizer, slower) or None; a model that splits sentences
        itself gets none.
    abbreviations: scispaCy's abbreviation detector (doc._.abbreviations).
    """
    import spacy

    if spacy_model:
        nlp = spacy.load(spacy_model, exclude=["ner", "lemmatizer", "tagger", "attribute_ruler"])
    else:
        nlp = spacy.blank("en")
    if scispacy_tokenizer:
        from scispacy.custom_tokenizer import combined_rule_tokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            nlp.tokenizer = combined_rule_tokenizer(nlp)
    if split_hyphens:
        # QuickUMLS rejoins hyphenated n-grams itself, so "X-induced" can match as a whole too.
        infix = nlp.tokenizer.infix_finditer.__self__.pattern
        nlp.tokenizer.infix_finditer = re.compile(
            infix + r"|(?<=[A-Za-z0-9)\]])-(?=[A-Za-z])|(?<=[A-Za-z0-9])[)\]](?=-[A-Za-z])"
            r"|(?<=[A-Za-z]{2})/(?=[A-Za-z]{2})").finditer
        prefix = nlp.tokenizer.prefix_search.__self__.pattern  # the "(" of "(SNP)-induced"
        nlp.tokenizer.prefix_search = re.compile(prefix + r"|^[(\[](?=[^()\[\]\s]+[)\]]-[A-Za-z])").search
    splits_sentences = nlp.has_pipe("parser") or nlp.has_pipe("senter") or nlp.has_pipe("sentencizer")
    if sentencizer is not None and not splits_sentences:
        if sentencizer == "pysbd":
            import scispacy.custom_sentence_segmenter  # noqa: F401  (registers the component)

            nlp.add_pipe("pysbd_sentencizer")
        elif sentencizer == "rule":
            nlp.add_pipe("sentencizer", config={"punct_chars": list(punct_chars)} if punct_chars else {})
        else:
            raise ValueError(f"sentencizer must be 'rule' or 'pysbd', not {sentencizer!r}")
    if abbreviations:
        import scispacy.abbreviation  # noqa: F401  (registers the factory)

        nlp.add_pipe("abbreviation_detector")
    return nlp
