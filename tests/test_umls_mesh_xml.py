"""NLM's MeSH XML as a vocabulary (tasks/umls/mesh_xml.py) and the radiology supplement
(tasks/umls/supplement.py), on XML and TSV the tests write, NLM's own sample record, and
the umls_index stage from a MeSH XML."""
from __future__ import annotations

import gzip
import http.server
import shutil
import threading

import pyarrow.parquet as pq
import pytest

from tasks.common.params import load_params
from tasks.umls import rrf
from tasks.umls.mesh_xml import mesh_xml_to_rrf
from tasks.umls.supplement import RADIOLOGY_SUPPLEMENT, SAB, read_supplement
from tests.conftest import REPO_ROOT

PARAMS = load_params(REPO_ROOT / "params.yaml")


def descriptor(ui: str, name: str, trees=(), terms=(), types=(), extra: str = "") -> str:
    """A DescriptorRecord in NLM's layout; terms: (text, permuted)."""
    tree_xml = "".join(f"<TreeNumber>{t}</TreeNumber>" for t in trees)
    term_xml = "".join(
        f'<Term ConceptPreferredTermYN="N" IsPermutedTermYN="{"Y" if permuted else "N"}" LexicalTag="NON" '
        f'RecordPreferredTermYN="N"><TermUI>T{i:06d}</TermUI><String>{text}</String></Term>'
        for i, (text, permuted) in enumerate(terms))
    type_xml = "".join(f"<SemanticType><SemanticTypeUI>{tui}</SemanticTypeUI><SemanticTypeName>{n}"
                       f"</SemanticTypeName></SemanticType>" for tui, n in types)
    return (f'<DescriptorRecord DescriptorClass="1">\n <DescriptorUI>{ui}</DescriptorUI>\n'
            f" <DescriptorName><String>{name}</String></DescriptorName>\n{extra}"
            f" <TreeNumberList>{tree_xml}</TreeNumberList>\n"
            f' <ConceptList><Concept PreferredConceptYN="Y"><ConceptUI>M1</ConceptUI>'
            f"<ConceptName><String>{name}</String></ConceptName>"
            f"{'<SemanticTypeList>' + type_xml + '</SemanticTypeList>' if types else ''}<TermList>"
            f'<Term ConceptPreferredTermYN="Y" IsPermutedTermYN="N" LexicalTag="NON" RecordPreferredTermYN="Y">'
            f"<TermUI>T9</TermUI><String>{name}</String></Term>{term_xml}</TermList></Concept></ConceptList>\n"
            f"</DescriptorRecord>\n")


def record_set(*records: str, doctype: str = '<!DOCTYPE DescriptorRecordSet SYSTEM '
                                              '"https://www.nlm.nih.gov/databases/dtd/nlmdescriptorrecordset_20240101.dtd">',
               root: str = "DescriptorRecordSet") -> str:
    return f'<?xml version="1.0"?>\n{doctype}\n<{root} LanguageCode="eng">\n{"".join(records)}</{root}>\n'


PNEUMOTHORAX = descriptor("D011030", "Pneumothorax", ["C08.381.520.702"], [("Pneumothoraces", False)])
ARTHRITIS = descriptor("D001172", "Arthritis, Rheumatoid", ["C05.550.114.154", "C20.111.199"],
                       [("Rheumatoid Arthritis", False), ("Arthritis Deformans", False),
                        ("Deformans, Arthritis", True)])


def read_meta(meta):
    conso = list(rrf.read_mrconso(meta / "MRCONSO.RRF"))
    names = {}
    for row in conso:
        names.setdefault(row["CUI"], []).append((row["STR"], row["TTY"], row["SAB"]))
    return names, rrf.read_mrsty(meta / "MRSTY.RRF")


def convert(path, meta, **options):
    options = {"permute_inverted": True, "permuted_terms": False, **options}
    return mesh_xml_to_rrf(path, meta, **options)


