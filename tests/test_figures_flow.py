"""The `figures` stage end to end on ingest-style shards: outputs, WebDataset loading, rejections, determinism."""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from lxml import etree
from PIL import Image

from flows._stage import run_stage
from flows.figures import figures_flow
from tasks.common.params import load_params
from tasks.common.tables import write_table
from tasks.figures.pdf_links import token_overlap
from tests.conftest import stage_params

ARTICLE_SCHEMA = pa.schema([
    ("pmcid", pa.string()), ("shard", pa.string()), ("licence", pa.string()), ("licence_url", pa.string()),
    ("commercial_use_ok", pa.bool_()), ("package_sha256", pa.string()), ("nxml", pa.string()),
])


def write_article_shard(path: Path, articles: list[tuple[str, dict[str, bytes]]]) -> None:
    """An ingest article shard: members `PMCID/<path in package>`, sorted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w") as tar:
        for pmcid, members in articles:
            for rel in sorted(members):
                info = tarfile.TarInfo(f"{pmcid}/{rel}")
                info.size = len(members[rel])
                tar.addfile(info, io.BytesIO(members[rel]))


def _write_ingest(folder: Path, articles: list[tuple[str, dict[str, bytes]]], shard_size: int = 100) -> None:
    rows = []
    articles = sorted(articles)
    for index in range(0, len(articles), shard_size):
        name = f"articles-{index // shard_size:06d}.tar"
        chunk = articles[index:index + shard_size]
        write_article_shard(folder / "shards" / name, chunk)
        for pmcid, members in chunk:
            nxml = next((m for m in sorted(members) if m.endswith((".nxml", ".xml"))), None)
            rows.append({"pmcid": pmcid, "shard": name, "licence": "cc-by",
                         "licence_url": "https://creativecommons.org/licenses/by/4.0/", "commercial_use_ok": True,
                         "package_sha256": hashlib.sha256(pmcid.encode()).hexdigest(), "nxml": nxml})
    write_table(pa.Table.from_pylist(rows, ARTICLE_SCHEMA), folder / "articles.parquet")


def _run(repo_root: Path, ingest_dir: Path, out_dir: Path, **extra) -> dict:
    overrides = {"figures.articles": ingest_dir / "articles.parquet", "figures.shards_dir": ingest_dir / "shards",
                 "figures.output_dir": out_dir, "figures.articles_per_task": 3, "figures.contact_sheet.n": 8}
    overrides.update(extra)
    return run_stage(figures_flow, stage_params(repo_root, **overrides))


def _broken_article() -> dict[str, bytes]:
    xml = b"""<?xml version="1.0"?><article xmlns:xlink="http://www.w3.org/1999/xlink"><body>
    <fig id="f1"><label>Figure 1</label><caption><p>No file for this one.</p></caption>
      <graphic xlink:href="gone.g001"/></fig>
    <fig id="f2"><label>Figure 2</label><caption><p>A broken image file.</p></caption>
      <graphic xlink:href="art.g002"/></fig>
    <fig id="f3"><label>Figure 3</label><graphic xlink:href="art.g003"/></fig>
    <fig id="f4"><label>Figure 4</label><caption><p>A fine <italic>one</italic>.</p></caption>
      <graphic xlink:href="art.g004"/></fig>
    </body></article>"""
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(good, format="PNG")
    return {"art.nxml": xml, "art.g002.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
            "art.g003.jpg": good.getvalue(), "art.g004.png": good.getvalue(), "license.txt": b"CC BY"}


def _sample_articles(repo_root: Path, indices) -> tuple[list, dict]:
    from tasks.sample.literature import build_article, package_members

    params = load_params(repo_root / "params.yaml")
    articles, truth = [], {}
    for index in indices:
        article, images, sizes = build_article(params, index)
        members = package_members(article, images, sizes, "pkg", with_thumbnails=index % 2 == 0)
        articles.append((article.pmcid, {name.split("/", 1)[1]: data for name, data in members}))
        truth[article.pmcid] = article
    return articles, truth


def _webdataset(out_dir: Path) -> list[dict]:
    urls = [str(p) for p in sorted((out_dir / "shards").glob("figures-*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"))


def test_stage_on_sample_articles_with_broken_inputs(repo_root: Path, tmp_path: Path):
    articles, truth = _sample_articles(repo_root, range(4))
    # A PDF-only package: the JATS is missing, so figures come from the PDF.
    pdf_only_id, pdf_members = articles.pop()
    pdf_only = {k: v for k, v in pdf_members.items() if k.endswith((".pdf", ".txt"))}
    articles += [(pdf_only_id, pdf_only), ("PMC0000001", _broken_article()), ("PMC0000002", {"license.txt": b"x"})]
    _write_ingest(tmp_path / "ingest", articles)
    summary = _run(repo_root, tmp_path / "ingest", tmp_path / "out")
    out = tmp_path / "out"

    table = pq.read_table(out / "figures.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    samples = _webdataset(out)
    assert sorted(s["__key__"] for s in samples) == [r["key"] for r in table]
    assert len({r["shard"] for r in table}) == 2  # 6 articles, 3 per task
    for sample in samples:
        meta = sample["json"]
        assert isinstance(sample["jpg"], Image.Image) and sample["jpg"].size == (meta["width"], meta["height"])
        for field in ("pmcid", "figure_id", "label", "caption", "subcaptions", "source", "page", "bbox",
                      "licence", "sha256", "phash"):
            assert field in meta, field

    by_key = {r["key"]: r for r in table}
    jats_rows = [r for r in table if r["pmcid"] in truth and r["pmcid"] != pdf_only_id]
    expected = sum(len(truth[p].figures) for p in truth if p != pdf_only_id)
    assert len(jats_rows) == expected
    for row in jats_rows:
        spec = next(f for f in truth[row["pmcid"]].figures if f.fig_id == row["figure_id"])
        assert row["source"] == "jats" and row["label"] == spec.label
        assert row["caption"] == f"{spec.title} {spec.caption}"
        assert row["subcaptions"] == [{"panel": p["panel"], "text": p["text"]} for p in spec.panels]
        assert row["source_file"].endswith(".jpg")  # never the GIF thumbnail
        if row["page"] is not None:  # linked to its figure in the PDF
            assert row["pdf_caption_overlap"] >= 0.9 and len(row["bbox"]) == 4
    assert sum(r["page"] is not None for r in jats_rows) >= 0.9 * len(jats_rows)

    pdf_rows = [r for r in table if r["pmcid"] == pdf_only_id]
    specs = truth[pdf_only_id].figures
    assert pdf_rows and all(r["source"] == "pdf" and r["page"] >= 1 for r in pdf_rows)
    for row in pdf_rows:
        spec = next(f for f in specs if f.label == row["label"])
        assert token_overlap(f"{spec.title} {spec.caption}", row["caption"]) >= 0.9

    reasons = {(r["item"], r["reason"]) for r in rejected}
    assert ("PMC0000001/f1", "unresolvable_graphic") in reasons
    assert ("PMC0000001/f2", "undecodable_image") in reasons
    assert ("PMC0000001/f3", "empty_caption") in reasons
    assert ("PMC0000002", "no_figure_source") in reasons
    assert by_key["PMC0000001_f4"]["caption"] == "A fine one."
    assert summary["items_out"] == len(table) and summary["rejected"] == len(rejected)
    assert json.loads((out / "summary.json").read_text())["items_out"] == len(table)
    assert Image.open(out / "contact_sheet.png").size[0] > 100

    # Same inputs, same params: the same bytes.
    _run(repo_root, tmp_path / "ingest", tmp_path / "again")
    for name in ["figures.parquet", "rejected.parquet", "contact_sheet.png", "summary.json"] + [
            f"shards/{p.name}" for p in (out / "shards").glob("*.tar")]:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def _reference_caption(fig) -> str:
    caption = next((c for c in fig if isinstance(c.tag, str) and c.tag.endswith("caption")), None)
    parts = []
    for block in caption if caption is not None else []:
        block = etree.fromstring(etree.tostring(block))
        for node in block.xpath(".//*[local-name()='supplementary-material']"):
            node.getparent().remove(node)
        parts.append("".join(block.itertext()))
    return re.sub(r"\s+", " ", " ".join(parts)).strip()


def test_stage_on_real_articles(shared_data: Path, repo_root: Path, tmp_path: Path):
    """Real publisher JATS folders and a real PMC package, as ingest would shard them."""
    articles, references = [], {}
    for number, folder in enumerate(sorted((shared_data / "pmc" / "jats").iterdir()), start=1):
        pmcid = f"PMC{900000 + number}"
        members = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        articles.append((pmcid, members))
        for fig in etree.fromstring(members["main.jats.xml"]).xpath("//*[local-name()='fig']"):
            references[(pmcid, fig.get("id"))] = _reference_caption(fig)
    with tarfile.open(shared_data / "pmc" / "packages" / "pmc2924383.tar.gz") as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    articles.append(("PMC2924383", members))
    # The same package without its JATS: the figures must come from the PDF alone.
    articles.append(("PMC2924384", {k: v for k, v in members.items() if not k.endswith(".nxml")}))
    jats_captions = [_reference_caption(f) for f in etree.fromstring(
        next(v for k, v in members.items() if k.endswith(".nxml"))).xpath("//*[local-name()='fig']")]
    _write_ingest(tmp_path / "ingest", articles)
    summary = _run(repo_root, tmp_path / "ingest", tmp_path / "out", **{"figures.max_side": 512})
    table = pq.read_table(tmp_path / "out" / "figures.parquet").to_pylist()
    assert summary["rejected"] == 0
    pdf_rows = [r for r in table if r["pmcid"] == "PMC2924384"]
    assert [r["label"] for r in pdf_rows] == ["Figure 1", "Figure 2", "Figure 3", "Figure 4"]
    for row, caption in zip(pdf_rows, jats_captions):
        assert row["source"] == "pdf" and token_overlap(caption, row["caption"]) >= 0.9
    assert [len(r["subcaptions"]) for r in pdf_rows] == [0, 2, 2, 2]  # "(A) ... (B) ..."
    table = [r for r in table if r["pmcid"] != "PMC2924384"]
    assert len(table) == 75 == len(references) + 4
    for row in table:
        assert row["source"] == "jats"
        if row["pmcid"] == "PMC2924383":
            assert row["page"] in (2, 3, 4) and row["pdf_caption_overlap"] >= 0.9
            assert row["source_file"].endswith(".jpg")
        else:
            assert row["caption"] == references[(row["pmcid"], row["figure_id"])]
        assert max(row["width"], row["height"]) <= 512
    samples = [s for s in _webdataset(tmp_path / "out") if s["json"]["pmcid"] != "PMC2924384"]
    assert len(samples) == 75
    assert all(s["json"]["caption"] == by["caption"] for s, by in zip(
        sorted(samples, key=lambda s: s["__key__"]), table))


def test_write_shard_says_where_each_jpeg_lies(tmp_path):
    from tasks.figures.shards import read_jpeg, write_shard

    samples = [(f"PMC{i}_f1", bytes([i]) * (100 + 517 * i), {"i": i}) for i in range(5)]
    index = write_shard(tmp_path / "s.tar", reversed(samples))
    assert sorted(index) == [key for key, _, _ in samples]
    with tarfile.open(tmp_path / "s.tar") as tar:
        for key, jpeg, _ in samples:
            assert read_jpeg(tmp_path / "s.tar", *index[key]) == jpeg == tar.extractfile(f"{key}.jpg").read()
    with pytest.raises(ValueError, match="bytes expected"):
        read_jpeg(tmp_path / "s.tar", (tmp_path / "s.tar").stat().st_size - 10, 100)
