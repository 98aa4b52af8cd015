"""Clean: canonical labels, repaired text, image files checked before decoding; anything unusable gets a reason.

Each check is a small function that returns `None` to keep a record or a reason (with a detail)
to drop it, in the manner of datatrove's filters; the stage counts the reasons.
"""
from __future__ import annotations

import functools
import hashlib
import html
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ftfy
import pandas as pd
from PIL import Image, UnidentifiedImageError

from pipeline.ledger import Fates, Processed
from pipeline.params import CleanParams, DatasetParams, ImageCleanParams, TextCleanParams
from pipeline.records import conform, source_location, text_hash
from pipeline.steps.metadata import filter_records, metadata_frame
from pipeline.steps.pixels import UNREADABLE, open_raster, pillow_pixel_guard_off

TAG = re.compile(r"<(?:/?[A-Za-z][^<>]{0,200}|!--.*?--)>", re.S)  # a tag or comment, not '3 < 5 and 7 > 2'
# Zero-width characters and bidirectional controls: invisible, but they make equal texts differ.
INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# A character ftfy might change. Text without one (ASCII apart from the controls that its
# remove_control_chars, fix_line_breaks and remove_terminal_escapes touch) comes back from
# `fix_text` unchanged: mojibake, C1 controls, ligatures, wide forms, curly quotes and surrogates
# are all outside ASCII. Most texts are such plain ASCII, and ftfy takes ~150 us on each.
FTFY_TOUCHES = re.compile(r"[^\t\n\x0c\x20-\x7e]")



@dataclass(slots=True)
class Verdict:
    """What a check decided for one record: keep (with new values) or drop (with a reason)."""

    reason: str | None = None
    detail: str | None = None
    label: str | None = None
    text: str | None = None
    repairs: tuple[str, ...] = ()
    flags: tuple[tuple[str, str], ...] = ()  # (check, detail) of a kept record
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None


# --- labels ---------------------------------------------------------------------------------

def canonical_label(raw: str | None, dataset: DatasetParams) -> tuple[str | None, str | None]:
    """(label, None) for a usable label, or (None, reason): strip, case, map, then the declared set.

    Multi-label: each part is canonicalised alike; the label is the sorted distinct parts joined
    by the separator, so the same set of labels always reads the same.
    """
    if raw is None or not str(raw).strip():
        return None, "missing_label"
    if dataset.multi_label:
        return _canonical_set(str(raw), dataset)
    return _canonical_one(str(raw), dataset)


def _canonical_set(raw: str, dataset: DatasetParams) -> tuple[str | None, str | None]:
    parts = [p for p in raw.split(dataset.label_separator) if p.strip()]
    if not parts:
        return None, "missing_label"
    results = [_canonical_one(p, dataset) for p in parts]
    failed = next((reason for label, reason in results if reason), None)
    if failed:
        return None, failed
    return dataset.label_separator.join(sorted({label for label, _ in results})), None


def _canonical_one(raw: str, dataset: DatasetParams) -> tuple[str | None, str | None]:
    label = raw.strip()
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
        ("mojibake", params.repair_mojibake, _fix_mojibake),
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


def _fix_mojibake(text: str) -> str:
    """ftfy's repair of mojibake and C1 controls (without Unicode normalisation or HTML unescaping)."""
    if FTFY_TOUCHES.search(text) is None:
        return text
    return ftfy.fix_text(text, normalization=None, unescape_html=False)


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


def clean_texts(texts: Sequence[str | None], params: TextCleanParams,
                count_tokens: Callable[[list[str]], Sequence[int]] | None = None) -> list[Verdict]:
    """`clean_text` over a chunk (the unit an engine ships to a worker); then, with a token bound
    set, the kept texts' counts of the fine-tuning tokenizer (`count_tokens`, in batches) against it."""
    verdicts = [clean_text(t, params) for t in texts]
    if not params.counts_tokens:
        return verdicts
    if count_tokens is None:
        raise ValueError("clean.text.min_tokens and max_tokens need count_tokens (a pipeline.steps.tokens.TokenCounter)")
    kept = [i for i, v in enumerate(verdicts) if v.reason is None]
    for i, tokens in zip(kept, count_tokens([verdicts[i].text for i in kept]), strict=True):
        problem = token_problem(int(tokens), params)
        if problem:
            verdicts[i] = Verdict(reason=problem[0], detail=problem[1], repairs=verdicts[i].repairs)
    return verdicts


def token_problem(tokens: int, params: TextCleanParams) -> tuple[str, str] | None:
    """(reason, detail) when a text's token count is outside `min_tokens`..`max_tokens`, or None."""
    if params.min_tokens is not None and tokens < params.min_tokens:
        return "too_few_tokens", f"{tokens} tokens < {params.min_tokens}"
    if params.max_tokens is not None and tokens > params.max_tokens:
        return "too_many_tokens", f"{tokens} tokens > {params.max_tokens}"
    return None