def test_every_term_of_every_descriptor_with_tree_types(tmp_path):
    path = tmp_path / "desc.xml"
    path.write_text(record_set(ARTHRITIS, PNEUMOTHORAX), encoding="utf-8")
    result = convert(path, tmp_path / "META")
    names, types = read_meta(tmp_path / "META")
    assert result["descriptor_records_read"] == result["descriptor_records_converted"] == 2
    assert not result["rejected"]
    # the preferred name first (MH), entry terms, no permuted term unless asked, no repeat
    assert names["D001172"] == [("Arthritis, Rheumatoid", "MH", "MSH"), ("Rheumatoid Arthritis", "ET", "MSH"),
                                ("Arthritis Deformans", "ET", "MSH")]
    assert names["D011030"] == [("Pneumothorax", "MH", "MSH"), ("Pneumothoraces", "ET", "MSH")]
    assert types["D001172"] == [("T047", "Disease or Syndrome")] and types["D011030"] == [("T047", "Disease or Syndrome")]
    concepts = list(rrf.read_mrconso(tmp_path / "META" / "MRCONSO.RRF"))
    assert [r["CUI"] for r in concepts if r["TS"] == "P" and r["ISPREF"] == "Y"] == ["D001172", "D011030"]
    assert rrf.read_semgroups(tmp_path / "META" / "SemGroups.txt")["T047"] == ("DISO", "Disorders")
    # permuted terms as a param; the uninverted form of a term only once
    convert(path, tmp_path / "META2", permuted_terms=True)
    names, _ = read_meta(tmp_path / "META2")
    assert ("Deformans, Arthritis", "PM", "MSH") in names["D001172"]
    convert(path, tmp_path / "META3", permute_inverted=False)
    names3, _ = read_meta(tmp_path / "META3")
    assert [n for n, *_ in names3["D001172"]] == ["Arthritis, Rheumatoid", "Rheumatoid Arthritis", "Arthritis Deformans"]


def test_the_xmls_own_semantic_types_win_over_the_tree(tmp_path):
    path = tmp_path / "desc.xml"
    path.write_text(record_set(descriptor("D000001", "Calcimycin", ["D03.438.221.173"],
                                          types=[("T109", "Organic Chemical"), ("T195", "Antibiotic")])),
                    encoding="utf-8")
    convert(path, tmp_path / "META")
    _, types = read_meta(tmp_path / "META")
    assert types["D000001"] == [("T109", "Organic Chemical"), ("T195", "Antibiotic")]
    groups = rrf.read_semgroups(tmp_path / "META" / "SemGroups.txt")
    # a type the MeSH tree never gives has no group here (NLM's SemGroups.txt is not shipped)
    assert groups["T109"] == ("CHEM", "Chemicals & Drugs") and "T195" not in groups


def test_gzip_input_gives_the_same_vocabulary(tmp_path):
    text = record_set(ARTHRITIS, PNEUMOTHORAX)
    (tmp_path / "desc.xml").write_text(text, encoding="utf-8")
    (tmp_path / "desc.bin").write_bytes(gzip.compress(text.encode("utf-8")))  # found by its magic, not its name
    convert(tmp_path / "desc.xml", tmp_path / "plain")
    convert(tmp_path / "desc.bin", tmp_path / "gzipped")
    for name in ("MRCONSO.RRF", "MRSTY.RRF", "SemGroups.txt"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "gzipped" / name).read_bytes()


def test_malformed_records_are_rejected_with_their_reason(tmp_path):
    path = tmp_path / "desc.xml"
    no_ui = PNEUMOTHORAX.replace("<DescriptorUI>D011030</DescriptorUI>", "")
    bad_ui = PNEUMOTHORAX.replace("D011030", "X-11030")
    no_name = ARTHRITIS.replace("<DescriptorName><String>Arthritis, Rheumatoid</String></DescriptorName>", "")
    path.write_text(record_set(ARTHRITIS, no_ui, bad_ui, no_name, ARTHRITIS, PNEUMOTHORAX), encoding="utf-8")
    result = convert(path, tmp_path / "META")
    assert [(r.record, r.reason) for r in result["rejected"]] == [
        (2, "mesh_record_without_ui"), (3, "malformed_mesh_ui"), (4, "mesh_record_without_name"),
        (5, "duplicate_mesh_ui")]
    assert result["descriptor_records_read"] == 6 and result["descriptor_records_converted"] == 2
    names, _ = read_meta(tmp_path / "META")
    assert sorted(names) == ["D001172", "D011030"]


