"""Unit tests for pipeline.steps.quality: synthetic bad images are flagged, a good one is not."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SHARED
from pipeline.params import ImageQualityParams
from pipeline.steps.quality import Flag, check_images, check_quality, decode_rgb, fix_relative_limits, measure, measure_columns


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


def shorter_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """Resized (area interpolation) so that the shorter side is `side`, as a corpus of small photos is made."""
    height, width = pixels.shape[:2]
    scale = side / min(height, width)
    return cv2.resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def hymenoptera_pixels() -> list[np.ndarray]:
    """The 398 hymenoptera photos, decoded once for the module."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (they exist beside the checkout in CI only)")
    return [decode_rgb(f.read_bytes()) for f in sorted(SHARED.glob("hymenoptera/*/*/*"))]


def blurry_share(images: list[np.ndarray], params: ImageQualityParams | None = None) -> float:
    return float(np.mean(["blurry" in names(flags) for flags in check_images(images, params)]))


@pytest.mark.parametrize("side", [224, 128, 64])
def test_small_photos_are_not_blurry_until_blurred_at_their_own_size(hymenoptera_pixels, side):
    """Images under the working side are measured as they are, so the absolute threshold holds at any size."""
    small = [shorter_side(p, side) for p in hymenoptera_pixels]
    assert blurry_share(small) < 0.05
    assert blurry_share([cv2.GaussianBlur(p, (0, 0), 2) for p in small]) >= 0.95


def test_a_soft_corpus_flags_its_own_blurred_outliers_with_a_relative_limit(hymenoptera_pixels):
    """Upscaled thumbnails are soft by nature: the absolute limit flags 1 in 10 of them; a limit
    relative to the corpus flags few of them and still every one blurred on purpose."""
    soft = [cv2.resize(shorter_side(p, 44), (128, 128), interpolation=cv2.INTER_CUBIC) for p in hymenoptera_pixels]
    planted = np.arange(len(soft)) % 20 == 7
    corpus = [cv2.GaussianBlur(p, (0, 0), 2) if plant else p for p, plant in zip(soft, planted, strict=True)]
    relative = ImageQualityParams(blurry={"min": None, "outlier_iqr": 1.0})
    measured = pd.DataFrame([{c: getattr(measure(p), c) for c in measure_columns(relative)} for p in corpus])
    fixed, decided = fix_relative_limits(relative, measured)
    flagged = np.array(["blurry" in names(flags) for flags in check_images(corpus, fixed)])
    assert blurry_share([p for p, plant in zip(corpus, planted, strict=True) if not plant]) > 0.08
    assert flagged[~planted].mean() < 0.05 and flagged[planted].all()
    assert decided["blurry"]["applied"] == fixed.blurry.min < 45


def test_relative_limits_are_tukey_fences_on_the_scale_of_the_measure():
    params = ImageQualityParams(too_dark={"min": None, "outlier_iqr": 1.5}, too_bright={"max": 230.0, "outlier_iqr": 1.5},
                                blurry={"min": 45.0, "outlier_iqr": 1.0})
    measured = pd.DataFrame({"brightness": [100.0, 110.0, 120.0, 130.0, 140.0],
                             "sharpness": np.expm1([4.0, 5.0, 6.0, 7.0, 8.0])})
    fixed, decided = fix_relative_limits(params, measured)
    assert decided["too_dark"]["fence"] == fixed.too_dark.min == 110.0 - 1.5 * 20.0
    assert decided["too_bright"]["fence"] == 130.0 + 1.5 * 20.0 and fixed.too_bright.max == 160.0  # the stricter
    assert decided["blurry"]["fence"] == pytest.approx(np.expm1(5.0 - 2.0), rel=1e-6)  # log(1 + sharpness)
    assert fixed.blurry.min == 45.0  # the absolute limit is stricter than this fence
    assert fixed.grayscale == params.grayscale  # checks without outlier_iqr are untouched


def test_relative_limits_do_not_depend_on_the_order_of_the_images():
    rng = np.random.default_rng(3)
    measured = pd.DataFrame({"sharpness": rng.lognormal(5, 1, 1001), "brightness": rng.normal(120, 30, 1001)})
    params = ImageQualityParams(blurry={"min": None, "outlier_iqr": 1.5}, too_dark={"min": 25.0, "outlier_iqr": 2.0})
    first = fix_relative_limits(params, measured)
    again = fix_relative_limits(params, measured.sample(frac=1.0, random_state=7))
    assert first == again


def test_a_check_needs_a_limit_unless_it_is_off():
    with pytest.raises(ValueError, match="set min, outlier_iqr or both"):
        ImageQualityParams(blurry={"min": None})
    with pytest.raises(ValueError, match="greater than 0"):
        ImageQualityParams(blurry={"min": 45.0, "outlier_iqr": 0})
    assert ImageQualityParams(blurry={"min": None, "action": "off"}).blurry.action == "off"
