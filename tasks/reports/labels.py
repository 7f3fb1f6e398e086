"""Report-level labels (the 18 CT-RATE abnormalities) from present findings.

The params table maps each label to finding concepts and, optionally, the anatomies
the finding must lie in: {"Lung nodule": {"findings": ["lung_nodule"], "anatomies": ["lung"]}}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class LabelRule:
    label: str
    findings: frozenset[str]
    anatomies: frozenset[str] | None  # None: anywhere


def label_rules(table: Mapping[str, Mapping]) -> list[LabelRule]:
    rules = []
    for label, entry in table.items():
        findings = frozenset(entry.get("findings") or [])
        if not findings:
            raise ValueError(f"label {label!r} maps to no findings")
        anatomies = entry.get("anatomies")
        rules.append(LabelRule(label, findings, frozenset(anatomies) if anatomies else None))
    return rules


def derive_labels(rules: Iterable[LabelRule], present: Iterable[tuple[str, Iterable[str]]]) -> dict[str, int]:
    """present: (finding key, anatomies it was placed in) of each counted mention."""
    present = [(key, set(anatomies)) for key, anatomies in present]
    out = {}
    for rule in rules:
        hit = any(
            key in rule.findings and (rule.anatomies is None or anatomies & rule.anatomies)
            for key, anatomies in present
        )
        out[rule.label] = int(hit)
    return out