def test_malformed_xml_keeps_the_records_before_it(tmp_path):
    path = tmp_path / "desc.xml.gz"
    text = record_set(ARTHRITIS, PNEUMOTHORAX)
    cut = text.index("<DescriptorUI>D011030") + 20
    path.write_bytes(gzip.compress(text[:cut].encode("utf-8")))  # truncated in the second record
    result = convert(path, tmp_path / "META")
    [rejection] = result["rejected"]
    assert rejection.record == 2 and rejection.reason == "malformed_mesh_xml" and "1 records read" in rejection.detail
    names, _ = read_meta(tmp_path / "META")
    assert sorted(names) == ["D001172"]
    # a file that is not a descriptor XML at all is a configuration error, not a vocabulary
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?><PubmedArticleSet/>", encoding="utf-8")
    with pytest.raises(ValueError, match="DescriptorRecord"):
        convert(other, tmp_path / "META2")


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        body = b'<!ENTITY secret "FETCHED">'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_no_dtd_or_entity_is_loaded_fetched_or_expanded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT", encoding="utf-8")
    # 1. an internal subset declaring an external entity: the file is refused whole, nothing read
    evil = PNEUMOTHORAX.replace("<String>Pneumothoraces</String>", "<String>&xxe;</String>")
    path = tmp_path / "entities.xml"
    path.write_text(record_set(evil, doctype=f'<!DOCTYPE DescriptorRecordSet [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'),
                    encoding="utf-8")
    result = convert(path, tmp_path / "META1")
    assert [(r.record, r.reason) for r in result["rejected"]] == [(0, "xml_entities_forbidden")]
    assert "SECRET" not in (tmp_path / "META1" / "MRCONSO.RRF").read_text(encoding="utf-8")
    # 2. an external DTD (local file, and one served over HTTP) that would declare the entity: never
    #    loaded, so the reference stays unexpanded and the server sees no request
    (tmp_path / "evil.dtd").write_text(f'<!ENTITY secret SYSTEM "{secret.as_uri()}">', encoding="utf-8")
    server = http.server.HTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for i, system in enumerate(["evil.dtd", f"http://127.0.0.1:{server.server_port}/desc.dtd"]):
            body = PNEUMOTHORAX.replace("<String>Pneumothoraces</String>", "<String>Lung &secret; collapse</String>")
            path = tmp_path / f"external{i}.xml"
            path.write_text(record_set(body, doctype=f'<!DOCTYPE DescriptorRecordSet SYSTEM "{system}">'),
                            encoding="utf-8")
            result = convert(path, tmp_path / f"META{i + 2}")
            text = (tmp_path / f"META{i + 2}" / "MRCONSO.RRF").read_text(encoding="utf-8")
            assert "SECRET" not in text and "FETCHED" not in text and "Pneumothorax" in text
            assert not result["rejected"]
    finally:
        server.shutdown()
    assert _CountingHandler.requests == []


