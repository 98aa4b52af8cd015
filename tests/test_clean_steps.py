"""Clean steps: canonical labels, repaired and checked texts, image files checked before decoding."""
from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from pipeline.params import DatasetParams, ImageCleanParams, TextCleanParams
from pipeline.records import text_hash
from pipeline.steps.clean import canonical_label, clean_text, clean_texts, inspect_image, repair_text, text_problem

APOSTROPHES = ("'", "\u2019")


def text_dataset(**options) -> DatasetParams:
    return DatasetParams.model_validate({"modality": "text", "source": "c.tsv", "format": "tsv", **options})


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """An RGB picture of random pixels (compresses badly, so truncation hits pixel data)."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels but carries no pixel data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def dds_unknown_pixel_format() -> bytes:
    """A DDS whose pixel format flags name no format: Pillow's DDS reader raises NotImplementedError."""
    data = bytearray(encode(noise((8, 8)), "DDS"))
    data[80:84] = struct.pack("<I", 0)
    return bytes(data)


def tiff_second_frame_without_size() -> bytes:
    """A two-page TIFF whose second page has no width or height: counting pages raises TypeError."""
    return two_page_tiff([(262, 1)])  # photometric interpretation only


def tiff_second_frame_of_unknown_compression() -> bytes:
    """A two-page TIFF whose second page names compression 285, which Pillow has no entry for: KeyError."""
    return two_page_tiff([(256, 4), (257, 4), (259, 285), (262, 1)])


def two_page_tiff(second_page: list[tuple[int, int]]) -> bytes:
    """A 4x4 grey TIFF, then a second page of the given (tag, LONG value) entries and no pixels."""
    def ifd(entries: list[tuple[int, int]], following: int) -> bytes:
        rows = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries)  # LONG values
        return struct.pack("<H", len(entries)) + rows + struct.pack("<I", following)
    pixels = bytes(16)
    second_at = 8 + len(ifd([(0, 0)] * 8, 0))
    second = ifd(second_page, 0)
    first = [(256, 4), (257, 4), (258, 8), (259, 1), (262, 1), (273, second_at + len(second)), (278, 4), (279, len(pixels))]
    return b"II*\x00" + struct.pack("<I", 8) + ifd(first, second_at) + second + pixels


def spider_image_outside_a_stack() -> bytes:
    """A SPIDER header naming an image of a stack without the stack: Pillow raises AttributeError."""
    header = [0.0] * 27
    header[0], header[1], header[4], header[11] = 4, 4, 1, 4  # slices, rows, iform 1 (2D image), samples
    header[12], header[21], header[22], header[26] = 1, 1024, 1024, 1  # 1 record of 1024 bytes; image number 1
    return struct.pack(">27f", *header) + bytes(1024)


# --- labels ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("billing", "billing"),
    ("  Billing \t", "billing"),
    ("BILLING", "billing"),
    ("Straße", "strasse"),  # casefold, not lower
    ("Bill", "billing"),  # mapped after stripping and case folding
    (" Tech Support ", "technical"),
])
def test_canonical_label_strips_folds_and_maps(raw, expected):
    ds = text_dataset(label_map={"bill": "billing", "tech support": "technical"})
    assert canonical_label(raw, ds) == (expected, None)


@pytest.mark.parametrize("raw", [None, "", "   ", "\t\n"])
def test_canonical_label_missing(raw):
    assert canonical_label(raw, text_dataset()) == (None, "missing_label")


def test_canonical_label_outside_declared_set_is_unknown():
    ds = text_dataset(labels=["billing", "shipping"], label_map={"ship": "shipping"})
    assert canonical_label("Ship", ds) == ("shipping", None)
    assert canonical_label("refunds", ds) == (None, "unknown_label")


def test_canonical_label_without_declared_set_keeps_any_label():
    assert canonical_label("Anything Goes", text_dataset()) == ("anything goes", None)


def test_canonical_label_case_keep():
    ds = text_dataset(label_case="keep", labels=["Billing", "Shipping"])
    assert canonical_label(" Billing ", ds) == ("Billing", None)
    assert canonical_label("billing", ds) == (None, "unknown_label")


# --- text -----------------------------------------------------------------------------------

def test_repair_text_c1_control_becomes_apostrophe():
    """Windows-1252 0x92 decoded as Latin-1 (a C1 control) is an apostrophe."""
    repaired = repair_text("that\x92s fine", TextCleanParams())
    assert repaired in {f"that{a}s fine" for a in APOSTROPHES}


def test_repair_text_mojibake():
    repaired = repair_text("it isnâ€™t broken", TextCleanParams())
    assert repaired in {f"it isn{a}t broken" for a in APOSTROPHES}


def test_repair_text_leaves_clean_text_alone():
    text = "Café naïve — déjà vu, 東京"
    assert repair_text(text, TextCleanParams()) == text


def test_repair_text_mojibake_repair_can_be_turned_off():
    assert repair_text("isnâ€™t", TextCleanParams(repair_mojibake=False)) == "isnâ€™t"


