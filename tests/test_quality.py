"""Unit tests for pipeline.steps.quality: synthetic bad images are flagged, a good one is not."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.params import ImageQualityParams
from pipeline.steps.quality import Flag, check_images, check_quality, decode_rgb, measure


def sharp_colourful(seed: int = 0, size: int = 256) -> np.ndarray:
    """Saturated random rectangles on a mid-grey field, plus mild noise: sharp, colourful, mid-bright."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size, 3), 128, np.uint8)
    for _ in range(40):
        x, y = rng.integers(0, size - 20, 2)
        w, h = rng.integers(10, 60, 2)
        pixels[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    return np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)


def names(flags: list[Flag]) -> list[str]:
    return [f.name for f in flags]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_sharp_colourful_image_passes():
    assert check_quality(sharp_colourful()) == []


@pytest.mark.parametrize(("pixels", "expected"), [
    (np.full((128, 128, 3), 128, np.uint8), {"near_constant", "low_information", "blurry", "grayscale"}),
    (np.zeros((128, 128, 3), np.uint8), {"near_constant", "low_information", "too_dark", "blurry", "grayscale"}),
    (np.full((128, 128, 3), 255, np.uint8), {"near_constant", "low_information", "too_bright", "blurry", "grayscale"}),
])
def test_flat_black_and_white_images_are_flagged(pixels, expected):
    assert set(names(check_quality(pixels))) == expected


def test_a_heavily_blurred_image_is_flagged_blurry():
    blurred = cv2.GaussianBlur(sharp_colourful(), (0, 0), 4)
    flags = check_quality(blurred)
    assert "blurry" in names(flags)
    assert "near_constant" not in names(flags)  # blur removes detail, not contrast


def test_blur_is_judged_at_the_working_size_whatever_the_resolution():
    """A photo stored at 1024 px and at 256 px measures equally sharp, though its native Laplacians differ."""
    large = sharp_colourful(size=1024)
    small = cv2.resize(large, (256, 256), interpolation=cv2.INTER_AREA)
    assert measure(large).sharpness == pytest.approx(measure(small).sharpness, rel=0.01)
    native = [cv2.Laplacian(cv2.cvtColor(p, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for p in (large, small)]
    assert max(native) > 2 * min(native)


def test_a_grey_picture_stored_as_rgb_is_flagged_grayscale_only():
    grey = cv2.cvtColor(cv2.cvtColor(sharp_colourful(), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    flags = check_quality(grey)
    assert names(flags) == ["grayscale"] and flags[0].value == 0.0


def test_a_thin_strip_is_too_small_and_extreme():
    strip = sharp_colourful()[:200, :10]
    flags = {f.name: f for f in check_quality(strip)}
    assert {"too_small", "extreme_aspect_ratio"} <= set(flags)
    assert flags["too_small"] == Flag("too_small", 10, 16)  # the params' default minimum side
    assert flags["extreme_aspect_ratio"].value == 20.0


def test_bytes_pil_and_array_give_the_same_flags():
    pixels = cv2.GaussianBlur(sharp_colourful(1), (0, 0), 5)
    expected = check_quality(pixels)
    assert check_quality(png(pixels)) == expected
    assert check_quality(Image.fromarray(pixels)) == expected
    assert check_images([png(pixels), sharp_colourful(2)]) == [expected, []]


def test_thresholds_come_from_the_params_section_and_off_turns_a_check_off():
    grey = np.full((64, 64, 3), 128, np.uint8)
    off = {name: {"min": 0.0, "action": "off"} for name in ("near_constant", "low_information", "blurry", "grayscale")}
    assert check_quality(grey, ImageQualityParams.model_validate(off)) == []
    assert names(check_quality(grey, ImageQualityParams.model_validate({**off, "grayscale": {"min": 2.0}}))) == ["grayscale"]
    assert names(check_quality(grey, ImageQualityParams(blurry={"min": 0.0}))) != []  # a threshold of 0 is not off


def test_the_step_and_params_share_one_default():
    """The defaults a user reads in params are the ones the checks apply (there is no second set)."""
    strip = sharp_colourful()[:100, :17]  # 17 px wide: above the 16 px minimum, aspect 5.9 under the 6.0 maximum
    assert "too_small" not in names(check_quality(strip)) and "extreme_aspect_ratio" not in names(check_quality(strip))
    assert ImageQualityParams().too_small.min_width == 16 and ImageQualityParams().extreme_aspect_ratio.max == 6.0


def test_flag_detail_reads_value_against_limit():
    assert Flag("too_dark", 3.0, 25.0).detail == "3 < 25"
    assert Flag("too_bright", 250.5, 230.0).detail == "250.5 > 230"


def test_on_real_photos_only_the_grey_and_non_photos_are_flagged(shared_datasets: Path):
    files = sorted((shared_datasets / "hymenoptera" / "train" / "ants").iterdir())
    flagged = {f.name: names(flags) for f, flags in zip(files, check_images([f.read_bytes() for f in files])) if flags}
    assert flagged == {
        "154124431_65460430f2.jpg": ["grayscale"],  # a black-and-white photo
        "175998972.jpg": ["low_information", "too_bright"],  # a rendered ant on white
        "imageNotFound.gif": ["low_information", "too_bright", "grayscale"],  # a placeholder
    }


def test_on_real_photos_a_sigma_2_blur_is_flagged_blurry(shared_datasets: Path):
    """The default `blurry` threshold sits between the sharp photos and the same photos blurred."""
    files = sorted((shared_datasets / "hymenoptera" / "val" / "bees").iterdir())
    pixels = [decode_rgb(f.read_bytes()) for f in files]
    small = [cv2.resize(p, (p.shape[1] // 2, p.shape[0] // 2), interpolation=cv2.INTER_AREA) for p in pixels]
    blurred = [cv2.GaussianBlur(s, (0, 0), 2) for s in small]
    assert all("blurry" not in names(flags) for flags in check_images(small))
    assert all("blurry" in names(flags) for flags in check_images(blurred))
