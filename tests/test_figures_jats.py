"""JATS figures: <fig> discovery, caption text, graphic resolution; real publisher and PMC files."""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image

from tasks.common.rejection import Rejected
from tasks.figures import jats_figures
from tasks.figures.jats_figures import choose_graphic, graphic_candidates, parse_figures

XML = b"""<?xml version="1.0"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML">
<body><sec>
<p>Text with <inline-graphic xlink:href="i001"/> and <xref ref-type="fig" rid="f1">Fig 1</xref>.</p>
<table-wrap id="T1"><label>Table 1</label><caption><p>Not a figure.</p></caption></table-wrap>
<fig id="f1"><label>Figure 1.</label>
 <caption><title>Growth of <italic>E. coli</italic>.</title>
  <p>Rate in h<sup>-1</sup>, CO<sub>2</sub> at
     <inline-formula><mml:math><mml:mi>x</mml:mi><mml:mo>=</mml:mo><mml:mn>2</mml:mn></mml:math></inline-formula>
     (see <xref ref-type="bibr" rid="b1">[3]</xref>).</p>
  <p><supplementary-material id="s1"><label>Source data 1.</label><caption><p>Raw counts.</p></caption>
     <media xlink:href="data.csv"/></supplementary-material></p>
 </caption>
 <graphic xlink:href="art.g001"/></fig>
<fig-group id="fg1"><caption><title>Shared group caption.</title></caption>
 <fig id="f2"><label>Figure 2</label><graphic xlink:href="art.g002"/></fig>
 <fig id="f3"><label>Figure 3</label><caption><p>Own <bold>caption</bold> with
   <inline-formula><alternatives><tex-math>a^2</tex-math><mml:math><mml:mi>a</mml:mi></mml:math></alternatives></inline-formula>.</p>
  </caption><graphic xlink:href="art.g003.tif"/></fig>
</fig-group>
<supplementary-material id="s9"><graphic xlink:href="supp1"/></supplementary-material>
</sec></body></article>"""


def test_every_fig_found_with_clean_caption():
    figures = parse_figures(XML)
    assert [f.fig_id for f in figures] == ["f1", "f2", "f3"]  # tables, inline graphics, supplements skipped
    f1, f2, f3 = figures
    assert f1.label == "Figure 1."
    assert f1.title == "Growth of E. coli."
    assert f1.caption == "Growth of E. coli. Rate in h-1, CO2 at x=2 (see [3])."
    assert "Raw counts" not in f1.caption and "Source data" not in f1.caption
    assert f1.href == "art.g001" and f1.group is None
    assert f2.group == "fg1" and f2.caption == "Shared group caption."
    assert f3.caption == "Own caption with a^2."  # one encoding of the formula, not both


def test_stray_html_in_caption_text_removed():
    xml = (b'<article><fig id="f"><caption><p>Cells of &lt;i&gt;E. coli&lt;/i&gt; at 10&lt;sup&gt;3&lt;/sup&gt;'
           b' and p &lt; 0.05.</p></caption><graphic/></fig></article>')
    assert parse_figures(xml)[0].caption == "Cells of E. coli at 103 and p < 0.05."


def test_entities_and_malformed_xml_rejected():
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><article>&x;</article>'
    with pytest.raises(Rejected) as error:
        parse_figures(bomb)
    assert error.value.reason == "xml_entities_forbidden"
    with pytest.raises(Rejected) as error:
        parse_figures(b"<article><fig></article>")
    assert error.value.reason == "malformed_xml"
    with pytest.raises(Rejected) as error:
        parse_figures(b"<article/>", max_bytes=5)
    assert error.value.reason == "xml_too_large"