def test_repair_text_unescapes_html_entities():
    assert repair_text("Tom &amp; Jerry &lt;3 &eacute;t&#233;", TextCleanParams()) == "Tom & Jerry <3 été"
    assert repair_text("Tom &amp; Jerry", TextCleanParams(unescape_html=False)) == "Tom &amp; Jerry"


def test_repair_text_strips_tags_only_when_asked():
    text = "<p>Hello <b>world</b></p>"
    assert repair_text(text, TextCleanParams()) == text
    stripped = repair_text(text, TextCleanParams(strip_html_tags=True))
    assert "<" not in stripped and ">" not in stripped
    assert stripped.split() == ["Hello", "world"]


def test_repair_text_tag_stripping_keeps_comparisons():
    """Only tag-shaped text goes: a lone '<' in prose stays."""
    assert repair_text("3 < 5 and 7 > 2", TextCleanParams(strip_html_tags=True)) == "3 < 5 and 7 > 2"


@pytest.mark.parametrize("text, params, reason", [
    ("", {}, "empty_text"),
    ("  \n\t ", {}, "empty_text"),
    ("abc", {"min_chars": 5}, "too_short"),
    ("   abc   ", {"min_chars": 4}, "too_short"),  # surrounding space does not count
    ("a" * 11, {"max_chars": 10}, "too_long"),
    ("two words", {"min_words": 3}, "too_few_words"),
    ("three small words", {"min_words": 3}, None),
    ("a" * 10, {"max_chars": 10}, None),
    ("abcde", {"min_chars": 5}, None),
])
def test_text_problem(text, params, reason):
    problem = text_problem(text, TextCleanParams(**params))
    assert (problem[0] if problem else None) == reason


def test_clean_text_keeps_repaired_text_with_its_hash():
    verdict = clean_text("Tom &amp; Jerry", TextCleanParams())
    assert verdict.reason is None
    assert verdict.text == "Tom & Jerry"
    assert verdict.content_hash == text_hash("Tom & Jerry")


def test_clean_text_judges_the_repaired_text():
    """A text that is only a tag is empty once tags are stripped."""
    verdict = clean_text("<br/>", TextCleanParams(strip_html_tags=True))
    assert verdict.reason == "empty_text"
    assert verdict.text is None


def test_clean_texts_missing_text_has_a_reason():
    verdicts = clean_texts([None, "ok"], TextCleanParams())
    assert [v.reason for v in verdicts] == ["missing_text", None]


# --- images ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, options", [
    ("PNG", {}),
    ("JPEG", {"quality": 90}),
    ("GIF", {}),
    ("WEBP", {"lossless": True}),
    ("BMP", {}),
    ("TIFF", {}),
])
def test_inspect_image_reads_common_formats(fmt, options):
    data = encode(noise((40, 30)), fmt, **options)
    verdict = inspect_image(data, ImageCleanParams())
    assert verdict.reason is None, verdict.detail
    assert (verdict.width, verdict.height) == (40, 30)
    assert len(verdict.content_hash) == 64


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "I;16", "CMYK"])
def test_inspect_image_accepts_other_modes(mode):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    image = noise((20, 20)).convert(mode) if mode != "I;16" else noise((20, 20)).convert("L").convert("I;16")
    verdict = inspect_image(encode(image, fmt), ImageCleanParams())
    assert verdict.reason is None, verdict.detail


def test_clean_hash_names_the_file_bytes():
    """clean hashes the file; equal pixels in two formats are caught after normalise (decoded pixels)."""
    import hashlib

    data = encode(noise(), "PNG")
    assert inspect_image(data, ImageCleanParams()).content_hash == hashlib.sha256(data).hexdigest()


def test_inspect_image_is_deterministic():
    data = encode(noise(), "JPEG")
    assert inspect_image(data, ImageCleanParams()) == inspect_image(data, ImageCleanParams())


@pytest.mark.parametrize("data", [b"", None])
def test_inspect_image_empty(data):
    assert inspect_image(data, ImageCleanParams()).reason == "empty_file"


def test_inspect_image_random_bytes_are_not_an_image():
    data = random.Random(0).randbytes(2048)
    assert inspect_image(data, ImageCleanParams()).reason == "not_an_image"


