"""One figure's panels as rows and WebDataset samples (figures.panels: split | both).

The figure's stored JPEG is analysed (tasks/figures/panel_detect.py) with its subcaption
count as the prior, under figures.panel_labels: ocr the letters drawn in the panels read
(tasks/figures/panel_labels.py), the panels paired with their subcaptions (tasks/figures/panel_pairing.py)
by read letter, else in reading order (`label_method` says which),
and each panel cropped from the stored image and encoded as its own sample, keyed
`<figure key>_<label>`. Boxes in rows and JSON are in source pixels.
"""
from __future__ import annotations

import hashlib
import io

import pyarrow as pa
from PIL import Image

from tasks.figures import images, panel_labels
from tasks.figures.panel_detect import detect_panels
from tasks.figures.panel_pairing import pair_panels
from tasks.figures.shards import safe_key_part

PANELS_SCHEMA = pa.schema([
    ("key", pa.string()), ("parent", pa.string()), ("pmcid", pa.string()), ("label", pa.string()),
    ("box", pa.list_(pa.int32())), ("confidence", pa.float64()), ("method", pa.string()),
    ("label_method", pa.string()),
    ("subcaption", pa.string()), ("caption_shared", pa.string()), ("licence", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string()),
    ("shard", pa.string()), ("stage", pa.string()),
])
META_FIELDS = ("pmcid", "licence", "licence_url", "commercial_use_ok", "article_shard")


def figure_panels(parent: dict, jpeg: bytes, quality: int, label_method: str = panel_labels.ORDER,
                  ) -> tuple[list[tuple[str, bytes, dict]], list[dict], str | None]:
    """(panel samples, panel rows, why the figure stays whole or None) for one figure's
    metadata row and stored JPEG; label_method: figures.panel_labels (order | ocr)."""
    with Image.open(io.BytesIO(jpeg)) as opened:
        image = opened.convert("RGB")
    subcaptions = parent["subcaptions"] or []
    detection = detect_panels(image, len(subcaptions) if len(subcaptions) >= 2 else None)
    labels = None
    if panel_labels.check_method(label_method) == panel_labels.OCR and len(detection.panels) >= 2:
        labels = panel_labels.read_labels(image, [p.box for p in detection.panels])
    pairing = pair_panels(detection.panels, subcaptions, parent["caption_shared"] or "", labels=labels)
    if pairing.reason:
        return [], [], pairing.reason
    sx = (parent["source_width"] or image.width) / image.width
    sy = (parent["source_height"] or image.height) / image.height
    samples, rows = [], []
    for panel in pairing.panels:
        key = f"{parent['key']}_{safe_key_part(panel.label)}"
        crop = image.crop(panel.box)
        encoded = images.encode_jpeg(crop, quality)
        x0, y0, x1, y1 = panel.box
        source_box = [int(round(x0 * sx)), int(round(y0 * sy)), int(round(x1 * sx)), int(round(y1 * sy))]
        row = {"key": key, "parent": parent["key"], "pmcid": parent["pmcid"], "label": panel.label,
               "box": source_box, "confidence": panel.confidence, "method": panel.method,
               "label_method": panel.label_method, "subcaption": panel.subcaption, "caption_shared": panel.shared_caption,
               "licence": parent["licence"], "width": crop.width, "height": crop.height,
               "sha256": hashlib.sha256(encoded).hexdigest()}
        meta = {k: parent.get(k) for k in META_FIELDS} | {
            "key": key, "parent": parent["key"], "label": panel.label, "box": source_box,
            "confidence": panel.confidence, "method": panel.method, "label_method": panel.label_method,
            "subcaption": panel.subcaption,
            "caption_shared": panel.shared_caption, "width": crop.width, "height": crop.height}
        samples.append((key, encoded, meta))
        rows.append(row)
    return samples, rows, None
