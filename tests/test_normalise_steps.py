"""Normalise steps: one canonical form per modality, so equal content gets equal bytes and hashes."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.params import ImageNormaliseParams, ImageQualityParams, TextNormaliseParams
from pipeline.records import pixel_hash, text_hash
from pipeline.steps.normalise import normalise_image, normalise_images, normalise_text, normalise_texts

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
BACKGROUND = (10, 20, 30)


QUALITY_OFF = ImageQualityParams(**{
    name: check.model_copy(update={"action": "off"})
    for name, check in ImageQualityParams() if name != "working_side"})


def unchecked(**options) -> ImageNormaliseParams:
    """Params with every quality check off, for tests of geometry and encoding on flat pictures."""
    return ImageNormaliseParams(quality=QUALITY_OFF, **options)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def bands(colors: list[tuple[int, int, int]], band: int = 30) -> Image.Image:
    """A picture of vertical colour bands, `band` pixels wide and `band` pixels tall each."""
    image = Image.new("RGB", (band * len(colors), band))
    for i, color in enumerate(colors):
        image.paste(color, (i * band, 0, (i + 1) * band, band))
    return image


def close(pixel: tuple[int, ...], color: tuple[int, int, int], tolerance: int = 0) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, color, strict=True))


# --- text -----------------------------------------------------------------------------------

def test_nfkc_folds_full_width_letters_and_ligatures():
    params = TextNormaliseParams(unicode_form="NFKC")
    assert normalise_text("ＡＢＣ １２３ ﬁne", params) == "ABC 123 fine"


def test_nfc_composes_but_keeps_compatibility_forms():
    params = TextNormaliseParams(unicode_form="NFC")
    assert normalise_text("Cafe\u0301 ＡＢＣ", params) == "Caf\u00e9 ＡＢＣ"


def test_whitespace_is_folded_and_trimmed():
    params = TextNormaliseParams()
    assert normalise_text("  hello\t\n  big \u00a0\u3000 world \r\n", params) == "hello big world"


def test_whitespace_folding_can_be_turned_off():
    params = TextNormaliseParams(unicode_form="none", fold_whitespace=False)
    assert normalise_text(" a\t b ", params) == " a\t b "


def test_lowercase_option_casefolds():
    assert normalise_text("Straße HELLO", TextNormaliseParams(lowercase=True)) == "strasse hello"
    assert normalise_text("Straße HELLO", TextNormaliseParams()) == "Straße HELLO"


def test_form_none_keeps_text_as_is():
    params = TextNormaliseParams(unicode_form="none", fold_whitespace=False)
    text = "ＡＢＣ Cafe\u0301 ﬁ"
    assert normalise_text(text, params) == text


def test_normalise_texts_hashes_the_normalised_text():
    [result] = normalise_texts(["ＡＢＣ  x"], TextNormaliseParams())
    assert result.reason is None
    assert result.text == "ABC x"
    assert result.content_hash == text_hash("ABC x")


def test_equal_content_gets_equal_hash():
    a, b = normalise_texts(["Hello   ＷＯＲＬＤ", "Hello WORLD\n"], TextNormaliseParams())
    assert a.content_hash == b.content_hash


@pytest.mark.parametrize("text", ["", "   ", "\u3000\u00a0\t\n"])
def test_text_that_folds_to_nothing_gets_a_reason(text):
    [result] = normalise_texts([text], TextNormaliseParams())
    assert result.reason == "empty_after_normalise"
    assert result.text is None and result.content_hash is None


# --- images: size and resize policies -------------------------------------------------------

@pytest.mark.parametrize("resize", ["shorter_side_crop", "pad", "stretch"])
@pytest.mark.parametrize("source", [(90, 30), (30, 90), (17, 17), (400, 300)])
def test_output_is_exactly_size_by_size(resize, source):
    params = unchecked(size=32, resize=resize)
    result = normalise_image(encode(Image.new("RGB", source, RED)), params)
    assert (result.width, result.height) == (32, 32)
    assert decode(result.image).size == (32, 32)


def test_shorter_side_crop_keeps_the_centre():
    result = normalise_image(encode(bands([RED, GREEN, BLUE])), unchecked(size=30))
    image = decode(result.image).convert("RGB")
    assert close(image.getpixel((2, 15)), GREEN, 2)
    assert close(image.getpixel((27, 15)), GREEN, 2)


def test_pad_keeps_everything_on_the_background():
    params = unchecked(size=90, resize="pad", background=BACKGROUND)
    image = decode(normalise_image(encode(bands([RED, GREEN, BLUE])), params).image).convert("RGB")
    assert image.getpixel((45, 2)) == BACKGROUND  # padding above
    assert image.getpixel((45, 87)) == BACKGROUND  # and below
    assert close(image.getpixel((10, 45)), RED, 2)
    assert close(image.getpixel((80, 45)), BLUE, 2)


def test_stretch_keeps_everything_without_padding():
    params = unchecked(size=90, resize="stretch", background=BACKGROUND)
    image = decode(normalise_image(encode(bands([RED, GREEN, BLUE])), params).image).convert("RGB")
    assert close(image.getpixel((10, 2)), RED, 2)
    assert close(image.getpixel((80, 87)), BLUE, 2)


# --- images: colour, orientation, depth -----------------------------------------------------

def half_transparent(size: int = 32) -> Image.Image:
    """Left half opaque red; right half fully transparent green (the green must never show)."""
    image = Image.new("RGBA", (size, size), (0, 255, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, size // 2, size))
    return image


@pytest.mark.parametrize("resize", ["shorter_side_crop", "pad", "stretch"])
def test_transparent_pixels_become_the_background(resize):
    params = unchecked(size=32, resize=resize, background=BACKGROUND)
    image = decode(normalise_image(encode(half_transparent()), params).image)
    assert image.mode == "RGB"
    assert image.getpixel((28, 16)) == BACKGROUND
    assert image.getpixel((3, 16)) == RED


def test_paletted_transparency_becomes_the_background():
    paletted = half_transparent().convert("RGB").convert("P")
    params = unchecked(size=32, background=BACKGROUND)
    index = paletted.getpixel((28, 16))
    image = decode(normalise_image(encode(paletted, "GIF", transparency=index), params).image)
    assert image.getpixel((28, 16)) == BACKGROUND
    assert image.getpixel((3, 16)) == RED


def test_grey_with_alpha_is_composited():
    la = Image.new("LA", (32, 32), (200, 0))
    image = decode(normalise_image(encode(la), unchecked(size=32, background=BACKGROUND)).image)
    assert image.getpixel((16, 16)) == BACKGROUND


def test_exif_orientation_is_applied():
    """A wide JPEG tagged 'rotate 90 CW' (Orientation=6) is displayed tall: padding goes left and right."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (60, 30), RED), "JPEG", quality=95, exif=exif.tobytes())
    params = unchecked(size=60, resize="pad", background=WHITE)
    image = decode(normalise_image(data, params).image)
    assert close(image.getpixel((2, 30)), WHITE, 8)  # left of a 30x60 picture: background
    assert close(image.getpixel((57, 30)), WHITE, 8)
    assert close(image.getpixel((30, 2)), RED, 8)  # top: picture (unrotated, this would be padding)
    assert close(image.getpixel((30, 57)), RED, 8)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_to_8_bit(fmt):
    image = Image.new("I;16", (32, 32), 0)
    image.paste(65535, (0, 0, 16, 32))
    data = encode(image, fmt)
    assert decode(data).mode.startswith("I")
    out = decode(normalise_image(data, unchecked(size=32, resize="stretch")).image)
    assert close(out.getpixel((3, 16)), WHITE, 1)
    assert out.getpixel((28, 16)) == (0, 0, 0)


