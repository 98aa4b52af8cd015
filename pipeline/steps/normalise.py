"""Normalise: one canonical form per modality, so equal content gets equal bytes and hashes.

Text: a Unicode normal form, folded whitespace, optional case folding. Images: decoded once (the
full load that catches truncated data), quality checks on those pixels (drop or flag per check),
EXIF orientation applied, alpha composited on a background, RGB, one size by a resize policy, one
encoding.
"""
from __future__ import annotations

import io
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from pipeline.ledger import Fates, Processed
from pipeline.params import ImageNormaliseParams, NormaliseParams, TextNormaliseParams
from pipeline.records import pixel_hash, source_location, text_hash
from pipeline.steps.pixels import UNREADABLE, open_raster, pillow_pixel_guard_off, resample
from pipeline.steps.quality import judge, measure_working_copy, working_copy

ORIENTATION = 0x0112  # the EXIF tag
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
    detail: str | None = None
    flags: tuple[tuple[str, str], ...] = ()  # (check, detail) of a kept image


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
    """Decode once (oriented, flattened to RGB), check quality, then resize by policy and encode.

    The decode is a full load (truncated or corrupt pixel data fails it: `corrupt_image`); JPEGs
    are decoded at the smallest DCT scale still large enough for the measures and the output.
    """
    try:
        width, height, pixels = _decode(data, params)
    except UNREADABLE as exc:
        return Normalised(reason="corrupt_image", detail=f"{type(exc).__name__}: {exc}"[:200])
    small = working_copy(pixels, params.quality.working_side)
    reason, detail, flags = judge(measure_working_copy(small, width=width, height=height), params.quality)
    if reason is not None:
        return Normalised(reason=reason, detail=detail)
    out = _resize(pixels, params)
    if params.mode == "L":
        out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    mode = "L" if out.ndim == 2 else "RGB"
    return Normalised(
        pixel_hash(mode, (out.shape[1], out.shape[0]), out.tobytes()),
        image=_encode(out, params),
        width=out.shape[1],
        height=out.shape[0],
        flags=flags,
    )


def normalise_images(blobs: Sequence[bytes], params: ImageNormaliseParams) -> list[Normalised]:
    """`normalise_image` over a chunk."""
    return [normalise_image(b, params) for b in blobs]


def measure_partition(records: pd.DataFrame, params: ImageNormaliseParams, columns: Sequence[str]) -> pd.DataFrame:
    """The measures `columns` of each decodable image of a partition, as `normalise_image` takes them
    (what corpus-relative quality limits are fitted on); an undecodable image gives no row."""
    rows = []
    for data in records["image"]:
        try:
            width, height, pixels = _decode(data, params)
        except UNREADABLE:
            continue
        measures = measure_working_copy(working_copy(pixels, params.quality.working_side), width=width, height=height)
        rows.append([float(getattr(measures, c)) for c in columns])
    return pd.DataFrame(np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns)), columns=list(columns))


def _decode(data: bytes, params: ImageNormaliseParams) -> tuple[int, int, np.ndarray]:
    """Width and height from the header, and the oriented RGB pixels (H x W x 3 uint8)."""
    with pillow_pixel_guard_off(), open_raster(data) as image:  # clean has already refused oversized images
        width, height = image.size
        if image.format == "JPEG":
            side = max(params.size, params.quality.working_side)
            image.draft("RGB", (side, side))
        image.load()
        if image.getexif().get(ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        rgb = image if image.mode == "RGB" else _to_rgb(image, params.background)
        return width, height, np.asarray(rgb)


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


def _resize(pixels: np.ndarray, params: ImageNormaliseParams) -> np.ndarray:
    """size x size RGB pixels by the resize policy (see `pixels.resample` for the filter)."""
    size, (height, width) = params.size, pixels.shape[:2]
    if params.resize == "stretch":
        return resample(pixels, (size, size))
    if params.resize == "pad":
        scale = size / max(height, width)
        inner = resample(pixels, (max(1, round(width * scale)), max(1, round(height * scale))))
        canvas = np.empty((size, size, 3), np.uint8)
        canvas[:] = params.background
        top, left = (size - inner.shape[0]) // 2, (size - inner.shape[1]) // 2
        canvas[top:top + inner.shape[0], left:left + inner.shape[1]] = inner
        return canvas
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resample(pixels[top:top + side, left:left + side], (size, size))


def _encode(pixels: np.ndarray, params: ImageNormaliseParams) -> bytes:
    """PNG through libpng (Paeth filter, zlib's run-length strategy) or JPEG through Pillow."""
    if params.encoding == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=params.jpeg_quality)
        return buffer.getvalue()
    level = params.png_compress_level
    options = [cv2.IMWRITE_PNG_COMPRESSION, level,
               cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH if level else cv2.IMWRITE_PNG_FILTER_NONE,
               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, encoded = cv2.imencode(".png", pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), options)
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return encoded.tobytes()


def normalise_partition(records: pd.DataFrame, modality: str, params: NormaliseParams) -> Processed:
    """One partition's records in canonical form, content hashes recomputed; the unusable dropped
    (with where they came from) and kept images flagged by the quality checks. Counts: `in`."""
    if modality == "text":
        results, columns = normalise_texts(list(records["text"]), params.text), ["text"]
    else:
        results, columns = normalise_images(list(records["image"]), params.image), ["image", "width", "height"]
    records = records.assign(**{c: [getattr(r, c) for r in results] for c in [*columns, "content_hash"]})
    fates = Fates.from_verdicts(records["id"].tolist(), results, source_location(records).tolist())
    kept = records.loc[[r.reason is None for r in results]]
    return Processed(kept, fates, Counter({"in": len(records)}))
