"""A contact sheet: a grid of figures with their label and the start of their caption, for a person to look at."""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def pick_evenly(rows: list[dict], n: int) -> list[dict]:
    """n rows spread over the whole (key-sorted) list, deterministically."""
    rows = sorted(rows, key=lambda r: r["key"])
    if n <= 0 or not rows:
        return []
    if len(rows) <= n:
        return rows
    step = (len(rows) - 1) / (n - 1) if n > 1 else 0
    return [rows[round(i * step)] for i in range(n)]


BOX_COLOUR = (230, 0, 0)
Boxes = list[tuple[str, tuple[int, int, int, int]]]  # (label, box in the image's pixels)


def _draw_boxes(draw: ImageDraw.ImageDraw, font, x: int, y: int, scale: float, boxes: Boxes) -> None:
    for label, (x0, y0, x1, y1) in boxes:
        box = [x + x0 * scale, y + y0 * scale, x + x1 * scale - 1, y + y1 * scale - 1]
        draw.rectangle(box, outline=BOX_COLOUR, width=2)
        draw.rectangle([box[0], box[1], box[0] + 10, box[1] + 12], fill=BOX_COLOUR)
        draw.text((box[0] + 2, box[1]), label, fill=(255, 255, 255), font=font)


def draw_contact_sheet(items: list[tuple[dict, bytes]], path: str | Path, thumb: int = 192, columns: int = 6,
                       compound: list[tuple[str, Image.Image, Boxes]] = ()) -> Path:
    """items: (row, JPEG) per figure; compound: (title, figure image, its panel boxes) drawn
    below the grid, boxed and labelled (figures.panels split | both)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default()
    text_h = 52
    cols = max(1, min(columns, max(len(items), len(compound)) or 1))
    rows = max(1, math.ceil(len(items) / cols))
    compound_rows = math.ceil(len(compound) / cols)
    cell_w, cell_h = thumb + 16, thumb + text_h + 16
    sheet = Image.new("RGB", (cols * cell_w, (rows + compound_rows) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (title, image, boxes) in enumerate(compound):
        x, y = (index % cols) * cell_w + 8, (rows + index // cols) * cell_h + 8
        scale = min(thumb / image.width, thumb / image.height)
        sheet.paste(image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale)))), (x, y))
        _draw_boxes(draw, font, x, y, scale, boxes)
        for k, line in enumerate(textwrap.wrap(title, max(10, thumb // 6))[:3]):
            draw.text((x, y + thumb + 4 + 12 * k), line, fill=(0, 0, 160), font=font)
    chars = max(10, thumb // 6)
    for index, (row, jpeg) in enumerate(items):
        x, y = (index % cols) * cell_w + 8, (index // cols) * cell_h + 8
        with Image.open(io.BytesIO(jpeg)) as image:
            image = image.convert("RGB")
            image.thumbnail((thumb, thumb))
            sheet.paste(image, (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2))
        head = f"{row.get('label') or row['key']} [{row.get('source', '')}]"
        lines = [head[:chars]] + textwrap.wrap(row.get("caption") or "", chars)[:3]
        for k, line in enumerate(lines):
            draw.text((x, y + thumb + 4 + 12 * k), line, fill=(0, 0, 0) if k else (0, 0, 160), font=font)
    if not items:
        draw.text((8, 8), "no figures", fill="black", font=font)
    sheet.save(path, format="PNG", optimize=False)
    return path


def draw_panel_gallery(items: list[tuple[str, bytes, list[tuple[str, tuple[int, int, int, int]]]]],
                       path: str | Path, thumb: int = 320, columns: int = 4) -> Path:
    """Figures with their detected panels boxed and labelled: (title, JPEG, [(label, box in
    the JPEG's pixels)]) each, for reading by eye."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default()
    cols = max(1, min(columns, len(items) or 1))
    rows = max(1, math.ceil(len(items) / cols))
    cell_w, cell_h = thumb + 16, thumb + 32
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (title, jpeg, boxes) in enumerate(items):
        x, y = (index % cols) * cell_w + 8, (index // cols) * cell_h + 8
        with Image.open(io.BytesIO(jpeg)) as image:
            image = image.convert("RGB")
            scale = min(thumb / image.width, thumb / image.height)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            sheet.paste(image, (x, y))
        _draw_boxes(draw, font, x, y, scale, boxes)
        draw.text((x, y + thumb + 4), title[: thumb // 6], fill=(0, 0, 160), font=font)
    if not items:
        draw.text((8, 8), "no figures", fill="black", font=font)
    sheet.save(path, format="PNG", optimize=False)
    return path
