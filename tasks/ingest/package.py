"""One OA package: read safely, find its JATS, extract metadata, apply the licence policy.

The package is read once as a stream (tasks/ingest/safe_tar.py): members ingest drops
(movies, archives) are checked by their headers and skipped, never held in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from tasks.common.rejection import Rejected
from tasks.common.safe_xml import parse_untrusted_xml
from tasks.ingest import licences
from tasks.ingest.jats_meta import article_metadata, normalise_pmcid
from tasks.ingest.safe_tar import Limits, Member, MemberStore, scan_members, top_folder
from tasks.ingest.sources import PackageSource, open_package

ARTICLE_SUFFIXES = (".nxml", ".xml")

ARTICLE_FIELDS = (
    "pmcid", "pmid", "doi", "title", "journal", "year", "licence", "licence_url",
    "commercial_use_ok", "package_sha256", "source",
)


@dataclass(frozen=True)
class Policy:
    limits: Limits
    max_xml_bytes: int
    allowed_licences: frozenset[str]
    require_commercial_use: bool
    keep_suffixes: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, ingest: dict) -> "Policy":
        return cls(
            limits=Limits(int(ingest["max_member_bytes"]), int(ingest["max_package_bytes"]),
                          int(ingest["max_members"])),
            max_xml_bytes=int(ingest["max_xml_bytes"]),
            allowed_licences=frozenset(ingest["licences"]["allowed"]),
            require_commercial_use=bool(ingest["licences"]["require_commercial_use"]),
            keep_suffixes=tuple(s.lower() for s in ingest.get("keep_suffixes") or ()),
        )

    def keeps(self, name: str) -> bool:
        return not self.keep_suffixes or name.lower().endswith(self.keep_suffixes)

    def reads(self, name: str, size: int) -> bool:
        """Whether a member's bytes are read: kept, or possibly the article or its licence.
        Those sit at the top level, or under the one package folder (not known yet)."""
        if self.keeps(name):
            return True
        if name.count("/") > 1:
            return False
        leaf = name.rsplit("/", 1)[-1]
        return leaf == "license.txt" or (leaf.lower().endswith(ARTICLE_SUFFIXES) and size <= self.max_xml_bytes)


def _pick_nxml(members: Mapping[str, Member]) -> str:
    candidates = sorted(n for n in members if n.lower().endswith(ARTICLE_SUFFIXES) and "/" not in n)
    nxml = [n for n in candidates if n.lower().endswith(".nxml")] or candidates
    if not nxml:
        raise Rejected("missing_nxml", "the package holds no .nxml article file")
    return nxml[0]


def _read(source: PackageSource, policy: Policy) -> tuple[str, dict[str, Member], MemberStore]:
    """(package sha256, every file by its path in the package folder, the store of those read)."""
    with open_package(source, policy.limits.max_package_bytes) as reader:
        files, store = scan_members(reader, policy.limits, policy.reads)
        package_sha256 = reader.hexdigest()
    top = top_folder(m.name for m in files)
    return package_sha256, {(m.name[len(top) + 1:] if top else m.name): m for m in files}, store


def inspect_package(source: PackageSource, policy: Policy) -> tuple[dict, Mapping[str, bytes]]:
    """Validated article row and its kept members (paths relative to the package folder),
    as a mapping that loads one member's bytes at a time."""
    package_sha256, files, store = _read(source, policy)
    nxml_name = _pick_nxml(files)
    nxml = files[nxml_name]
    if nxml.name not in store:  # over max_xml_bytes, so never read
        raise Rejected("xml_too_large", f"the XML is {nxml.size} bytes (cap {policy.max_xml_bytes})")
    meta = article_metadata(parse_untrusted_xml(store[nxml.name], policy.max_xml_bytes))
    pmcid = meta["pmcid"] or normalise_pmcid(source.accession)
    if not pmcid:
        raise Rejected("missing_pmcid", "neither the JATS nor the OA list gives a PMCID")
    licence_file = files.get("license.txt")
    licence_txt = store.get(licence_file.name, b"").decode("utf-8", "replace") if licence_file else ""
    licence = licences.classify(meta["licence_url"], meta["licence_text"] + " " + licence_txt, source.oa_licence)
    if licence not in policy.allowed_licences:
        raise Rejected("licence_not_allowed", f"licence {licence!r} is not in ingest.licences.allowed")
    commercial = licences.commercial_use_ok(licence)
    if policy.require_commercial_use and not commercial:
        raise Rejected("licence_noncommercial", f"licence {licence!r} forbids commercial use")
    row = {
        "pmcid": pmcid,
        "pmid": meta["pmid"],
        "doi": meta["doi"],
        "title": meta["title"],
        "journal": meta["journal"],
        "year": meta["year"],
        "licence": licence,
        "licence_url": meta["licence_url"],
        "commercial_use_ok": commercial,
        "package_sha256": package_sha256,
        "source": source.name,
        "nxml": nxml_name,
    }
    # Supplementary movies and archives are not figures; they would only bloat shards.
    kept = {rel: member.name for rel, member in files.items() if policy.keeps(rel)}
    row["dropped_members"] = sorted(set(files) - set(kept))
    return row, store.view(kept)
