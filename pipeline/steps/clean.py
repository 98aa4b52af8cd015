"""Clean: canonical labels, repaired text, safely decoded images; anything unusable gets a reason.

Each check is a small function that returns `None` to keep a record or a reason (with a detail)
to drop it, in the manner of datatrove's filters; the stage counts the reasons.
"""
from __future__ import annotations

import contextlib
import html
import io
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ftfy
from PIL import Image, UnidentifiedImageError

from pipeline.params import DatasetParams, ImageCleanParams, TextCleanParams
from pipeline.records import pixel_hash, text_hash

TAG = re.compile(r"<(?:/?[A-Za-z][^<>]{0,200}|!--.*?--)>", re.S)  # a tag or comment, not '3 < 5 and 7 > 2'



@dataclass(slots=True)
class Verdict:
    """What a check decided for one record: keep (with new values) or drop (with a reason)."""

    reason: str | None = None
    detail: str | None = None
    label: str | None = None
    text: str | None = None
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None


# --- labels ---------------------------------------------------------------------------------

def canonical_label(raw: str | None, dataset: DatasetParams) -> tuple[str | None, str | None]:
    """(label, None) for a usable label, or (None, reason): strip, case, map, then the declared set."""
    if raw is None or not str(raw).strip():
        return None, "missing_label"
    label = str(raw).strip()
    if dataset.label_case == "lower":
        label = label.casefold()
    label = dataset.label_map.get(label, label)
    if dataset.labels is not None and label not in dataset.labels:
        return None, "unknown_label"
    return label, None


# --- text -----------------------------------------------------------------------------------

def repair_text(text: str, params: TextCleanParams) -> str:
    """Undo mojibake and C1 controls, HTML entities and (optionally) tags."""
    if params.repair_mojibake:
        text = ftfy.fix_text(text, normalization=None, unescape_html=False)
    if params.unescape_html:
        text = html.unescape(text)
    if params.strip_html_tags:
        text = TAG.sub(" ", text)
    return text


def text_problem(text: str, params: TextCleanParams) -> str | None:
    """The reason a repaired text is unusable, or None."""
    stripped = text.strip()
    if not stripped:
        return "empty_text"
    if len(stripped) < params.min_chars:
        return "too_short"
    if len(stripped) > params.max_chars:
        return "too_long"
    if len(stripped.split()) < params.min_words:
        return "too_few_words"
    return None


def clean_text(text: str | None, params: TextCleanParams) -> Verdict:
    """Repair one text and check it."""
    if text is None:
        return Verdict(reason="missing_text")
    repaired = repair_text(text, params)
    problem = text_problem(repaired, params)
    if problem:
        return Verdict(reason=problem, detail=f"{len(repaired.strip())} chars")
    return Verdict(text=repaired, content_hash=text_hash(repaired))


def clean_texts(texts: Sequence[str | None], params: TextCleanParams) -> list[Verdict]:
    """`clean_text` over a chunk (the unit an engine ships to a worker)."""
    return [clean_text(t, params) for t in texts]


# --- images ---------------------------------------------------------------------------------

def inspect_image(data: bytes | None, params: ImageCleanParams) -> Verdict:
    """Decode safely: refuse pixel bombs before allocating, verify, then fully load and check size."""
    if not data:
        return Verdict(reason="empty_file")
    try:
        with pillow_pixel_guard_off():
            return _inspect(data, params)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Verdict(reason="too_many_pixels", detail=str(exc)[:200])
    except UnidentifiedImageError:
        return Verdict(reason="not_an_image", detail="content is not a decodable image")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return Verdict(reason="corrupt_image", detail=f"{type(exc).__name__}: {exc}"[:200])


@contextlib.contextmanager
def pillow_pixel_guard_off() -> Iterator[None]:
    """Turn off Pillow's own decompression-bomb limit (89M pixels) for the duration.

    `_inspect` applies the configured `max_pixels` itself, from the header, before any pixel is
    decoded; Pillow's fixed limit would otherwise overrule a user who raised it.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _inspect(data: bytes, params: ImageCleanParams) -> Verdict:
    with Image.open(io.BytesIO(data)) as probe:
        width, height = probe.size
        if width * height > params.max_pixels:
            return Verdict(reason="too_many_pixels", detail=f"{width}x{height} > {params.max_pixels} pixels")
        probe.verify()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgb = image.convert("RGB")
    problem = _shape_problem(width, height, params)
    if problem:
        return Verdict(reason=problem, detail=f"{width}x{height}")
    return Verdict(width=width, height=height, content_hash=pixel_hash("RGB", rgb.size, rgb.tobytes()))


def _shape_problem(width: int, height: int, params: ImageCleanParams) -> str | None:
    if width < params.min_width or height < params.min_height:
        return "too_small"
    if max(width, height) / min(width, height) > params.max_aspect_ratio:
        return "extreme_aspect_ratio"
    return None


def inspect_images(blobs: Sequence[bytes | None], params: ImageCleanParams) -> list[Verdict]:
    """`inspect_image` over a chunk."""
    return [inspect_image(b, params) for b in blobs]
