"""Image decoding under hostile and unusual inputs, normalisation, hashes and near-duplicates."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.common.rejection import Rejected
from tasks.figures import images
from tasks.figures.images import hamming, near_duplicates, normalise, phash

CAP = 50_000_000


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gradient(w=300, h=200) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, 255 - x], axis=2).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(normalise(data, CAP, 1024, 90).jpeg))


def test_cmyk_sixteen_bit_palette_alpha_become_rgb():
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    red = _decoded(_bytes(cmyk, "JPEG")).getpixel((20, 15))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60

    wide = Image.frombytes("I;16", (40, 30), np.full((30, 40), 65535 // 2, dtype="<u2").tobytes())
    grey = _decoded(_bytes(wide, "PNG")).convert("L").getpixel((20, 15))
    assert 120 <= grey <= 135  # scaled from 16 bits, not clipped to white

    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    blue = _decoded(_bytes(palette, "PNG")).getpixel((20, 15))
    assert blue[2] > 200 and blue[0] < 50

    clear = Image.new("RGBA", (40, 30), (0, 0, 0, 0))  # transparent black shows as white
    assert min(_decoded(_bytes(clear, "PNG")).getpixel((20, 15))) > 240


def test_multipage_tiff_first_page_and_exif_orientation():
    pages = [Image.new("RGB", (60, 40), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = _bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    encoded = normalise(data, CAP, 1024, 90)
    assert encoded.frames == 2
    assert Image.open(io.BytesIO(encoded.jpeg)).getpixel((30, 20))[0] > 200

    upright = Image.new("RGB", (80, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    rotated = normalise(_bytes(upright, "JPEG", exif=exif.tobytes()), CAP, 1024, 90)
    assert (rotated.width, rotated.height) == (20, 80)


def test_bombs_and_garbage_rejected_with_reasons():
    big = _bytes(Image.new("L", (4000, 3000)), "PNG")  # 12 MP, compresses to little
    with pytest.raises(Rejected) as error:
        normalise(big, 10_000_000, 1024, 90)
    assert error.value.reason == "image_too_large"
    with pytest.raises(Rejected) as error:
        normalise(b"not an image at all", CAP, 1024, 90)
    assert error.value.reason == "undecodable_image"
    truncated = _bytes(_gradient(), "PNG")[:400]
    with pytest.raises(Rejected) as error:
        normalise(truncated, CAP, 1024, 90)
    assert error.value.reason == "undecodable_image"


def test_resize_encode_deterministic_and_hashes():
    data = _bytes(_gradient(3000, 2000), "JPEG", quality=95)
    a = normalise(data, CAP, 512, 85)
    b = normalise(data, CAP, 512, 85)
    assert (a.width, a.height) == (512, 341)
    assert (a.source_width, a.source_height) == (3000, 2000)
    assert a.jpeg == b.jpeg and a.sha256 == b.sha256 and len(a.phash) == 16
    small = normalise(_bytes(_gradient(100, 50), "PNG"), CAP, 512, 85)
    assert (small.width, small.height) == (100, 50)  # never enlarged


def _texture(seed: int) -> Image.Image:
    cells = (np.random.default_rng(seed).random((12, 16)) * 255).astype(np.uint8)
    return Image.fromarray(cells, "L").resize((400, 300), Image.Resampling.BICUBIC).convert("RGB")


def test_perceptual_hash_tracks_content_not_bytes():
    image = _texture(0)
    recompressed = Image.open(io.BytesIO(_bytes(image, "JPEG", quality=40)))
    assert hamming(phash(image), phash(recompressed)) <= 4
    assert hamming(phash(image), phash(image.resize((200, 150)))) <= 4
    assert hamming(phash(image), phash(image.transpose(Image.Transpose.FLIP_TOP_BOTTOM))) > 12
    assert hamming(phash(image), phash(_texture(1))) > 12


def test_near_duplicates_across_articles_only():
    a, b = "f0f0f0f0f0f0f0f0", "f0f0f0f0f0f0f0f1"  # 1 bit apart
    far = "0f0f0f0f0f0f0f0f"
    items = [("PMC1_f1", "PMC1", a), ("PMC1_f2", "PMC1", b), ("PMC2_f1", "PMC2", b), ("PMC3_f1", "PMC3", far)]
    dups = near_duplicates(items, 3)
    assert dups == {"PMC1_f1": "PMC2_f1", "PMC1_f2": "PMC2_f1", "PMC2_f1": "PMC1_f1"}
    assert near_duplicates(items, -1) == {}
    # Every pair within the distance is found although the bands are byte-wise.
    rng = np.random.default_rng(0)
    values = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 40)]
    flipped = [f"{int(v, 16) ^ (1 << int(rng.integers(0, 64))) ^ (1 << 7) :016x}" for v in values]
    items = [(f"A{i:02d}", f"a{i}", v) for i, v in enumerate(values)]
    items += [(f"B{i:02d}", f"b{i}", v) for i, v in enumerate(flipped)]
    found = near_duplicates(items, 2)
    assert all(found.get(f"A{i:02d}") is not None for i in range(40))
    assert images.image_size(b"junk") is None
