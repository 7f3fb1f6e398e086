"""One article's figures: JATS first, the PDF as fallback and cross-check, images normalised.

Returns figure samples (key, JPEG, metadata) and rejected rows; never raises for bad input.
"""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

from tasks.common.rejection import Rejected
from tasks.figures import images, jats_figures, panels, pdf_figures, pdf_links
from tasks.figures.panel_samples import figure_panels
from tasks.figures.shards import figure_key

STAGE = "figures"


@dataclass(frozen=True)
class Settings:
    dpi: int = 150
    max_side: int = 1024
    jpeg_quality: int = 90
    max_pixels: int = 178_956_970  # 2x Pillow's default bomb threshold
    max_image_bytes: int = 64 << 20
    max_xml_bytes: int = 32 << 20
    max_pdf_bytes: int = 128 << 20
    max_pdf_pages: int = 200
    pdf_mode: str = "auto"  # auto: fallback + cross-check; fallback: only without JATS figures; never
    pdf_fallback_unresolved: bool = True  # a JATS figure without image file takes its PDF render
    min_region_pt: float = 36.0
    max_caption_gap_pt: float = 144.0
    panels: str = "whole"  # whole: figures only; split: panels replace the figures they cut; both
    panel_labels: str = "order"  # order: panels labelled in reading order; ocr: drawn letters read where they can be

    @classmethod
    def from_params(cls, figures: dict) -> "Settings":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in figures.items() if k in names})


@dataclass
class ArticleResult:
    samples: list[tuple[str, bytes, dict]] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    panel_samples: list[tuple[str, bytes, dict]] = field(default_factory=list)
    panels: list[dict] = field(default_factory=list)  # panel rows (tasks/figures/panel_samples.py)
    split_figures: set[str] = field(default_factory=set)  # figure keys cut into panels

    def shard_samples(self, mode: str) -> list[tuple[str, bytes, dict]]:
        """What the WebDataset shard holds: figures, and their panels unless mode is whole;
        with split, a figure cut into panels is there as its panels only."""
        figures = [s for s in self.samples if not (mode == "split" and s[0] in self.split_figures)]
        return figures + (self.panel_samples if mode != "whole" else [])

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


def _reject(result: ArticleResult, item: str, source: str, reason: str, detail: str) -> None:
    result.rejected.append({"item": item, "source": source, "reason": reason, "detail": detail, "stage": STAGE})


def _pick(members: dict[str, bytes], ext: str, preferred: str | None = None) -> str | None:
    names = sorted(n for n in members if n.lower().endswith(ext))
    if preferred and preferred in members:
        return preferred
    if not names:
        return None
    return min(names, key=lambda n: (n.count("/"), n))  # the package's top folder first


def _base_meta(pmcid: str, meta: dict) -> dict:
    return {
        "pmcid": pmcid,
        "licence": meta.get("licence"),
        "licence_url": meta.get("licence_url"),
        "commercial_use_ok": meta.get("commercial_use_ok"),
        "article_shard": meta.get("shard"),
        "package_sha256": meta.get("package_sha256"),
    }


def _caption_fields(caption: str) -> dict:
    shared, subcaptions = panels.split_caption(caption)
    return {"caption": caption, "caption_shared": shared, "subcaptions": subcaptions}


def _encode(result: ArticleResult, item: str, source_name: str, data: bytes, settings: Settings):
    if len(data) > settings.max_image_bytes:
        _reject(result, item, source_name, "image_too_large", f"{len(data)} bytes (cap {settings.max_image_bytes})")
        return None
    try:
        return images.normalise(data, settings.max_pixels, settings.max_side, settings.jpeg_quality)
    except Rejected as error:
        _reject(result, item, source_name, error.reason, error.detail)
        return None


def _image_fields(encoded: images.EncodedImage, source_file: str, source_bytes: bytes | None) -> dict:
    return {
        "width": encoded.width, "height": encoded.height,
        "sha256": encoded.sha256, "phash": encoded.phash,
        "source_file": source_file,
        "source_sha256": hashlib.sha256(source_bytes).hexdigest() if source_bytes is not None else None,
        "source_width": encoded.source_width, "source_height": encoded.source_height,
        "source_frames": encoded.frames,
    }


