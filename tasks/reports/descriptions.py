"""One description per (study, anatomy): its sentences in report order, normal or not,
its present findings; anatomies the report never mentions get the params template."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AnatomyText:
    anatomy: str
    pieces: list[str] = field(default_factory=list)
    finding_keys: list[str] = field(default_factory=list)
    mentioned: bool = False

    def add_piece(self, text: str) -> None:
        if text and (not self.pieces or self.pieces[-1] != text):
            self.pieces.append(text)

    def add_finding(self, key: str) -> None:
        if key not in self.finding_keys:
            self.finding_keys.append(key)


def as_sentence(text: str) -> str:
    """A clause cut from a sentence, written as a sentence of its own."""
    text = text.strip().rstrip(",;:")
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def render(anatomy: str, entry: AnatomyText | None, template: str, display_name: str,
           finding_names: dict[str, str], finding_cuis: dict[str, str | None],
           abnormal_template: str = "{anatomy}: {findings}.") -> dict:
    if entry is None or not entry.pieces:
        keys = entry.finding_keys if entry is not None else []
        # Findings known only from sections not used for descriptions: name them.
        chosen = abnormal_template if keys else template
        description = chosen.format(anatomy=display_name,
                                    findings=", ".join(finding_names[k].lower() for k in keys))
        defaulted = True
    else:
        keys = entry.finding_keys
        description = " ".join(entry.pieces)
        defaulted = False
    return {
        "anatomy": anatomy,
        "description": description,
        "is_normal": not keys,
        "finding_cuis": [finding_cuis[k] for k in keys if finding_cuis.get(k)],
        "finding_names": [finding_names[k] for k in keys],
        "finding_keys": list(keys),
        "defaulted": defaulted,
    }