SUPPLEMENTARY = """<?xml version="1.0"?>
<!DOCTYPE SupplementalRecordSet SYSTEM "https://www.nlm.nih.gov/databases/dtd/nlmsupplementalrecordset_20240101.dtd">
<SupplementalRecordSet LanguageCode="eng">
<SupplementalRecord SCRClass="1">
 <SupplementalRecordUI>C027260</SupplementalRecordUI>
 <SupplementalRecordName><String>pirarubicin</String></SupplementalRecordName>
 <HeadingMappedToList><HeadingMappedTo><DescriptorReferredTo><DescriptorUI>*D004317</DescriptorUI>
  <DescriptorName><String>Doxorubicin</String></DescriptorName></DescriptorReferredTo></HeadingMappedTo></HeadingMappedToList>
 <ConceptList><Concept PreferredConceptYN="Y"><ConceptUI>M0051256</ConceptUI><ConceptName><String>pirarubicin</String></ConceptName>
  <TermList><Term ConceptPreferredTermYN="Y" IsPermutedTermYN="N" LexicalTag="NON" RecordPreferredTermYN="Y"><TermUI>T1</TermUI><String>pirarubicin</String></Term>
  <Term ConceptPreferredTermYN="N" IsPermutedTermYN="N" LexicalTag="NON" RecordPreferredTermYN="N"><TermUI>T2</TermUI><String>4'-O-tetrahydropyranyladriamycin</String></Term></TermList>
 </Concept></ConceptList>
</SupplementalRecord>
<SupplementalRecord SCRClass="1">
 <SupplementalRecordUI>C000001</SupplementalRecordUI>
 <SupplementalRecordName><String>no heading</String></SupplementalRecordName>
</SupplementalRecord>
<SupplementalRecord SCRClass="1">
 <SupplementalRecordUI>C000002</SupplementalRecordUI>
 <SupplementalRecordName><String>unknown heading</String></SupplementalRecordName>
 <HeadingMappedToList><HeadingMappedTo><DescriptorReferredTo><DescriptorUI>D999999</DescriptorUI></DescriptorReferredTo></HeadingMappedTo></HeadingMappedToList>
</SupplementalRecord>
</SupplementalRecordSet>
"""
DOXORUBICIN = descriptor("D004317", "Doxorubicin", ["D02.455.426.559.389.657.410.595.500.500"], [("Adriamycin", False)],
                         extra=" <PharmacologicalActionList><PharmacologicalAction><DescriptorReferredTo>"
                               "<DescriptorUI>D000903</DescriptorUI><DescriptorName><String>Antibiotics, Antineoplastic"
                               "</String></DescriptorName></DescriptorReferredTo></PharmacologicalAction>"
                               "</PharmacologicalActionList>\n")


def test_supplementary_records_are_typed_by_their_headings(tmp_path):
    (tmp_path / "desc.xml").write_text(record_set(DOXORUBICIN), encoding="utf-8")
    (tmp_path / "supp.xml").write_text(SUPPLEMENTARY, encoding="utf-8")
    result = convert(tmp_path / "desc.xml", tmp_path / "META", supplementary=tmp_path / "supp.xml")
    names, types = read_meta(tmp_path / "META")
    assert names["C027260"] == [("pirarubicin", "NM", "MSH"), ("4'-O-tetrahydropyranyladriamycin", "SY", "MSH")]
    assert types["C027260"] == types["D004317"] == [("T109", "Organic Chemical")]
    # a name of a descriptor this record only refers to is not one of its names
    assert "Antibiotics, Antineoplastic" not in {n for rows in names.values() for n, *_ in rows}
    assert [(r.path.name, r.record, r.reason) for r in result["rejected"]] == [
        ("supp.xml", 2, "supplementary_without_heading"), ("supp.xml", 3, "heading_not_in_descriptors")]
    assert result["supplementary_records_read"] == 3 and result["supplementary_records_converted"] == 1


def test_nlm_sample_record_without_its_dtd(shared_data, tmp_path):
    """NLM's own complete record (every element, a DOCTYPE naming desc2006.dtd), read from a folder
    without the DTD: only the record's own names, the XML's own semantic types."""
    sample = tmp_path / "nlm_sample_desc2006.xml"
    shutil.copy(shared_data / "umls" / "mesh2024" / "nlm_sample_desc2006.xml", sample)
    assert b'SYSTEM "desc2006.dtd"' in sample.read_bytes()[:200]
    result = convert(sample, tmp_path / "META")
    assert result["descriptor_records_converted"] == 1 and not result["rejected"]
    names, types = read_meta(tmp_path / "META")
    assert list(names) == ["D000001"]
    assert [n for n, *_ in names["D000001"]] == ["Calcimycin", "A-23187", "Antibiotic A23187", "A23187"]
    assert types["D000001"] == [("T109", "Organic Chemical"), ("T195", "Antibiotic")]  # not the tree's T109 alone
    convert(sample, tmp_path / "META2", permuted_terms=True)
    names, _ = read_meta(tmp_path / "META2")
    assert {"A 23187", "A23187, Antibiotic"} <= {n for n, *_ in names["D000001"]}