def process_article(pmcid: str, members: dict[str, bytes], meta: dict, settings: Settings) -> ArticleResult:
    result = ArticleResult()
    base = _base_meta(pmcid, meta)
    keys: set[str] = set()
    nxml_name = _pick(members, ".nxml", meta.get("nxml")) or _pick(members, ".xml")
    pdf_name = _pick(members, ".pdf")
    jats: list[jats_figures.JatsFigure] = []
    if nxml_name:
        try:
            jats = jats_figures.parse_figures(members[nxml_name], settings.max_xml_bytes)
        except Rejected as error:
            _reject(result, pmcid, nxml_name, error.reason, error.detail)
    result.count("jats_figures", len(jats))

    # Resolve each JATS figure's graphic to a package file.
    files = sorted(members)
    resolved: dict[str, str | None] = {}
    for fig in jats:
        candidates = jats_figures.graphic_candidates(fig.href or "", files) if fig.href else []
        sizes = {name: images.image_size(members[name]) for name in candidates}
        # When no candidate has a readable header, decoding the best-ranked one names the reason.
        resolved[fig.fig_id] = jats_figures.choose_graphic(candidates, sizes) or (candidates[0] if candidates else None)
        fig.candidates = candidates

    usable_jats = [f for f in jats if f.caption and resolved.get(f.fig_id)]
    run_pdf = pdf_name is not None and settings.pdf_mode != "never" and (
        settings.pdf_mode == "auto" or not usable_jats)
    pdf_found: list[pdf_figures.PdfFigure] = []
    doc = None
    render_cache: dict = {}
    if run_pdf:
        doc = _open_pdf(result, pmcid, pdf_name, members[pdf_name], settings)
        if doc is not None:
            try:
                found = pdf_figures.extract(doc, dpi=settings.dpi, render=False, max_pages=settings.max_pdf_pages,
                                            min_side=settings.min_region_pt, max_gap=settings.max_caption_gap_pt)
            except Exception as error:  # noqa: BLE001 - a damaged page stream: the JATS figures still count
                result.count("pdf_errors")
                if not usable_jats:
                    _reject(result, f"{pmcid}/{posixpath.basename(pdf_name)}", pdf_name, "unreadable_pdf",
                            f"figure search failed ({type(error).__name__}: {error})")
                doc.close()
                doc = None
            else:
                pdf_found = found.figures
                result.count("pdf_pages", found.pages)
                result.count("pdf_figures", len(pdf_found))
                result.count("pdf_captions_without_region", len(found.captions_without_region))
    links = pdf_links.link_to_jats(
        pdf_found, [(f.fig_id, jats_figures.label_number(f.label), f.caption) for f in jats]) if jats else {}
    by_fig = {fig_id: (pdf_found[i], overlap) for i, (fig_id, overlap) in links.items()}
    result.count("pdf_linked", len(links))

    for fig in jats:
        item = f"{pmcid}/{fig.fig_id}"
        if not fig.caption:
            _reject(result, item, nxml_name, "empty_caption", "the <fig> has no caption text")
            continue
        linked = by_fig.get(fig.fig_id)
        graphic = resolved.get(fig.fig_id)
        fields = {
            **base, "figure_id": fig.fig_id, "label": fig.label, "caption_title": fig.title,
            **_caption_fields(fig.caption), "group": fig.group,
            "page": linked[0].page if linked else None,
            "bbox": list(linked[0].bbox) if linked else None,
            "pdf_caption_overlap": round(linked[1], 4) if linked else None,
        }
        if graphic:
            data = members[graphic]
            encoded = _encode(result, item, graphic, data, settings)
            if encoded is None:
                continue
            fields.update(source="jats", **_image_fields(encoded, graphic, data))
        elif linked and settings.pdf_fallback_unresolved and doc is not None:
            encoded = _render(result, item, pdf_name, doc, linked[0], settings, render_cache)
            if encoded is None:
                continue
            fields.update(source="pdf", **_image_fields(encoded, pdf_name, None))
            result.count("pdf_fallback_figures")
        else:
            reason = "no_graphic" if not fig.href else "unresolvable_graphic"
            detail = (f"graphic {fig.href!r} matches no image file in the package"
                      + (f" ({len(fig.candidates)} unreadable candidates)" if fig.candidates else ""))
            _reject(result, item, nxml_name, reason, detail if fig.href else "the <fig> has no <graphic>")
            continue
        key = figure_key(pmcid, fig.fig_id, keys)
        result.samples.append((key, encoded.jpeg, {"key": key, **fields}))

    if not usable_jats and not any(s[2]["source"] == "pdf" for s in result.samples):
        # No JATS figures to use: the PDF's own figures are the output.
        for index, pdf in enumerate(pdf_found):
            if any(pdf is linked for linked, _ in by_fig.values()):
                continue
            figure_id = f"pdf-p{pdf.page}-fig{pdf.number}"
            item = f"{pmcid}/{figure_id}"
            if not pdf.caption:
                _reject(result, item, pdf_name, "empty_caption", "the PDF caption has no text after its label")
                continue
            encoded = _render(result, item, pdf_name, doc, pdf, settings, render_cache)
            if encoded is None:
                continue
            key = figure_key(pmcid, figure_id, keys)
            fields = {
                **base, "figure_id": figure_id, "label": pdf.label, "caption_title": None,
                **_caption_fields(pdf.caption), "group": None, "page": pdf.page, "bbox": list(pdf.bbox),
                "pdf_caption_overlap": None, "source": "pdf", **_image_fields(encoded, pdf_name, None),
            }
            result.samples.append((key, encoded.jpeg, {"key": key, **fields}))
        result.count("pdf_only_figures", sum(1 for s in result.samples if s[2]["source"] == "pdf"))
    elif jats:
        result.count("pdf_unlinked", len(pdf_found) - len(links))

    if doc is not None:
        doc.close()
    if not result.samples and not result.rejected:
        reason = "no_figures" if (nxml_name or pdf_name) else "no_figure_source"
        _reject(result, pmcid, nxml_name or pdf_name or pmcid, reason,
                "no <fig> in the JATS and no captioned figure found in the PDF" if reason == "no_figures"
                else "the package has neither an .nxml nor a PDF")
    result.count("figures_out", len(result.samples))
    result.count("compound_figures", sum(1 for s in result.samples if s[2]["subcaptions"]))
    if settings.panels != "whole":
        _cut_panels(result, settings)
    return result


