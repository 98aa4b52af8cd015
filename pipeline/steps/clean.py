"""Clean: canonical labels, repaired text, safely decoded images; anything unusable gets a reason.

Each check is a small function that returns `None` to keep a record or a reason (with a detail)
to drop it, in the manner of datatrove's filters; the stage counts the reasons.
"""
from __future__ import annotations

import contextlib
import functools
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
# Zero-width characters and bidirectional controls: invisible, but they make equal texts differ.
INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")



@dataclass(slots=True)
class Verdict:
    """What a check decided for one record: keep (with new values) or drop (with a reason)."""

    reason: str | None = None
    detail: str | None = None
    label: str | None = None
    text: str | None = None
    repairs: tuple[str, ...] = ()
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
        if dataset.unknown_label == "map":
            return dataset.fallback_label, None
        return None, "unknown_label"
    return label, None


# --- text -----------------------------------------------------------------------------------

def repair_text(text: str, params: TextCleanParams) -> str:
    """Undo mojibake and C1 controls, HTML entities, (optionally) tags and invisible characters."""
    return repair_traced(text, params)[0]


def repair_traced(text: str, params: TextCleanParams) -> tuple[str, tuple[str, ...]]:
    """`repair_text`, plus the names of the repairs that changed the text."""
    steps = [
        ("mojibake", params.repair_mojibake, lambda t: ftfy.fix_text(t, normalization=None, unescape_html=False)),
        ("html_entities", params.unescape_html, html.unescape),
        ("html_tags", params.strip_html_tags, lambda t: TAG.sub(" ", t)),
        ("invisible_chars", params.strip_invisible, lambda t: INVISIBLE.sub("", t)),
    ]
    done = []
    for name, enabled, fix in steps:
        fixed = fix(text) if enabled else text
        if fixed != text:
            done.append(name)
        text = fixed
    return text, tuple(done)


def text_problem(text: str, params: TextCleanParams) -> tuple[str, str] | None:
    """(reason, detail) why a repaired text is unusable, or None."""
    stripped = text.strip()
    words = len(stripped.split())
    if not stripped:
        return "empty_text", "nothing but whitespace"
    if len(stripped) < params.min_chars:
        return "too_short", f"{len(stripped)} chars < {params.min_chars}"
    if len(stripped) > params.max_chars:
        return "too_long", f"{len(stripped)} chars > {params.max_chars}"
    if words < params.min_words:
        return "too_few_words", f"{words} words < {params.min_words}"
    if params.max_words is not None and words > params.max_words:
        return "too_many_words", f"{words} words > {params.max_words}"
    denied = next((p for p in _deny(tuple(params.deny_patterns)) if p.search(stripped)), None)
    if denied is not None:
        return "denied_pattern", f"matches {denied.pattern!r}"
    return _language_problem(stripped, params)


@functools.lru_cache(maxsize=4)
def _deny(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


@functools.lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) from py3langid's bundled model (offline, deterministic)."""
    code, probability = _language_identifier().classify(text)
    return str(code), float(probability)


def _language_problem(text: str, params: TextCleanParams) -> tuple[str, str] | None:
    if not params.languages:
        return None
    code, probability = detect_language(text)
    if code not in params.languages and probability >= params.language_min_confidence:
        return "wrong_language", f"{code} ({probability:.2f})"
    return None


def clean_text(text: str | None, params: TextCleanParams) -> Verdict:
    """Repair one text and check it."""
    if text is None or text != text:  # None or NaN from a missing field
        return Verdict(reason="missing_text")
    repaired, repairs = repair_traced(text, params)
    problem = text_problem(repaired, params)
    if problem:
        return Verdict(reason=problem[0], detail=problem[1], repairs=repairs)
    return Verdict(text=repaired, content_hash=text_hash(repaired), repairs=repairs)


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