def test_16_bit_big_endian_grayscale_is_scaled_to_8_bit():
    """A 16-bit big-endian TIFF (mode I;16B, as many scanners write) must normalise like I;16."""
    image = Image.new("I;16B", (32, 32), 0)
    image.paste(65535, (0, 0, 16, 32))
    data = encode(image, "TIFF")
    assert decode(data).mode == "I;16B"
    out = decode(normalise_image(data, unchecked(size=32, resize="stretch")).image)
    assert close(out.getpixel((3, 16)), WHITE, 1)


# --- images: encoding and determinism -------------------------------------------------------

def test_png_output_hash_is_the_pixel_hash():
    result = normalise_image(encode(bands([RED, GREEN, BLUE])), unchecked(size=24))
    assert result.image.startswith(b"\x89PNG\r\n\x1a\n")
    image = decode(result.image)
    assert image.mode == "RGB"
    assert result.content_hash == pixel_hash("RGB", image.size, image.tobytes())


def test_jpeg_encoding():
    params = unchecked(size=24, encoding="jpeg", jpeg_quality=80)
    result = normalise_image(encode(bands([RED, GREEN, BLUE])), params)
    assert result.image.startswith(b"\xff\xd8")
    assert decode(result.image).format == "JPEG"
    assert decode(result.image).size == (24, 24)


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_two_calls_give_identical_bytes_and_hash(encoding):
    data = encode(bands([RED, GREEN, BLUE]), "JPEG")
    params = unchecked(size=24, encoding=encoding)
    first, second = normalise_images([data, data], params)
    assert first.image == second.image
    assert first.content_hash == second.content_hash