def test_graphic_resolution_prefers_full_size_over_gif_thumbnail():
    files = ["pkg/art.g001.gif", "pkg/art.g001.jpg", "pkg/art.g0010.jpg", "pkg/art.g002.png", "pkg/art.nxml"]
    candidates = graphic_candidates("art.g001", files)
    assert candidates == ["pkg/art.g001.gif", "pkg/art.g001.jpg"]
    sizes = {"pkg/art.g001.gif": (64, 50), "pkg/art.g001.jpg": (1200, 940)}
    assert choose_graphic(candidates, sizes) == "pkg/art.g001.jpg"
    # An exact file name with its extension; undecodable candidates are skipped.
    assert graphic_candidates("art.g002.png", files) == ["pkg/art.g002.png"]
    assert choose_graphic(["a.jpg", "a.gif"], {"a.jpg": None, "a.gif": (10, 10)}) == "a.gif"
    assert graphic_candidates("missing", files) == []
    assert jats_figures.label_number("Fig. S2:") == "S2" and jats_figures.label_number("Figure 10.") == "10"


def _reference_caption(fig) -> str:
    """The XML's own caption text: title and paragraphs, attached data files left out."""
    caption = next((c for c in fig if jats_figures.local(c.tag) == "caption"), None)
    if caption is None:
        return ""
    parts = []
    for block in caption:
        block = etree.fromstring(etree.tostring(block))
        for node in block.xpath(".//*[local-name()='supplementary-material']"):
            parent = node.getparent()
            parent.remove(node)
        parts.append("".join(block.itertext()))
    return re.sub(r"\s+", " ", " ".join(parts)).strip()


def _image_files(folder: Path) -> dict[str, tuple[int, int] | None]:
    sizes = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in jats_figures.IMAGE_EXTS:
            with Image.open(path) as image:
                sizes[path.name] = image.size
    return sizes


def test_real_jats_articles_all_71_figures(shared_data: Path):
    folders = sorted((shared_data / "pmc" / "jats").iterdir())
    total = 0
    for folder in folders:
        data = (folder / "main.jats.xml").read_bytes()
        root = etree.fromstring(data)
        xml_figs = root.xpath("//*[local-name()='fig']")
        figures = parse_figures(data)
        assert len(figures) == len(xml_figs), folder.name
        sizes = _image_files(folder)
        for fig, node in zip(figures, xml_figs):
            assert fig.fig_id == node.get("id")
            graphic = choose_graphic(graphic_candidates(fig.href, sorted(sizes)), sizes)
            assert graphic is not None, f"{folder.name}/{fig.fig_id}: {fig.href} unresolved"
            assert Path(graphic).stem == Path(fig.href).stem
            assert fig.caption == _reference_caption(node), f"{folder.name}/{fig.fig_id}"
            assert fig.caption and not re.search(r"</?[a-z][\w:-]*[\s/>]", fig.caption)  # no stray markup
        total += len(figures)
    assert total == 71


def test_real_pmc_nxml_captions(shared_data: Path):
    for path in sorted((shared_data / "pmc" / "nxml").glob("*.nxml")):
        data = path.read_bytes()
        nodes = etree.fromstring(data).xpath("//*[local-name()='fig']")
        figures = parse_figures(data)
        assert len(figures) == len(nodes), path.name
        for fig, node in zip(figures, nodes):
            assert fig.caption == _reference_caption(node)
            assert fig.href


def test_real_pmc_package_resolves_jpg_not_gif(shared_data: Path):
    with tarfile.open(shared_data / "pmc" / "packages" / "pmc2924383.tar.gz") as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    nxml = next(name for name in members if name.endswith(".nxml"))
    figures = parse_figures(members[nxml])
    assert [f.label for f in figures] == ["Figure 1", "Figure 2", "Figure 3", "Figure 4"]
    for fig in figures:
        assert not Path(fig.href).suffix.lower() in jats_figures.IMAGE_EXTS
        candidates = graphic_candidates(fig.href, sorted(members))
        sizes = {name: Image.open(io.BytesIO(members[name])).size for name in candidates}
        chosen = choose_graphic(candidates, sizes)
        assert chosen.endswith(".jpg"), (fig.href, candidates)