# -- the radiology supplement ----------------------------------------------------------------------
def test_radiology_supplement_file_is_well_formed():
    supplement = read_supplement(RADIOLOGY_SUPPLEMENT)
    assert not supplement.bad and 20 <= len(supplement.entries) <= 40
    ids = [e.id for e in supplement.entries]
    assert len(set(ids)) == len(ids) and all(i.startswith("RAD") for i in ids)
    from tasks.umls.mesh import semantic_groups

    assert {semantic_groups()[e.tui][0] for e in supplement.entries} == {"DISO"}
    names = {e.name.lower() for e in supplement.entries} | {s.lower() for e in supplement.entries for s in e.synonyms}
    assert {"consolidation", "ground-glass opacity", "honeycombing", "tree-in-bud", "adenopathy"} <= names


def test_radiology_supplement_rejects_bad_lines(tmp_path):
    path = tmp_path / "supplement.tsv"
    path.write_text("id\tname\tsynonyms\tmesh_ui\ttui\n"
                    "RAD1\tConsolidation\tairspace consolidation\t\tT033\n"
                    "RAD2\tAdenopathy\t\tD000072281\tT033\n"
                    "RAD1\tAgain\t\t\tT033\n"
                    "RAD3\tNo type\t\t\tT999\n"
                    "RAD4\tBad mesh\t\tC12345\tT033\n"
                    "only two\tfields\n", encoding="utf-8")
    supplement = read_supplement(path)
    assert [e.id for e in supplement.entries] == ["RAD1", "RAD2"]
    assert [(line, reason) for line, reason, _ in supplement.bad] == [
        (4, "duplicate_supplement_id"), (5, "malformed_supplement_line"), (6, "malformed_supplement_line"),
        (7, "malformed_supplement_line")]


def test_supplement_entries_join_their_descriptor_or_stand_alone(tmp_path):
    lymph = descriptor("D000072281", "Lymphadenopathy", ["C15.604.338"], [("Lymph Node Enlargement", False)])
    (tmp_path / "desc.xml").write_text(record_set(lymph, PNEUMOTHORAX), encoding="utf-8")
    supplement = tmp_path / "supplement.tsv"
    supplement.write_text("RAD1\tTree-in-bud pattern\ttree-in-bud\t\tT033\n"
                          "RAD2\tAdenopathy\tenlarged lymph nodes\tD000072281\tT033\n"
                          "RAD3\tCollapsed lung\t\tD001261\tT033\n", encoding="utf-8")  # D001261 not in this MeSH
    result = convert(tmp_path / "desc.xml", tmp_path / "META", supplement=supplement)
    names, types = read_meta(tmp_path / "META")
    assert names["D000072281"][-2:] == [("Adenopathy", "SY", SAB), ("enlarged lymph nodes", "SY", SAB)]
    assert names["RAD1"] == [("Tree-in-bud pattern", "PT", SAB), ("tree-in-bud", "SY", SAB)]
    assert names["RAD3"] == [("Collapsed lung", "PT", SAB)]  # its descriptor is missing: a concept of its own
    assert types["RAD1"] == types["RAD3"] == [("T033", "Finding")] and "RAD2" not in names
    assert result["supplement"].mapped == 1
    assert rrf.read_semgroups(tmp_path / "META" / "SemGroups.txt")["T033"] == ("DISO", "Disorders")