def _cut_panels(result: ArticleResult, settings: Settings) -> None:
    """Compound figures' panels as samples and rows; a figure left whole counts its reason."""
    for key, jpeg, meta in result.samples:
        if len(meta["subcaptions"] or []) < 2:
            continue
        samples, rows, reason = figure_panels(meta, jpeg, settings.jpeg_quality, settings.panel_labels)
        if reason:
            result.count(f"panels_whole_{reason}")
            continue
        result.panel_samples.extend(samples)
        result.panels.extend(rows)
        result.split_figures.add(key)
        result.count("panels_split_figures")
        result.count("panels_out", len(rows))


def _open_pdf(result: ArticleResult, pmcid: str, name: str, data: bytes, settings: Settings):
    if len(data) > settings.max_pdf_bytes:
        _reject(result, f"{pmcid}/{posixpath.basename(name)}", name, "pdf_too_large",
                f"{len(data)} bytes (cap {settings.max_pdf_bytes})")
        return None
    try:
        doc = pdf_figures.open_pdf(data)
        if doc.needs_pass:
            raise ValueError("encrypted")
        return doc
    except Rejected as error:  # opened, but with no pages or pages lost in a repair
        _reject(result, f"{pmcid}/{posixpath.basename(name)}", name, error.reason, error.detail)
        return None
    except Exception as error:  # noqa: BLE001 - MuPDF raises many kinds on broken files
        _reject(result, f"{pmcid}/{posixpath.basename(name)}", name, "unreadable_pdf",
                f"PyMuPDF cannot open the PDF ({type(error).__name__}: {error})")
        return None


def _render(result: ArticleResult, item: str, pdf_name: str, doc, pdf: pdf_figures.PdfFigure, settings: Settings,
            cache: dict | None = None):
    try:
        image, _ = pdf_figures.render_figure(doc, pdf, settings.dpi, settings.max_pixels, cache)
    except Exception as error:  # noqa: BLE001
        _reject(result, item, pdf_name, "render_failed", f"{type(error).__name__}: {error}")
        return None
    return images.normalise_image(image, settings.max_side, settings.jpeg_quality, source_size=image.size)
