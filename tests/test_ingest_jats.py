"""JATS metadata on real PMC files, and refusal of unsafe XML."""
import pytest

from tasks.common.rejection import Rejected
from tasks.common.safe_xml import parse_untrusted_xml
from tasks.ingest.jats_meta import article_metadata
from tasks.ingest.licences import classify
from tasks.ingest.safe_tar import Limits, read_members, strip_top_folder

CAP = 1 << 25

EXPECTED_NXML = {
    "1471-2180-11-174.nxml": ("PMC3166277", "21810267", "10.1186/1471-2180-11-174", 2011, "BMC Microbiology", "cc-by"),
    "1472-6831-8-11.nxml": ("PMC2329613", "18405359", "10.1186/1472-6831-8-11", 2008, "BMC Oral Health", "cc-by"),
    "ehp-116-1694.nxml": ("PMC2599765", "19079722", "10.1289/ehp.11570", 2008, "Environmental Health Perspectives", "pd"),
    "mds526.nxml": ("PMC3574550", "23149571", "10.1093/annonc/mds526", 2012, "Annals of Oncology", "cc-by-nc"),
    "pntd.0002065.nxml": ("PMC3585041", "23469300", "10.1371/journal.pntd.0002065", 2013,
                          "PLoS Neglected Tropical Diseases", "cc-by"),
    "pone.0000217.nxml": ("PMC1790863", "17299597", "10.1371/journal.pone.0000217", 2007, "PLoS ONE", "cc-by"),
    "pone.0046493.nxml": ("PMC3460867", "23029536", "10.1371/journal.pone.0046493", 2012, "PLoS ONE", "cc-by"),
}


def _licence(meta):
    return classify(meta["licence_url"], meta["licence_text"])


@pytest.mark.parametrize("name", sorted(EXPECTED_NXML))
def test_real_pmc_nxml_metadata(shared_data, name):
    meta = article_metadata(parse_untrusted_xml((shared_data / "pmc" / "nxml" / name).read_bytes(), CAP))
    got = (meta["pmcid"], meta["pmid"], meta["doi"], meta["year"], meta["journal"], _licence(meta))
    assert got == EXPECTED_NXML[name]
    assert meta["title"] and "  " not in meta["title"]


def test_real_pmc_package(shared_data):
    data = (shared_data / "pmc" / "packages" / "pmc2924383.tar.gz").read_bytes()
    members = strip_top_folder(read_members(data, Limits(1 << 28, 1 << 31, 5000)))
    assert {"pone.0012255.nxml", "pone.0012255.pdf", "license.txt", "pone.0012255.g001.jpg"} <= set(members)
    meta = article_metadata(parse_untrusted_xml(members["pone.0012255.nxml"], CAP))
    assert (meta["pmcid"], meta["pmid"], meta["year"]) == ("PMC2924383", "20808861", 2010)
    assert meta["title"] == "Sounds Move a Static Visual Object"
    assert _licence(meta) == "cc-by"


def test_publisher_jats_without_pmcid(shared_data):
    """Publisher JATS (eLife, PLOS) carry DOIs but no PMCID; ingest then needs the OA list's."""
    for path in sorted((shared_data / "pmc" / "jats").glob("*/main.jats.xml")):
        meta = article_metadata(parse_untrusted_xml(path.read_bytes(), CAP))
        assert meta["pmcid"] is None
        assert meta["doi"].startswith("10.")
        assert 2010 <= meta["year"] <= 2021
        assert _licence(meta) in {"cc-by", "cc0"}


def test_entity_bomb_is_refused_before_expansion():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">'
            + b"".join(b'<!ENTITY x%d "&x%s;&x%s;&x%s;&x%s;&x%s;&x%s;&x%s;&x%s;">' % ((i,) + (b"" if i == 1 else b"%d" % (i - 1),) * 8) for i in range(1, 30))
            + b"]><article>&x29;</article>")
    with pytest.raises(Rejected) as caught:
        parse_untrusted_xml(bomb, CAP)
    assert caught.value.reason == "xml_entities_forbidden"


def test_external_entities_are_not_fetched(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY s SYSTEM "file://{secret}">]>'
           "<article><front><article-meta><title-group><article-title>&s;</article-title>"
           "</title-group></article-meta></front></article>").encode()
    with pytest.raises(Rejected) as caught:
        parse_untrusted_xml(xxe, CAP)
    assert caught.value.reason == "xml_entities_forbidden"


def test_oversized_and_malformed_xml():
    with pytest.raises(Rejected) as caught:
        parse_untrusted_xml(b"<article>" + b"x" * 100 + b"</article>", 50)
    assert caught.value.reason == "xml_too_large"
    with pytest.raises(Rejected) as caught:
        parse_untrusted_xml(b"<article><front></article>", CAP)
    assert caught.value.reason == "malformed_xml"
    with pytest.raises(Rejected) as caught:
        article_metadata(parse_untrusted_xml(b"<book/>", CAP))
    assert caught.value.reason == "not_jats"
