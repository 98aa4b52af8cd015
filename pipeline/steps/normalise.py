"""Normalise: one canonical form per modality, so equal content gets equal bytes and hashes.

Text: a Unicode normal form, folded whitespace, optional case folding. Images: EXIF orientation
applied, alpha composited on a background, RGB, one size by a resize policy, one encoding.
"""
from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from pipeline.params import ImageNormaliseParams, TextNormaliseParams
from pipeline.records import pixel_hash, text_hash
from pipeline.steps.pixels import pillow_pixel_guard_off

WHITESPACE = re.compile(r"\s+")
# Replaced in this order, so a number inside a URL, an address or a phone number stays inside its token.
PLACEHOLDERS = [
    ("urls", re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.I), "<url>"),
    ("emails", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    ("phones", re.compile(r"(?<![\w<(])(?:\(|\+)?\d(?:[\s().-]*\d){6,14}(?![\w>])"), "<phone>"),
    ("numbers", re.compile(r"(?<![\w<])\d+(?:[.,]\d+)*(?![\w>])"), "<number>"),
]


@dataclass(slots=True)
class Normalised:
    """A normalised record's new content, or the reason it has none."""

    content_hash: str | None = None
    text: str | None = None
    image: bytes | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None


def normalise_text(text: str, params: TextNormaliseParams) -> str:
    """Apply the configured normal form, placeholders, whitespace folding and case folding."""
    if params.unicode_form != "none":
        text = unicodedata.normalize(params.unicode_form, text)
    for name, pattern, token in PLACEHOLDERS:
        if getattr(params.placeholders, name):
            text = pattern.sub(token, text)
    if params.fold_whitespace:
        text = WHITESPACE.sub(" ", text).strip()
    if params.lowercase:
        text = text.casefold()
    return text


def normalise_texts(texts: Sequence[str], params: TextNormaliseParams) -> list[Normalised]:
    """`normalise_text` over a chunk; a text that normalises to nothing gets a reason."""
    out = []
    for text in texts:
        value = normalise_text(text, params)
        out.append(Normalised(text_hash(value), text=value) if value.strip() else Normalised(reason="empty_after_normalise"))
    return out


def normalise_image(data: bytes, params: ImageNormaliseParams) -> Normalised:
    """Decode, orient, flatten to RGB, resize by policy and encode."""
    with pillow_pixel_guard_off(), Image.open(io.BytesIO(data)) as image:  # clean has already refused oversized images
        if image.format == "JPEG":
            image.draft("RGB", (params.size, params.size))
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image, params.background)
    resized = _resize(rgb, params)
    if params.mode == "L":
        resized = resized.convert("L")
    return Normalised(
        pixel_hash(resized.mode, resized.size, resized.tobytes()),
        image=_encode(resized, params),
        width=resized.width,
        height=resized.height,
    )


def normalise_images(blobs: Sequence[bytes], params: ImageNormaliseParams) -> list[Normalised]:
    """`normalise_image` over a chunk."""
    return [normalise_image(b, params) for b in blobs]


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB pixels; transparent areas composited on `background`, 16-bit scaled to 8-bit."""
    if image.mode.startswith(("I", "F")):
        image = _to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(flat, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Grey 16-bit (any byte order), 32-bit integer or float pixels as 8-bit grey."""
    pixels = np.asarray(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        scaled = np.clip(pixels.astype(np.int64), 0, 65535) >> 8
    else:
        scaled = np.clip(pixels, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _resize(image: Image.Image, params: ImageNormaliseParams) -> Image.Image:
    size = params.size
    if params.resize == "stretch":
        return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if params.resize == "pad":
        fitted = ImageOps.contain(image, (size, size), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (size, size), params.background)
        canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
        return canvas
    return ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)


def _encode(image: Image.Image, params: ImageNormaliseParams) -> bytes:
    buffer = io.BytesIO()
    if params.encoding == "jpeg":
        image.save(buffer, format="JPEG", quality=params.jpeg_quality)
    else:
        image.save(buffer, format="PNG", compress_level=params.png_compress_level)
    return buffer.getvalue()
