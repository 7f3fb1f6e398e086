"""One OA package: read safely, find its JATS, extract metadata, apply the licence policy."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.common.hashing import sha256_bytes
from tasks.common.rejection import Rejected
from tasks.common.safe_xml import parse_untrusted_xml
from tasks.ingest import licences
from tasks.ingest.jats_meta import article_metadata, normalise_pmcid
from tasks.ingest.safe_tar import Limits, read_members, strip_top_folder
from tasks.ingest.sources import PackageSource, read_bytes

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


def _pick_nxml(members: dict[str, bytes]) -> str:
    candidates = sorted(n for n in members if n.lower().endswith((".nxml", ".xml")) and "/" not in n)
    nxml = [n for n in candidates if n.lower().endswith(".nxml")] or candidates
    if not nxml:
        raise Rejected("missing_nxml", "the package holds no .nxml article file")
    return nxml[0]


def inspect_package(source: PackageSource, policy: Policy) -> tuple[dict, dict[str, bytes]]:
    """Validated article row and its members (paths relative to the package folder)."""
    data = read_bytes(source, policy.limits.max_package_bytes)
    package_sha256 = sha256_bytes(data)
    members = strip_top_folder(read_members(data, policy.limits))
    nxml_name = _pick_nxml(members)
    meta = article_metadata(parse_untrusted_xml(members[nxml_name], policy.max_xml_bytes))
    pmcid = meta["pmcid"] or normalise_pmcid(source.accession)
    if not pmcid:
        raise Rejected("missing_pmcid", "neither the JATS nor the OA list gives a PMCID")
    licence_txt = members.get("license.txt", b"").decode("utf-8", "replace")
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
    if policy.keep_suffixes:
        # Supplementary movies and archives are not figures; they would only bloat shards.
        kept = {n: d for n, d in members.items() if n.lower().endswith(policy.keep_suffixes)}
        row["dropped_members"] = sorted(set(members) - set(kept))
        members = kept
    else:
        row["dropped_members"] = []
    return row, members
