"""BioCreative V CDR (PubTator format) evaluation of a linker: mention- and document-level.

Mention level: exact character span + MeSH ID, per entity type (Disease, Chemical);
a prediction's type comes from its concept's semantic groups (DISO -> Disease,
CHEM -> Chemical). Document level: the set of IDs per abstract, both types together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

TYPE_OF_GROUP = {"DISO": "Disease", "CHEM": "Chemical"}


@dataclass
class Document:
    pmid: str
    text: str
    gold: list[tuple[int, int, str, frozenset]] = field(default_factory=list)  # start, end, type, ids


def read_pubtator(path: str | Path) -> list[Document]:
    docs: dict[str, Document] = {}
    parts: dict[str, dict[str, str]] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            if "|t|" in line[:20] or "|a|" in line[:20]:
                pmid, kind, text = line.split("|", 2)
                parts.setdefault(pmid, {})[kind] = text
                continue
            fields = line.split("\t")
            if len(fields) >= 6 and fields[1].isdigit():
                pmid, start, end, _surface, etype, ids = fields[:6]
                doc = docs.setdefault(pmid, Document(pmid, ""))
                doc.gold.append((int(start), int(end), etype, frozenset(i for i in ids.split("|") if i != "-1")))
    result = []
    for pmid, texts in parts.items():
        doc = docs.setdefault(pmid, Document(pmid, ""))
        doc.text = texts.get("t", "") + " " + texts.get("a", "")  # PubTator offsets: title, space, abstract
        result.append(doc)
    return result


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
            "tp": tp, "predicted": n_pred, "gold": n_gold}


def evaluate(docs: Iterable[Document], predict: Callable[[str], list[tuple[int, int, str, frozenset]]]) -> dict:
    """predict(text) -> [(start, end, id, groups)]; returns P/R/F1 per type and document-level."""
    counts = {t: [0, 0, 0] for t in TYPE_OF_GROUP.values()}
    doc_tp = doc_pred = doc_gold = 0
    for doc in docs:
        gold_by_span = {}
        for start, end, etype, ids in doc.gold:
            gold_by_span.setdefault((start, end, etype), set()).update(ids)
            if etype in counts:
                counts[etype][2] += 1
        pred_ids = set()
        for start, end, cui, groups in predict(doc.text):
            for group in groups:
                etype = TYPE_OF_GROUP.get(group)
                if etype is None:
                    continue
                counts[etype][1] += 1
                pred_ids.add(cui)
                if cui in gold_by_span.get((start, end, etype), ()):
                    counts[etype][0] += 1
        gold_ids = {i for _, _, etype, ids in doc.gold if etype in counts for i in ids}
        doc_tp += len(pred_ids & gold_ids)
        doc_pred += len(pred_ids)
        doc_gold += len(gold_ids)
    result = {etype: prf(*c) for etype, c in counts.items()}
    result["document"] = prf(doc_tp, doc_pred, doc_gold)
    return result


def linker_predictor(linker) -> Callable:
    def predict(text):
        return [(m.start, m.end, m.cui, linker._concept(m.cui)[3]) for m in linker.link(text)]
    return predict


def bare_quickumls_predictor(index_dir: str | Path, concepts: dict, **matcher_options) -> Callable:
    """QuickUMLS with its default settings (but matcher_options, e.g. accepted_semtypes=None: every
    type) on a blank English pipeline (no model can be downloaded)."""
    from tasks.common.nlp import make_pipeline
    from tasks.linking import quickumls_adapter as qa
    from tasks.linking.linker import open_quickumls

    matcher = open_quickumls(index_dir, **matcher_options)
    nlp = make_pipeline(scispacy_tokenizer=False, sentencizer=None)

    def predict(text):
        out = []
        for group in qa.match_doc(matcher, nlp(text)):
            best = group[0]
            groups = concepts.get(best["cui"], (None, (), None, frozenset()))[3]
            out.append((int(best["start"]), int(best["end"]), best["cui"], groups))
        return out
    return predict
