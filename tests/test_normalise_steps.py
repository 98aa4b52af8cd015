"""Normalise steps: one canonical form per modality, so equal content gets equal bytes and hashes."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.params import ImageNormaliseParams, TextNormaliseParams
from pipeline.records import pixel_hash, text_hash
from pipeline.steps.normalise import normalise_image, normalise_images, normalise_text, normalise_texts

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
BACKGROUND = (10, 20, 30)


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
    params = ImageNormaliseParams(size=32, resize=resize)
    result = normalise_image(encode(Image.new("RGB", source, RED)), params)
    assert (result.width, result.height) == (32, 32)
    assert decode(result.image).size == (32, 32)


def test_shorter_side_crop_keeps_the_centre():
    result = normalise_image(encode(bands([RED, GREEN, BLUE])), ImageNormaliseParams(size=30))
    image = decode(result.image).convert("RGB")
    assert close(image.getpixel((2, 15)), GREEN, 2)
    assert close(image.getpixel((27, 15)), GREEN, 2)


def test_pad_keeps_everything_on_the_background():
    params = ImageNormaliseParams(size=90, resize="pad", background=BACKGROUND)
    image = decode(normalise_image(encode(bands([RED, GREEN, BLUE])), params).image).convert("RGB")
    assert image.getpixel((45, 2)) == BACKGROUND  # padding above
    assert image.getpixel((45, 87)) == BACKGROUND  # and below
    assert close(image.getpixel((10, 45)), RED, 2)
    assert close(image.getpixel((80, 45)), BLUE, 2)


def test_stretch_keeps_everything_without_padding():
    params = ImageNormaliseParams(size=90, resize="stretch", background=BACKGROUND)
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
    params = ImageNormaliseParams(size=32, resize=resize, background=BACKGROUND)
    image = decode(normalise_image(encode(half_transparent()), params).image)
    assert image.mode == "RGB"
    assert image.getpixel((28, 16)) == BACKGROUND
    assert image.getpixel((3, 16)) == RED


def test_paletted_transparency_becomes_the_background():
    paletted = half_transparent().convert("RGB").convert("P")
    params = ImageNormaliseParams(size=32, background=BACKGROUND)
    index = paletted.getpixel((28, 16))
    image = decode(normalise_image(encode(paletted, "GIF", transparency=index), params).image)
    assert image.getpixel((28, 16)) == BACKGROUND
    assert image.getpixel((3, 16)) == RED


def test_grey_with_alpha_is_composited():
    la = Image.new("LA", (32, 32), (200, 0))
    image = decode(normalise_image(encode(la), ImageNormaliseParams(size=32, background=BACKGROUND)).image)
    assert image.getpixel((16, 16)) == BACKGROUND


def test_exif_orientation_is_applied():
    """A wide JPEG tagged 'rotate 90 CW' (Orientation=6) is displayed tall: padding goes left and right."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (60, 30), RED), "JPEG", quality=95, exif=exif.tobytes())
    params = ImageNormaliseParams(size=60, resize="pad", background=WHITE)
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
    out = decode(normalise_image(data, ImageNormaliseParams(size=32, resize="stretch")).image)
    assert close(out.getpixel((3, 16)), WHITE, 1)
    assert out.getpixel((28, 16)) == (0, 0, 0)


def test_16_bit_big_endian_grayscale_is_scaled_to_8_bit():
    """A 16-bit big-endian TIFF (mode I;16B, as many scanners write) must normalise like I;16."""
    image = Image.new("I;16B", (32, 32), 0)
    image.paste(65535, (0, 0, 16, 32))
    data = encode(image, "TIFF")
    assert decode(data).mode == "I;16B"
    out = decode(normalise_image(data, ImageNormaliseParams(size=32, resize="stretch")).image)
    assert close(out.getpixel((3, 16)), WHITE, 1)


# --- images: encoding and determinism -------------------------------------------------------

def test_png_output_hash_is_the_pixel_hash():
    result = normalise_image(encode(bands([RED, GREEN, BLUE])), ImageNormaliseParams(size=24))
    assert result.image.startswith(b"\x89PNG\r\n\x1a\n")
    image = decode(result.image)
    assert image.mode == "RGB"
    assert result.content_hash == pixel_hash("RGB", image.size, image.tobytes())


def test_jpeg_encoding():
    params = ImageNormaliseParams(size=24, encoding="jpeg", jpeg_quality=80)
    result = normalise_image(encode(bands([RED, GREEN, BLUE])), params)
    assert result.image.startswith(b"\xff\xd8")
    assert decode(result.image).format == "JPEG"
    assert decode(result.image).size == (24, 24)


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_two_calls_give_identical_bytes_and_hash(encoding):
    data = encode(bands([RED, GREEN, BLUE]), "JPEG")
    params = ImageNormaliseParams(size=24, encoding=encoding)
    first, second = normalise_images([data, data], params)
    assert first.image == second.image
    assert first.content_hash == second.content_hash


def test_same_picture_in_two_formats_normalises_alike():
    picture = bands([RED, GREEN, BLUE])
    as_png, as_bmp = normalise_images([encode(picture, "PNG"), encode(picture, "BMP")], ImageNormaliseParams(size=24))
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
    from pipeline.params import ImageNormaliseParams
    from pipeline.steps.normalise import normalise_image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(buffer, format="PNG")
    grey = normalise_image(buffer.getvalue(), ImageNormaliseParams(size=32, mode="L"))
    assert Image.open(io.BytesIO(grey.image)).mode == "L"
    fast, small = (normalise_image(buffer.getvalue(), ImageNormaliseParams(size=32, png_compress_level=k)) for k in (0, 9))
    assert fast.content_hash == small.content_hash and len(fast.image) > len(small.image)
