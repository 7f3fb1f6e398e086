"""Figure images: safe decoding, normalisation to RGB JPEG, content and perceptual hashes, near-duplicates."""
from __future__ import annotations

import hashlib
import io
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from tasks.common.rejection import Rejected

# Our own cap is checked before decoding; Pillow's global check is kept as a backstop.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class EncodedImage:
    jpeg: bytes
    width: int
    height: int
    sha256: str  # of the JPEG written
    phash: str  # 64-bit DCT perceptual hash, 16 hex digits
    source_width: int
    source_height: int
    source_mode: str
    frames: int


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header only, or None when Pillow cannot identify it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - any unreadable header means "not usable"
        return None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Wide grey: scale by the type's range, not by clipping at 255 as convert() would.
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
            scale = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
        else:
            top = 65535.0 if mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
            scale = np.clip(array, 0, top) / top
        return Image.fromarray(np.round(scale * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in ("RGB", "L"):
        return image  # grey is widened to RGB after the resize, at a third of the cost
    return image.convert("RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    # Adobe JPEGs store CMYK inverted; Pillow hands it back as is. Colour-manage when a profile exists.
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(image, src, dst, outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken profile falls back to the plain conversion
            pass
    return image.convert("RGB")


def decode(data: bytes, max_pixels: int, target_side: int | None = None
           ) -> tuple[Image.Image, int, str, tuple[int, int]]:
    """Open untrusted image bytes: (RGB or L image, frame count, source mode, source size).

    Rejects before decoding pixels when the header declares more than max_pixels.
    Multi-page TIFFs give their first page; EXIF orientation is applied. With target_side,
    a large JPEG is decoded at a reduced DCT scale no smaller than target_side (much faster).
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise Rejected("undecodable_image", f"not an image Pillow can identify ({type(exc).__name__})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise Rejected("undecodable_image", f"image declares size {width}x{height}")
    if width * height > max_pixels:
        raise Rejected("image_too_large", f"{width}x{height} pixels exceeds the cap of {max_pixels}")
    frames = int(getattr(image, "n_frames", 1) or 1)
    source_mode = image.mode
    long_side = max(width, height)
    if target_side and image.format == "JPEG" and image.mode in ("RGB", "L") and long_side >= 2 * target_side:
        # DCT scaling by 1/2, 1/4 or 1/8 only while the result stays at least the target size.
        scale = target_side / long_side
        image.draft(image.mode, (int(width * scale) + 1, int(height * scale) + 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)
            image.load()
            if image.getexif().get(0x0112, 1) not in (1, None):
                image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise Rejected("undecodable_image", f"decoding failed ({type(exc).__name__}: {exc})") from exc
    return rgb, frames, source_mode, (width, height)


def resize_long_side(image: Image.Image, max_side: int) -> Image.Image:
    width, height = image.size
    long_side = max(width, height)
    if long_side <= max_side:
        return image
    scale = max_side / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Box-reduce by an integer factor first, then an antialiased bilinear filter: for
    # shrinking, close to Lanczos at a third of its cost.
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    # No EXIF, no optimisation passes: the same pixels give the same bytes.
    image.save(buffer, format="JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=2)
    return buffer.getvalue()


_DCT_N = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_DCT_N)


def phash(image: Image.Image) -> str:
    """DCT perceptual hash: 32x32 grey, the 8x8 lowest frequencies against their median."""
    grey = image.convert("L").resize((_DCT_N, _DCT_N), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(grey, dtype=np.float64)
    coeffs = _DCT @ pixels @ _DCT.T
    low = coeffs[:8, :8].flatten()
    median = np.median(low[1:])  # the DC term would dominate the median
    bits = low > median
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def normalise(data: bytes, max_pixels: int, max_side: int, quality: int) -> EncodedImage:
    """Decode, orient, convert to RGB, shrink to max_side and encode as JPEG."""
    rgb, frames, mode, source_size = decode(data, max_pixels, target_side=max_side)
    return normalise_image(rgb, max_side, quality, frames=frames, mode=mode, source_size=source_size)


def normalise_image(rgb: Image.Image, max_side: int, quality: int, frames: int = 1, mode: str = "RGB",
                    source_size: tuple[int, int] | None = None) -> EncodedImage:
    small = resize_long_side(rgb, max_side)
    if small.mode != "RGB":
        small = small.convert("RGB")
    jpeg = encode_jpeg(small, quality)
    src_w, src_h = source_size or rgb.size
    return EncodedImage(
        jpeg=jpeg,
        width=small.size[0],
        height=small.size[1],
        sha256=hashlib.sha256(jpeg).hexdigest(),
        phash=phash(small),
        source_width=src_w,
        source_height=src_h,
        source_mode=mode,
        frames=frames,
    )


def near_duplicates(items: list[tuple[str, str, str]], max_distance: int) -> dict[str, str]:
    """Figures whose perceptual hash is within max_distance of a figure of another article.

    items: (key, group, phash) with group = the article. Returns key -> the smallest key
    of another article it nearly duplicates. Candidate pairs come from 8 one-byte bands:
    two hashes within 7 bits agree on at least one band, so no pair is missed up to 7.
    """
    if max_distance < 0 or not items:
        return {}
    bands = 8 if max_distance <= 7 else 1
    buckets: dict[tuple[int, str], list[int]] = defaultdict(list)
    for index, (_, _, value) in enumerate(items):
        for band in range(bands):
            part = value[band * 2 : band * 2 + 2] if bands == 8 else ""
            buckets[(band, part)].append(index)
    result: dict[str, str] = {}
    for members in buckets.values():
        if len(members) < 2:
            continue
        for i in members:
            key_i, group_i, hash_i = items[i]
            for j in members:
                key_j, group_j, hash_j = items[j]
                if group_i == group_j or i == j:
                    continue
                if hamming(hash_i, hash_j) <= max_distance:
                    if key_i not in result or key_j < result[key_i]:
                        result[key_i] = key_j
    return result