# -- the stage ---------------------------------------------------------------------------------------
def test_umls_index_flow_from_mesh_xml(repo_root, tmp_path):
    from flows._stage import run_stage
    from flows.umls_index import umls_index_flow
    from tasks.linking.linker import ConceptLinker
    from tests.conftest import stage_params

    lymph = descriptor("D000072281", "Lymphadenopathy", ["C15.604.338"])
    no_ui = PNEUMOTHORAX.replace("<DescriptorUI>D011030</DescriptorUI>", "")
    (tmp_path / "desc2024.xml.gz").write_bytes(gzip.compress(record_set(ARTHRITIS, no_ui, lymph, PNEUMOTHORAX,
                                                                        DOXORUBICIN).encode("utf-8")))
    (tmp_path / "supp2024.xml").write_text(SUPPLEMENTARY, encoding="utf-8")
    supplement = tmp_path / "radiology.tsv"
    supplement.write_text(RADIOLOGY_SUPPLEMENT.read_text(encoding="utf-8") + "RAD00001\tDuplicate\t\t\tT033\n",
                          encoding="utf-8")
    params = stage_params(repo_root, **{"umls_index.mesh_xml": tmp_path / "desc2024.xml.gz",
                                        "umls_index.mesh_supplementary_xml": tmp_path / "supp2024.xml",
                                        "umls_index.radiology_supplement": supplement,
                                        "umls_index.output_dir": tmp_path / "idx"})
    summary = run_stage(umls_index_flow, params)
    entries = read_supplement(RADIOLOGY_SUPPLEMENT).entries
    assert summary["mesh_descriptors"] == 4 and summary["mesh_supplementary_records"] == 1
    assert summary["rejected_by_reason"] == {"mesh_record_without_ui": 1, "supplementary_without_heading": 1,
                                             "heading_not_in_descriptors": 1, "duplicate_supplement_id": 1}
    assert summary["radiology_supplement_mapped"] == 1  # Adenopathy; the other descriptors are not in this MeSH
    unmapped = [e for e in entries if e.mesh_ui != "D000072281"]
    assert summary["items_out"] == 5 + len(unmapped)  # 4 descriptors, pirarubicin, the stand-alone findings
    n_terms = 3 + 1 + 2 + 2 + 2 + sum(1 + len(e.synonyms) for e in entries)  # arthritis, lymph, ..., pirarubicin
    assert summary["items_in"] == summary["terms"] + 4 and summary["terms"] == n_terms
    rejected = pq.read_table(tmp_path / "idx" / "rejected.parquet").to_pylist()
    assert sorted(r["item"] for r in rejected) == ["desc2024.xml.gz:2", "radiology.tsv:41", "supp2024.xml:2",
                                                   "supp2024.xml:3"]
    assert all(r["source"].endswith(r["item"].rpartition(":")[0]) for r in rejected)
    concepts = {r["cui"]: r for r in pq.read_table(tmp_path / "idx" / "concepts.parquet").to_pylist()}
    assert concepts["RAD00004"]["semantic_group"] == "DISO" and concepts["RAD00004"]["sources"] == [SAB]
    assert concepts["D000072281"]["sources"] == [SAB, "MSH"]
    linker = ConceptLinker.from_index(tmp_path / "idx", {**PARAMS["link_concepts"], "semantic_groups": None,
                                                         "stop_concepts": []})
    found = {(m.text, m.cui) for m in linker.link(
        "Chest CT: tree-in-bud opacities and mediastinal adenopathy; no pneumothorax. Pirarubicin given.")}
    assert {("tree-in-bud opacities", "RAD00004"), ("adenopathy", "D000072281"), ("pneumothorax", "D011030"),
            ("Pirarubicin", "C027260")} <= found


def test_umls_index_refuses_contradictory_sources(repo_root, tmp_path):
    from tasks.umls import stage

    cfg = {**PARAMS["umls_index"], "run_root": str(tmp_path)}
    with pytest.raises(ValueError, match="not both"):
        stage.plan({**cfg, "mesh_xml": "desc.xml", "mesh_tree": "tree.txt"}, tmp_path / "out")
    with pytest.raises(ValueError, match="mesh_xml"):
        stage.plan({**cfg, "mesh_supplementary_xml": "supp.xml"}, tmp_path / "out")
    with pytest.raises(ValueError, match="MeSH vocabulary"):
        stage.plan({**cfg, "radiology_supplement": str(RADIOLOGY_SUPPLEMENT)}, tmp_path / "out")
