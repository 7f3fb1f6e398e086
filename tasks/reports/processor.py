"""One report in, its clauses, anatomy descriptions and labels out.

Sections -> sentences (scispaCy) -> clauses -> anatomy (lexicon + linker CUIs +
the findings' own anatomy + organ header) -> finding mentions with assertion ->
per-anatomy descriptions and report labels. The concept linker is optional: with
it, its anatomy and finding CUIs join the lexicon's; without it the lexicon alone
decides, and the summary says which ran.

Before any of it, a report longer than `max_report_chars` or holding a NUL byte is
rejected, and HTML entities are unescaped (clause offsets are into the unescaped text).
Each lexicon scans a whole segment once; clauses take their share by bisection, and
sentences are at most `max_sentence_chars` long, so time grows linearly with a report.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from tasks.common.assertion import ABSENT, NEGATION, PRESENT, UNCERTAIN, AssertionRules, Scan
from tasks.reports.anatomy import OTHER, AnatomyLexicon
from tasks.reports.assertion_rules import ClauseScopes, historic_rules, report_assertion_rules
from tasks.reports.clauses import split_clauses
from tasks.reports.descriptions import AnatomyText, as_sentence, render
from tasks.reports.findings import FindingMatcher, FindingMention, finding_defs
from tasks.reports.labels import derive_labels, label_rules
from tasks.reports.normal import NormalStatements
from tasks.reports.rejections import rejection_reason
from tasks.reports.sections import SectionSplitter
from tasks.reports.sentences import split_sentences
from tasks.reports.text import SortedStarts, unescape_entities
from tasks.common.terms import ascii_lower

_PRONOUN = re.compile(r"\b(?:it|its|they|their|this|these|which)\b", re.I)
_FIRST_WORD = re.compile(r"\W*\w+")


@dataclass(frozen=True)
class _Linked:
    start: int  # offsets into the segment
    end: int
    cui: str


@dataclass(frozen=True)
class ReportInput:
    study_id: str  # pseudonym
    findings: str | None
    impression: str | None = None
    source: str = ""


@dataclass
class ReportResult:
    study_id: str
    clauses: list[dict] = field(default_factory=list)
    anatomy_texts: list[dict] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    rejection: tuple[str, str] | None = None  # (reason, detail)


def load_lexicon(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class ReportProcessor:
    def __init__(self, config: Mapping[str, Any], lexicon: Mapping[str, Any], linker=None):
        self.config = dict(config)
        self.anatomy_lexicon = AnatomyLexicon(
            lexicon["anatomy_terms"], lexicon.get("anatomy_weak_terms"), lexicon.get("anatomy_exclude") or [])
        defs = finding_defs(lexicon["findings"], lexicon.get("term_macros"))
        self.finding_defs = {d.key: d for d in defs}
        self.matcher = FindingMatcher(defs)
        # no word limit: the clause is a trigger's scope
        self.assertion = AssertionRules(report_assertion_rules(lexicon.get("assertion_rules")))
        self.historic = historic_rules(lexicon.get("historic_rules"))
        self.normal = NormalStatements()
        self.splitter = SectionSplitter(
            None, self.config["impression_markers"], header_anatomy=self.anatomy_lexicon.header_anatomy)
        self.rules = label_rules(self.config["labels"])
        self.anatomies = list(self.config["anatomies"])
        # lexicon anatomy -> output anatomies (the segment stage's names); identity where
        # the names agree, none (sentences only) for e.g. mediastinum without a mask.
        self.aliases = {}
        for name in self.anatomy_lexicon.anatomies:
            target = self.config["anatomy_aliases"].get(name, name)
            targets = [target] if isinstance(target, str) else list(target or [])
            self.aliases[name] = [t for t in targets if t in self.anatomies]
        self.anatomy_names = dict(self.config["anatomy_names"])
        self.anatomy_cuis = dict(self.config["anatomy_cuis"])
        self.finding_cuis = {k: d.cui for k, d in self.finding_defs.items()}
        self.finding_cuis.update({k: v for k, v in self.config["finding_cuis"].items() if v})
        self.cui_to_finding = {v: k for k, v in self.finding_cuis.items() if v}
        self.finding_names = {k: d.name for k, d in self.finding_defs.items()}
        self.uncertain_as_present = self.config["uncertain_as_present"]
        self.description_sections = set(self.config["description_sections"])
        self.fallback_sections = set(self.config["description_fallback_sections"])
        self.abnormal_template = self.config["abnormal_template"]
        self.label_sections = set(self.config["label_sections"])
        self.template = self.config["default_template"]
        self.max_report_chars = self.config["max_report_chars"]
        self.max_sentence_chars = self.config["max_sentence_chars"]
        self.use_scispacy_tokenizer = self.config["scispacy_tokenizer"]
        self.linker = linker
        self._link_cache: dict[str, list] = {}
        self.link_cache_size = self.config["link_cache_size"]  # 0: no cache
        self.linker_scope = self.config["linker_scope"]
        if self.linker_scope not in ("all", "unresolved"):
            raise ValueError(f"split_reports.linker_scope must be all or unresolved, not {self.linker_scope!r}")

    # -- one batch -----------------------------------------------------------------
    def process(self, reports: Sequence[ReportInput]) -> list[ReportResult]:
        results = [ReportResult(r.study_id) for r in reports]
        segments_per_report = []
        for report, result in zip(reports, results):
            result.rejection = rejection_reason(report.findings, report.impression, self.max_report_chars)
            findings, impression = unescape_entities(report.findings), unescape_entities(report.impression)
            if not result.rejection:  # an entity may have been all there was (&#0;, &nbsp;)
                result.rejection = rejection_reason(findings, impression)
            segments = [] if result.rejection else self.splitter.split(findings, impression)
            segments_per_report.append(segments)
        flat = [seg.text for segs in segments_per_report for seg in segs]
        split = split_sentences(flat, self.use_scispacy_tokenizer, max_chars=self.max_sentence_chars)
        # Each lexicon runs once over a whole segment; clauses take theirs by offset.
        all_scans = [self._scan(text) for text in flat]
        linked = iter(self._link_segments(all_scans, split))
        sentences, scans = iter(split), iter(all_scans)
        for report, result, segments in zip(reports, results, segments_per_report):
            per_segment = [next(sentences) for _ in segments]
            seg_scans = [next(scans) for _ in segments]
            links = [next(linked) for _ in segments]
            if result.rejection:
                continue
            self._process_one(result, segments, per_segment, links, seg_scans)
            if not result.clauses:
                result.rejection = ("no_findings", "no findings or impression sentence in the report")
            elif not any(c["section"] in self.label_sections for c in result.clauses):
                result.rejection = ("no_findings", "only history/technique sections, no findings")
            if result.rejection:
                result.clauses, result.anatomy_texts, result.labels = [], [], {}
        return results

    def _scan(self, text: str) -> tuple:
        low = ascii_lower(text)
        return (self.anatomy_lexicon.scan(low), self.matcher.scan(low),
                ClauseScopes(self.assertion.scan(low)), self.normal.scan(low), ClauseScopes(self.historic.scan(low)))

    def _link_segments(self, all_scans, split) -> list[list]:
        """Linker mentions per segment, offsets into the segment.

        Sentences are linked one by one through a cache, since reports repeat their
        normal sentences word for word. linker_scope `unresolved` links only the
        sentences where the lexicon names no anatomy (QuickUMLS costs ~2.5 ms a
        sentence, four times the whole rule engine).
        """
        if self.linker is None:
            return [[] for _ in split]
        if self.linker_scope == "unresolved":
            split = [[s for s in sentences if not self.anatomy_lexicon.pick(scans[0], s.start, s.start + len(s.text))]
                     for sentences, scans in zip(split, all_scans)]
        todo = list(dict.fromkeys(s.text for sentences in split for s in sentences
                                  if s.text not in self._link_cache))
        for text, mentions in zip(todo, self.linker.link_many(todo) if self.link_cache_size else ()):
            if len(self._link_cache) >= self.link_cache_size:
                self._link_cache.pop(next(iter(self._link_cache)))
            self._link_cache[text] = mentions
        out = []
        for sentences in split:
            segment_mentions = []
            for s in sentences:
                for m in self._link_cache.get(s.text) or self.linker.link(s.text):
                    segment_mentions.append(_Linked(m.start + s.start, m.end + s.start, m.cui))
            out.append(segment_mentions)
        return out

    # -- one report ----------------------------------------------------------------
    def _process_one(self, result: ReportResult, segments, per_segment, links, seg_scans) -> None:
        sentence_index = 0
        entries: dict[str, AnatomyText] = {}
        fallback: dict[str, AnatomyText] = {}
        counted: list[tuple[str, list[str]]] = []
        for segment, sentences, linked, scans in zip(segments, per_segment, links, seg_scans):
            previous: list[str] = []
            linked = SortedStarts(linked, lambda m: m.start)
            for sentence in sentences:
                clauses = split_clauses(sentence.text)
                clause_rows = []
                for clause_index, clause in enumerate(clauses):
                    row = self._clause(segment, sentence, clause, linked, previous, scans)
                    row.update(study_id=result.study_id, sentence_index=sentence_index,
                               clause_index=clause_index)
                    clause_rows.append(row)
                    if row["anatomies"] != [OTHER]:
                        previous = row["anatomies"]
                self._collect(segment.section, sentence.text, clause_rows, entries, fallback, counted)
                result.clauses.extend(clause_rows)
                sentence_index += 1
        for anatomy, entry in fallback.items():
            if anatomy not in entries or not entries[anatomy].pieces:
                merged = entries.setdefault(anatomy, AnatomyText(anatomy))
                for piece in entry.pieces:
                    merged.add_piece(piece)
        result.labels = derive_labels(self.rules, counted)
        result.anatomy_texts = [
            dict(study_id=result.study_id, **render(
                a, entries.get(a), self.template, self.anatomy_names.get(a, a.replace("_", " ").capitalize()),
                self.finding_names, self.finding_cuis, self.abnormal_template))
            for a in self.anatomies
        ]

    def _clause(self, segment, sentence, clause, linked, previous, scans) -> dict:
        text = clause.text
        anatomy_scan, finding_scan, trigger_scan, normal_scan, historic_scan = scans
        off = sentence.start + clause.start  # clause offset in the segment
        end = off + len(text)
        hits = self.anatomy_lexicon.pick(anatomy_scan, off, end)
        anatomies = [a for a, _, _ in hits]
        source = "lexicon" if anatomies else ""
        mentions = list(finding_scan.mentions(off, end, sentence.start, sentence.start + len(sentence.text)))
        linked_cuis = []
        for m in linked.between(off, end):  # linker offsets are into the segment
            m_start, m_end = m.start - off, m.end - off
            if m_end > len(text):
                continue
            linked_cuis.append(m.cui)
            if m.cui in self.anatomy_cuis:
                anatomies.append(self.anatomy_cuis[m.cui])
                source = source or "linker"
            key = self.cui_to_finding.get(m.cui)
            if key and not finding_scan.allows(key, m.start, m.end, sentence.start, sentence.start + len(sentence.text)):
                key = None
            if key and not any(x.start < m_end and m_start < x.end for x in mentions):
                mentions.append(FindingMention(key, m_start, m_end, text[m_start:m_end], m.cui, "linker"))
        clause_scan, clause_historic = trigger_scan.within(off, end), historic_scan.within(off, end)
        found = [(m, self._assert(clause_scan, clause_historic, m, off)) for m in mentions]
        # Findings bring their own anatomy ("no pleural effusion" speaks of the pleura).
        named = _unique(anatomies)
        implied = [self.finding_defs[m.key].anatomy for m, _ in found
                   if self.finding_defs[m.key].anatomy and not (self.finding_defs[m.key].relocatable and named)]
        anatomies = _unique([*named, *implied])
        if not named and implied:
            source = "finding"
        if not anatomies and segment.header_anatomy:
            anatomies, source = [segment.header_anatomy], "header"
        if not anatomies and previous and _PRONOUN.search(text):
            anatomies, source = list(previous), "context"
        if not anatomies:
            anatomies, source = [OTHER], "other"
        placed = []
        for m, assertion in found:
            d = self.finding_defs[m.key]
            if d.anatomy and not (d.relocatable and named):
                where = [d.anatomy]
            else:
                where = named or anatomies
            placed.append((m, assertion, where))
        counts_present = {PRESENT} | ({UNCERTAIN} if self.uncertain_as_present else set())
        abnormal = any(a in counts_present for _, a, _ in placed)
        if abnormal:
            status = "abnormal"
        elif self.normal.within(normal_scan, off, end) or any(a == ABSENT for _, a, _ in placed):
            status = "normal"
        else:
            status = "neutral"
        return {
            "section": segment.section,
            "sentence": sentence.text,
            "text": text,
            "start": segment.start + sentence.start + clause.start,
            "end": segment.start + sentence.start + clause.start + len(text),
            "anatomies": anatomies,
            "anatomy_source": source,
            "status": status,
            "present": [m.key for m, a, _ in placed if a == PRESENT],
            "uncertain": [m.key for m, a, _ in placed if a == UNCERTAIN],
            "absent": [m.key for m, a, _ in placed if a == ABSENT],
            "_placed": [(m.key, a, w) for m, a, w in placed],
            "linked_cuis": _unique(linked_cuis),
        }

    def _assert(self, scan: Scan, historic: Scan, mention: FindingMention, off: int) -> str:
        """The assertion engine's decision, and two kinds it cannot see: a trigger inside a
        long term after its first word speaks of that term ("lymph nodes not observed in
        pathological size", "heart size not increased"), and a resolved or historic finding
        ("resolved effusion", "history of pneumonia") is not present now."""
        start, end = mention.start + off, mention.end + off
        decision = self.assertion.decide(scan, start, end)
        if decision == ABSENT:
            return decision
        head = _FIRST_WORD.match(mention.text)
        head_end = start + (head.end() if head else 0)
        inside = [t for t in scan.triggers if head_end <= t.start and t.end <= end]
        if any(t.kind == NEGATION for t in inside) or self.historic.flags(historic, start, end)[0]:
            return ABSENT
        return UNCERTAIN if inside else decision

    def _collect(self, section, sentence_text, rows, entries, fallback, counted) -> None:
        counts_present = {PRESENT} | ({UNCERTAIN} if self.uncertain_as_present else set())
        if section in self.label_sections:
            for row in rows:
                for key, assertion, where in row["_placed"]:
                    if assertion in counts_present:
                        counted.append((key, where))
        target = entries if section in self.description_sections else (
            fallback if section in self.fallback_sections else None)
        if target is None:
            return
        outputs = {id(row): _unique(o for a in row["anatomies"] for o in self._outputs(a)) for row in rows}
        for anatomy in _unique(o for row in rows for o in outputs[id(row)]):
            mine = [row for row in rows if anatomy in outputs[id(row)]]
            entry = target.setdefault(anatomy, AnatomyText(anatomy))
            entry.mentioned = True
            if len(mine) == len(rows):
                entry.add_piece(sentence_text)
            else:
                for row in mine:
                    entry.add_piece(as_sentence(row["text"]))
        # Findings go to the anatomy they were placed in, in any counted section.
        if section in self.label_sections:
            for row in rows:
                for key, assertion, where in row["_placed"]:
                    if assertion in counts_present:
                        for anatomy in _unique(o for a in where for o in self._outputs(a)):
                            entries.setdefault(anatomy, AnatomyText(anatomy)).add_finding(key)

    def _outputs(self, anatomy: str) -> list[str]:
        return self.aliases.get(anatomy, [anatomy] if anatomy in self.anatomies else [])


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
