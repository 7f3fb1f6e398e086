"""Deliberately broken OA packages; each must end in ingest's rejected table with its reason."""
from __future__ import annotations

import tarfile
from dataclasses import replace

from tasks.sample.articles import build_article, folder_name, oa_row, package_members, package_relpath, pmcid_of
from tasks.sample.packages import tar_gz

BROKEN_BASE = 9_990_001

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE article [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<article><front><article-meta><article-id pub-id-type="pmc">%s</article-id>
<title-group><article-title>&lol9;</article-title></title-group></article-meta></front></article>
"""


def _base(params: dict, slot: int):
    """A valid article (figures and all) re-labelled with a broken-range PMCID."""
    article, images, sizes = build_article(params, 1000 + slot)
    article = replace(article, pmcid=f"PMC{BROKEN_BASE + slot}")
    folder = folder_name(article, 1000 + slot)
    return article, images, sizes, folder


def broken_packages(params: dict) -> list[tuple[str, bytes, str, dict]]:
    """(relative path, bytes, expected rejection reason, OA list row) per broken package."""
    cases = []

    def add(slot: int, reason: str, build):
        article, images, sizes, folder = _base(params, slot)
        members = package_members(article, images, sizes, folder, with_thumbnails=False)
        data = build(article, members, folder)
        relpath = package_relpath(article.pmcid)
        cases.append((relpath, data, reason, oa_row(relpath, article, "CC BY")))

    add(0, "corrupt_archive", lambda a, m, f: (lambda d: d[: len(d) * 3 // 5])(tar_gz(m)))
    add(1, "missing_nxml", lambda a, m, f: tar_gz([x for x in m if not x[0].endswith(".nxml")]))
    add(2, "malformed_xml", lambda a, m, f: tar_gz(
        [(p, d.replace(b"</article-title>", b"") if p.endswith(".nxml") else d) for p, d in m]))
    add(3, "xml_entities_forbidden", lambda a, m, f: tar_gz(
        [(p, BILLION_LAUGHS % a.pmcid.removeprefix("PMC").encode() if p.endswith(".nxml") else d)
         for p, d in m]))
    add(4, "member_path_traversal", lambda a, m, f: tar_gz(m + [(f"{f}/../../escaped.txt", b"owned\n")]))
    add(5, "member_path_absolute", lambda a, m, f: tar_gz(m + [("/tmp/medconcept-absolute.txt", b"owned\n")]))
    add(6, "member_link_escape", lambda a, m, f: tar_gz(m, links=[(f"{f}/passwd", "../../../etc/passwd",
                                                                     tarfile.SYMTYPE)]))

    # No open licence at all: the JATS carries only a copyright statement.
    article, images, sizes, folder = _base(params, 7)
    article = replace(article, licence_type=None, licence_url=None, licence_text="All rights reserved.")
    members = package_members(article, images, sizes, folder, with_thumbnails=False)
    relpath = package_relpath(article.pmcid)
    cases.append((relpath, tar_gz(members), "licence_not_allowed", oa_row(relpath, article, "NO-CC CODE")))

    # The first sample article again, under another path: same PMCID twice.
    article, images, sizes = build_article(params, 0)
    members = package_members(article, images, sizes, folder_name(article, 0), with_thumbnails=True)
    relpath = f"oa_package/zz/dup/{pmcid_of(0)}.tar.gz"
    cases.append((relpath, tar_gz(members), "duplicate_pmcid", oa_row(relpath, article, "CC BY")))
    return cases