def test_inspect_image_truncated_png_fails_verify():
    """PNG chunks carry checksums, so verify catches a cut file without decoding; a cut JPEG is
    caught by normalise's full decode (tests/test_normalise_steps.py)."""
    data = encode(noise((128, 128)), "PNG")
    verdict = inspect_image(data[: len(data) // 2], ImageCleanParams())
    assert verdict.reason == "corrupt_image"
    assert verdict.detail


@pytest.mark.parametrize("make, error", [
    (tiff_second_frame_without_size, "TypeError"),
    (tiff_second_frame_of_unknown_compression, "KeyError"),
])
def test_inspect_image_headers_pillow_cannot_parse_are_corrupt(make, error):
    """Pillow's format readers raise more than OSError and ValueError on malformed headers (found by
    tests/test_properties.py): such a file is a corrupt image, not a traceback."""
    verdict = inspect_image(make(), ImageCleanParams())
    assert verdict.reason == "corrupt_image"
    assert verdict.detail.startswith(f"{error}: ")


def eps_picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="EPS")
    return buffer.getvalue()


@pytest.mark.parametrize("make", [dds_unknown_pixel_format, spider_image_outside_a_stack, eps_picture])
def test_content_of_a_format_no_image_extension_names_is_not_an_image(make):
    """Only the formats of the accepted extensions are read, whatever a file's extension says: an
    EPS named .png is never handed to Pillow's EPS reader (which runs Ghostscript), nor DDS or SPIDER
    content to readers that crashed on it (found by tests/test_properties.py)."""
    assert inspect_image(make(), ImageCleanParams()).reason == "not_an_image"


def test_inspect_image_reads_headers_only():
    """Size and quality are judged on decoded pixels in normalise: clean keeps a tiny flat image."""
    verdict = inspect_image(encode(Image.new("RGB", (8, 3), (0, 0, 0)), "PNG"), ImageCleanParams())
    assert verdict.reason is None and verdict.flags == () and (verdict.width, verdict.height) == (8, 3)


def test_multi_frame_gif_is_flagged_with_its_frame_count():
    frames = [noise((32, 32), seed=i).convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    verdict = inspect_image(buffer.getvalue(), ImageCleanParams())
    assert verdict.reason is None and ("multi_frame", "3 frames, the first is used") in verdict.flags


def test_inspect_image_more_pixels_than_max_pixels():
    verdict = inspect_image(encode(noise((64, 48)), "PNG"), ImageCleanParams(max_pixels=64 * 48 - 1))
    assert verdict.reason == "too_many_pixels"
    assert "64x48" in verdict.detail


def test_inspect_image_bomb_header_is_refused_before_decoding():
    """A header declaring 400 million pixels is refused without allocating them."""
    verdict = inspect_image(png_header_only(20_000, 20_000), ImageCleanParams())
    assert verdict.reason == "too_many_pixels"


def test_inspect_image_respects_a_max_pixels_above_pillows_default():
    """With max_pixels=200M, a 100M-pixel header is not refused (normalise finds it has no pixels)."""
    assert inspect_image(png_header_only(10_000, 10_000), ImageCleanParams(max_pixels=200_000_000)).reason is None


# --- issue 3 rules: invisible characters, word bounds, deny-list, language, label fallback ----

def test_invisible_characters_are_removed_and_the_repair_is_named():
    from pipeline.steps.clean import repair_traced

    text, repairs = repair_traced("pay\u200bment \u202edue\u202c", TextCleanParams())
    assert text == "payment due" and repairs == ("invisible_chars",)
    assert repair_traced("pay\u200bment", TextCleanParams(strip_invisible=False))[0] == "pay\u200bment"


def test_repairs_are_listed_in_order_applied():
    from pipeline.steps.clean import repair_traced

    _, repairs = repair_traced("that\x92s &amp; <b>x</b>", TextCleanParams(strip_html_tags=True))
    assert repairs == ("mojibake", "html_entities", "html_tags")


@pytest.mark.parametrize("text, params, reason", [
    ("one two three four", {"max_words": 3}, "too_many_words"),
    ("call now to WIN a prize", {"deny_patterns": [r"(?i)\bwin\b"]}, "denied_pattern"),
    ("nothing to see", {"deny_patterns": [r"(?i)\bwin\b"]}, None),
])
def test_word_bounds_and_deny_patterns(text, params, reason):
    problem = text_problem(text, TextCleanParams(**params))
    assert (problem[0] if problem else None) == reason


def test_language_filter_drops_only_confident_other_languages():
    params = TextCleanParams(languages=["en"], language_min_confidence=0.8)
    assert text_problem("Where is my parcel? It was due last week and nobody answers.", params) is None
    problem = text_problem("Bonjour, je n'ai toujours pas reçu mon colis, pouvez-vous m'aider ?", params)
    assert problem is not None and problem[0] == "wrong_language" and problem[1].startswith("fr")


def test_unknown_label_can_map_to_a_fallback():
    dataset = DatasetParams(modality="text", source="x", format="tsv", labels=["spam", "other"],
                            unknown_label="map", fallback_label="other")
    assert canonical_label("promo", dataset) == ("other", None)
    assert canonical_label(None, dataset) == (None, "missing_label")


def test_fallback_label_must_be_declared():
    with pytest.raises(ValueError, match="fallback_label"):
        DatasetParams(modality="text", source="x", format="tsv", labels=["a", "b"], unknown_label="map", fallback_label="c")


def test_multi_label_parts_are_canonicalised_sorted_and_deduplicated():
    dataset = DatasetParams(modality="text", source="x", format="tsv", multi_label=True, labels=["news", "sport", "tech"],
                            label_map={"football": "sport"})
    assert canonical_label(" Tech | football|sport", dataset) == ("sport|tech", None)
    assert canonical_label("tech|weather", dataset) == (None, "unknown_label")
    assert canonical_label(" | ", dataset) == (None, "missing_label")
