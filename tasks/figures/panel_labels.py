"""Panel labels read from the letters drawn in a compound figure (figures.panel_labels: ocr).

The reader is RapidOCR (PyPI `rapidocr_onnxruntime` 1.4.x): its wheel carries the PP-OCR
ONNX detection and recognition models, so nothing is downloaded at run time (the 3.x
`rapidocr` package downloads its models and is not used). It is a declared dependency, but
the stage never needs it under `order`: panels are then labelled in reading order.

A label is one letter, optionally in parentheses or followed by ")" or ".", near the panel's
top-left corner (where eLife, PLOS and the sample generator draw it). Only that corner is read:
a band of about a sixth of the figure's long side across and half that down, from a few pixels
outside the box (XY-cut trims a panel to its content, so its letter sits just inside the box).
The engine is built once per process (lazily: a Dask worker builds it on its first figure),
with one ONNX Runtime thread, as the stage's parallelism is its processes.
"""
from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from importlib import metadata

import numpy as np
from PIL import Image

PARAM = "figures.panel_labels"
OCR_PACKAGE = "rapidocr_onnxruntime"
METHODS = ("order", "ocr")  # order: reading order only; ocr: drawn letters where read, reading order elsewhere
ORDER, OCR = METHODS

CORNER_SHARE = 0.16  # corner band width: this share of the figure's long side ...
MIN_CORNER = 48  # ... at least this many pixels; height half of it
OUTSIDE = 4  # pixels read outside the box's top-left edges
UPSCALE = 2  # the crop is enlarged so a 10-pixel letter reaches the detector's text size
MIN_SCORE = 0.6  # recognition score under which a read letter is not trusted
RECOGNISED = 2  # text boxes nearest the corner that are recognised
_LABEL = re.compile(r"^\(?([A-Za-z])[).]?$")


class OcrUnavailable(RuntimeError):
    """figures.panel_labels is ocr but the OCR package is not installed."""


def ocr_available() -> bool:
    try:
        return importlib.util.find_spec(OCR_PACKAGE) is not None
    except (ImportError, ValueError):  # a module entry without a spec
        return False


def check_method(method: str) -> str:
    """`method` when valid; a clear error naming the key otherwise (and the package, when
    ocr is asked for without it)."""
    if method not in METHODS:
        raise ValueError(f"{PARAM} must be one of {', '.join(METHODS)}, not {method!r}")
    if method == OCR and not ocr_available():
        raise OcrUnavailable(f"{PARAM} is {OCR!r} but the package {OCR_PACKAGE!r} is not installed "
                             f"(pip install {OCR_PACKAGE}, or set {PARAM}: {ORDER})")
    return method


def engine_version() -> str:
    """The OCR packages' versions: read labels depend on them, so the figures cache key does."""
    return ",".join(f"{name}={metadata.version(name)}" for name in (OCR_PACKAGE, "onnxruntime"))


@lru_cache(maxsize=1)
def _engine():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as error:
        raise OcrUnavailable(f"{PARAM} is {OCR!r} but {OCR_PACKAGE!r} does not import: {error}") from error
    # det_limit_type max: the default ("min", 736) would enlarge a small corner crop 10x;
    # rec width 64 (default 320): a label is a few characters, and the recogniser pads to it
    return RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, use_cls=False,
                    det_limit_type="max", det_limit_side_len=2000, rec_img_shape=[3, 48, 64])


def corner_box(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region of an image of `size` (w, h) read for the label of the panel at `box`."""
    width, height = size
    x0, y0, x1, y1 = box
    across = max(MIN_CORNER, int(round(CORNER_SHARE * max(width, height))))
    return (max(0, x0 - OUTSIDE), max(0, y0 - OUTSIDE),
            min(width, x0 + min(x1 - x0, across)), min(height, y0 + min(y1 - y0, across // 2)))


def label_of(results) -> str | None:
    """The label among OCR results [(points, text, score)]: the single-letter text (first
    word of a line, so "A  Saline" counts) nearest the corner, upper-cased as subcaptions are."""
    best = None
    for points, text, score in results or []:
        words = str(text).split()
        found = _LABEL.match(words[0]) if words else None
        if found and float(score) >= MIN_SCORE:
            distance = min(p[0] + p[1] for p in points)
            if best is None or distance < best[0]:
                best = (distance, found.group(1).upper())
    return best[1] if best else None


def read_label(image: Image.Image, box) -> str | None:
    """The letter drawn at the top-left of the panel at `box` (pixels of `image`), or None."""
    region = corner_box(box, image.size)
    if region[2] - region[0] < 8 or region[3] - region[1] < 8:
        return None
    crop = image.crop(region).convert("RGB")
    if UPSCALE != 1:
        crop = crop.resize((crop.width * UPSCALE, crop.height * UPSCALE), Image.BICUBIC)
    crop = np.ascontiguousarray(np.asarray(crop))
    engine = _engine()
    # detection, then recognition of the text boxes nearest the corner only (each costs a
    # recogniser run; a corner often holds axis labels and titles too)
    boxes, _ = engine.text_det(crop)
    if boxes is None or not len(boxes):
        return None
    nearest = sorted(boxes, key=lambda b: float(min(p[0] + p[1] for p in b)))[:RECOGNISED]
    texts, _ = engine.text_rec(engine.get_crop_img_list(crop, nearest))
    return label_of([(b.tolist(), text, score) for b, (text, score) in zip(nearest, texts)])


def read_labels(image: Image.Image, boxes) -> list[str | None]:
    """Each panel's drawn label (None where none is read); letters read twice are dropped
    (a letter belongs to one panel: the panels of a sub-divided panel would share it)."""
    labels = [read_label(image, box) for box in boxes]
    seen = [label for label in labels if label]
    return [label if label and seen.count(label) == 1 else None for label in labels]