def test_same_picture_in_two_formats_normalises_alike():
    picture = bands([RED, GREEN, BLUE])
    as_png, as_bmp = normalise_images([encode(picture, "PNG"), encode(picture, "BMP")], unchecked(size=24))
    assert as_png.image == as_bmp.image
    assert as_png.content_hash == as_bmp.content_hash


@pytest.mark.parametrize("flags, text, expected", [
    ({"urls": True}, "see https://example.com/a?b=1 now", "see <url> now"),
    ({"emails": True}, "write to a.b+c@ex-ample.co.uk!", "write to <email>!"),
    ({"phones": True}, "call +44 20 7946 0958 or (555) 123-4567.", "call <phone> or <phone>."),
    ({"numbers": True}, "paid 25.50 for 3 items", "paid <number> for <number> items"),
    ({"urls": True, "numbers": True}, "www.x.org/2024 in 2024", "<url> in <number>"),
    ({}, "call 0123456789 at www.x.org", "call 0123456789 at www.x.org"),
])
def test_placeholders_replace_only_what_is_switched_on(flags, text, expected):
    from pipeline.params import TextNormaliseParams
    from pipeline.steps.normalise import normalise_text

    assert normalise_text(text, TextNormaliseParams(placeholders=flags)) == expected


def test_grey_output_mode_and_png_level_keep_pixels():
    """mode L gives 8-bit grey; the PNG level changes only the size of the bytes, not the pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(buffer, format="PNG")
    grey = normalise_image(buffer.getvalue(), unchecked(size=32, mode="L"))
    assert Image.open(io.BytesIO(grey.image)).mode == "L"
    smooth = encode(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))))
    stored, compressed = (normalise_image(smooth, unchecked(size=32, png_compress_level=k)) for k in (0, 9))
    assert stored.content_hash == compressed.content_hash
    assert len(stored.image) > 32 * 32 * 3 > 4 * len(compressed.image)
    assert decode(stored.image).tobytes() == decode(compressed.image).tobytes()


# --- images: the one decode, integrity and quality checks -----------------------------------

def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random RGB pixels: passes every quality check and compresses badly, so a cut hits pixel data."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels but carries no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_pixel_data_is_corrupt(fmt):
    """The full decode catches a file cut in its pixel data (clean's header checks cannot for JPEG)."""
    data = encode(noise((128, 128)), fmt)
    result = normalise_image(data[: len(data) // 2], ImageNormaliseParams(size=32))
    assert result.reason == "corrupt_image"
    assert result.detail and result.image is None


def test_a_header_without_pixels_is_corrupt():
    assert normalise_image(png_header_only(100, 100), ImageNormaliseParams()).reason == "corrupt_image"


def blp_unknown_compression() -> bytes:
    """A BLP1 header that clean accepts, naming a compression Pillow's decoder does not know."""
    return b"BLP1" + struct.pack("<iIIIi", 5, 0, 24, 24, 0) + bytes(4) + bytes(2048)


def test_content_of_another_format_is_corrupt_not_decoded():
    """BLP content whose decoder raised NotImplementedError (found by tests/test_properties.py) is
    no longer handed to that decoder: only the formats of the accepted extensions are read."""
    result = normalise_image(blp_unknown_compression(), ImageNormaliseParams())
    assert result.reason == "corrupt_image"
    assert result.detail.startswith("UnidentifiedImageError: ")


def test_a_jpeg_decoded_at_a_reduced_scale_is_still_judged_at_its_full_size():
    """The DCT-scaled decode is for speed only: size checks see the header's size."""
    data = encode(noise((600, 90)), "JPEG", quality=90)  # 6.67:1, decodable at 1/2 scale for size 32
    result = normalise_image(data, ImageNormaliseParams(size=32, quality={"working_side": 32}))
    assert (result.reason, result.detail) == ("extreme_aspect_ratio", "6.667 > 6")


@pytest.mark.parametrize("size, reason", [
    ((15, 40), "too_small"),
    ((40, 15), "too_small"),
    ((16, 16), None),
    ((200, 20), "extreme_aspect_ratio"),  # 10:1 > 6:1
    ((20, 121), "extreme_aspect_ratio"),
    ((120, 20), None),  # exactly 6:1
])
def test_shape_checks(size, reason):
    result = normalise_image(encode(noise(size)), ImageNormaliseParams(size=16))
    assert result.reason == reason
    if reason == "too_small":
        assert result.detail == f"{min(size)} < 16"
    elif reason:
        assert result.detail.endswith("> 6")


QUALITY_CASES = {
    "near_constant": Image.new("RGB", (64, 64), (90, 120, 30)),
    "too_dark": Image.fromarray(np.random.default_rng(0).integers(0, 45, (64, 64, 3), dtype=np.uint8)),
    "grayscale": noise((64, 64)).convert("L").convert("RGB"),
}


@pytest.mark.parametrize("check", sorted(QUALITY_CASES))
def test_quality_check_action_drop_flag_or_off(check):
    """Each quality check follows its action: drop (reason), flag (kept with the flag), or off."""
    data = encode(QUALITY_CASES[check])
    default = getattr(ImageQualityParams(), check)
    for action, expect_reason, expect_flag in (("drop", check, False), ("flag", None, True), ("off", None, False)):
        quality = ImageQualityParams(**{check: default.model_copy(update={"action": action})})
        result = normalise_image(data, ImageNormaliseParams(size=32, quality=quality))
        assert result.reason == expect_reason, (action, result)
        assert (check in [name for name, _ in result.flags]) == expect_flag, (action, result.flags)
        assert (result.image is None) == (action == "drop")


def test_quality_is_measured_before_resizing():
    """A 16 px stripe pattern is sharp at 256 px but a blur at 8 px: the check sees the source."""
    stripes = np.zeros((256, 256, 3), np.uint8)
    stripes[:, ::2] = 255
    result = normalise_image(encode(Image.fromarray(stripes)), ImageNormaliseParams(size=8))
    assert result.reason is None and "blurry" not in dict(result.flags)
    assert decode(result.image).size == (8, 8)