# --- images ---------------------------------------------------------------------------------

def inspect_image(data: bytes | None, params: ImageCleanParams) -> Verdict:
    """What the file itself says: readable header, pixel count within the limit, `verify` passes.

    No pixel is decoded here: normalise decodes each kept image once, and that full decode is
    where truncated pixel data is caught and the quality measures are taken.
    """
    if not data:
        return Verdict(reason="empty_file")
    try:
        with pillow_pixel_guard_off():
            return _inspect(data, params)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Verdict(reason="too_many_pixels", detail=str(exc)[:200])
    except UnidentifiedImageError:
        return Verdict(reason="not_an_image", detail="content is not a decodable image")
    except UNREADABLE as exc:
        return Verdict(reason="corrupt_image", detail=f"{type(exc).__name__}: {exc}"[:200])


def _inspect(data: bytes, params: ImageCleanParams) -> Verdict:
    with open_raster(data) as probe:
        width, height = probe.size
        if width * height > params.max_pixels:
            return Verdict(reason="too_many_pixels", detail=f"{width}x{height} > {params.max_pixels} pixels")
        frames = getattr(probe, "n_frames", 1)
        probe.verify()  # structure and checksums (PNG chunk CRCs) without decoding the pixels
    flags = (("multi_frame", f"{frames} frames, the first is used"),) if frames > 1 else ()
    return Verdict(width=width, height=height, content_hash=hashlib.sha256(data).hexdigest(), flags=flags)


def inspect_images(blobs: Sequence[bytes | None], params: ImageCleanParams) -> list[Verdict]:
    """`inspect_image` over a chunk."""
    return [inspect_image(b, params) for b in blobs]


# --- one partition --------------------------------------------------------------------------

def clean_partition(raw: pd.DataFrame, dataset: DatasetParams, params: CleanParams,
                    count_tokens: Callable[[list[str]], Sequence[int]] | None = None) -> Processed:
    """Raw source rows (`pipeline.sources.RAW_COLUMNS`) to records: the reader's rejections, then
    labels, then the content checks, each drop with its reason and where in the source it was.
    `count_tokens` is needed only for the token bounds (`clean.text.min_tokens`, `max_tokens`).

    Counts: `repaired.<repair>` (texts each repair changed) and `labels.<label>` of the records kept.
    """
    rejected = raw["reject"].notna()
    fates = Fates.dropped(raw.loc[rejected, "id"], raw.loc[rejected, "reject"], raw.loc[rejected, "detail"])
    raw = raw.loc[~rejected]
    results = [canonical_label(label, dataset) for label in raw["label"]]
    bad_label = pd.Series([r[1] is not None for r in results], index=raw.index)
    where = source_location(raw)
    details = where + ": label " + raw["label"].map(lambda v: "<missing>" if v is None else repr(v))
    fates += Fates.dropped(raw.loc[bad_label, "id"], [r[1] for r in results if r[1] is not None], details[bad_label])
    raw = raw.loc[~bad_label].assign(label=[r[0] for r in results if r[1] is None])
    where = where[~bad_label]
    if dataset.filters:
        passed, filtered = filter_records(metadata_frame(raw["id"], raw["metadata"], sorted(dataset.metadata)),
                                          dataset.filters, dataset.metadata)
        located = dict(zip(raw["id"], where, strict=True))
        fates += Fates(filtered.frame.assign(detail=[f"{located[i]}: {d}" for i, d in zip(filtered.frame["id"], filtered.frame["detail"],
                                                                                          strict=True)]))
        raw, where = raw.loc[passed], where[passed]
    verdicts = (clean_texts(list(raw["text"]), params.text, count_tokens) if dataset.modality == "text"
                else inspect_images(list(raw["image"]), params.image))
    fates += Fates.from_verdicts(raw["id"].tolist(), verdicts, where.tolist())
    kept = [v.reason is None for v in verdicts]
    records = _records(raw.loc[kept], [v for v, k in zip(verdicts, kept) if k], dataset.modality)
    counts = Counter(f"repaired.{r}" for v in verdicts for r in v.repairs)
    counts.update(f"labels.{label}" for label in records["label"])
    return Processed(records, fates, counts)


def _records(raw: pd.DataFrame, verdicts: list[Verdict], modality: str) -> pd.DataFrame:
    records = raw.drop(columns=["reject", "detail"]).assign(
        content_hash=[v.content_hash for v in verdicts],
        group_id=raw["id"],
        parent_id=None,
        op=None,
    )
    if modality == "text":
        records["text"] = [v.text for v in verdicts]
    else:
        records["width"] = [v.width for v in verdicts]
        records["height"] = [v.height for v in verdicts]
    return conform(records)
