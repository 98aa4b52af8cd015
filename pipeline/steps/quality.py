"""Image quality: measure decoded pixels once, then flag what a threshold says is unusable.

`measure` reduces a picture to a few numbers (size, aspect ratio, grey-level spread and entropy,
mean luminance, sharpness, colourfulness). Each check compares one of them with its threshold
and returns `None` or a `Flag` with the measured value. Everything except the size is measured
on a working copy whose shorter side is at most `working_side` pixels (downscaled by
`working_copy`, never upscaled), so the sharpness of a large photo does not depend on its resolution.
Thresholds and actions come from the validated `normalise.image.quality` section (one definition,
one set of defaults: `pipeline.params.ImageQualityParams`, measured on the 398 hymenoptera photos).
"""
from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipeline.params import ImageQualityParams, MaxCheck, MinCheck
from pipeline.steps.pixels import pillow_pixel_guard_off, shrink_to_side


@dataclass(slots=True)
class Measures:
    """What the checks look at, for one image."""

    width: int
    height: int
    aspect_ratio: float
    grey_std: float
    entropy: float
    brightness: float
    sharpness: float
    chroma: float


@dataclass(slots=True, frozen=True)
class Flag:
    """A failed check: its name, the measured value and the limit it crossed."""

    name: str
    value: float
    limit: float

    @property
    def detail(self) -> str:
        """'value < limit' or 'value > limit', for a ledger or a log line."""
        return f"{self.value:.4g} {'>' if self.value > self.limit else '<'} {self.limit:.4g}"


# --- measuring ------------------------------------------------------------------------------

def decode_rgb(image: bytes | Image.Image) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of encoded bytes (EXIF orientation applied) or a PIL image."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    with pillow_pixel_guard_off(), Image.open(io.BytesIO(image)) as opened:  # clean refuses pixel bombs first
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))


def measure(pixels: np.ndarray, *, working_side: int = 256) -> Measures:
    """Every measure of an H x W x 3 RGB (or H x W grey) uint8 array."""
    height, width = pixels.shape[:2]
    return measure_working_copy(working_copy(pixels, working_side), width=width, height=height)


def working_copy(pixels: np.ndarray, working_side: int) -> np.ndarray:
    """The copy the measures other than size are taken on: shorter side at most `working_side`.

    The last step of the reduction is plain bilinear (see `pixels.resample`): cheap, and the
    thresholds are calibrated on copies made this way.
    """
    return shrink_to_side(np.ascontiguousarray(pixels), working_side, anti_alias=False)


def measure_working_copy(small: np.ndarray, *, width: int, height: int) -> Measures:
    """Every measure, from a working copy and the size of the image it was made from."""
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small
    mean, std = cv2.meanStdDev(grey)
    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    return Measures(
        width=width,
        height=height,
        aspect_ratio=max(width, height) / max(min(width, height), 1),
        grey_std=float(std[0, 0]),
        entropy=grey_entropy(grey),
        brightness=float(mean[0, 0]),
        sharpness=float(laplacian_std[0, 0]) ** 2,
        chroma=mean_chroma(small),
    )


def grey_entropy(grey: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin grey-level histogram: 0 for a flat image, 8 at most."""
    if grey.dtype == np.uint8 and grey.size < 2**24:  # OpenCV's float32 counts are exact below 2^24
        counts = cv2.calcHist([np.ascontiguousarray(grey)], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    else:
        counts = np.bincount(grey.ravel(), minlength=256)
    p = counts[counts > 0] / grey.size
    return float(-(p * np.log2(p)).sum())


def mean_chroma(pixels: np.ndarray) -> float:
    """Mean over pixels of max(R, G, B) - min(R, G, B): 0 for grey pixels however they are stored."""
    if pixels.ndim == 2:
        return 0.0
    # OpenCV channel by channel: numpy's max(axis=2) over 3 values per pixel is about 50 times slower.
    channels = cv2.split(np.ascontiguousarray(pixels))
    high, low = functools.reduce(cv2.max, channels), functools.reduce(cv2.min, channels)
    return float(cv2.mean(cv2.subtract(high, low))[0])


# --- checks ---------------------------------------------------------------------------------

Check = Callable[[Measures, ImageQualityParams], Flag | None]


def too_small(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Width or height below its minimum (the value is the failing side)."""
    check = q.too_small
    if check.action == "off":
        return None
    if m.width < check.min_width:
        return Flag("too_small", float(m.width), float(check.min_width))
    if m.height < check.min_height:
        return Flag("too_small", float(m.height), float(check.min_height))
    return None


def extreme_aspect_ratio(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Longer side over shorter side above the maximum."""
    return _above("extreme_aspect_ratio", m.aspect_ratio, q.extreme_aspect_ratio)


def near_constant(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Grey levels barely vary: a flat or almost flat image."""
    return _below("near_constant", m.grey_std, q.near_constant)


def low_information(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Few distinct grey levels in use: flat, posterised or mostly one colour."""
    return _below("low_information", m.entropy, q.low_information)


def too_dark(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Mean luminance below the minimum."""
    return _below("too_dark", m.brightness, q.too_dark)


def too_bright(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Mean luminance above the maximum."""
    return _above("too_bright", m.brightness, q.too_bright)


def blurry(m: Measures, q: ImageQualityParams) -> Flag | None:
    """Little high-frequency energy at the working size."""
    return _below("blurry", m.sharpness, q.blurry)


def grayscale(m: Measures, q: ImageQualityParams) -> Flag | None:
    """No colour: a grey picture, possibly stored as RGB, in a colour corpus."""
    return _below("grayscale", m.chroma, q.grayscale)


CHECKS: tuple[Check, ...] = (
    too_small, extreme_aspect_ratio, near_constant, low_information, too_dark, too_bright, blurry, grayscale,
)


def failed_checks(measures: Measures, params: ImageQualityParams) -> list[Flag]:
    """The flag of every check (not turned off) the measures fail, in `CHECKS` order."""
    return [flag for check in CHECKS if (flag := check(measures, params)) is not None]


def judge(measures: Measures, params: ImageQualityParams) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    """(reason, detail, ()) for the first failed check whose action is drop; else (None, None, flags)."""
    failed = failed_checks(measures, params)
    drops = [f for f in failed if getattr(params, f.name).action == "drop"]
    if drops:
        return drops[0].name, drops[0].detail, ()
    return None, None, tuple((f.name, f.detail) for f in failed)


def check_quality(image: bytes | Image.Image | np.ndarray, params: ImageQualityParams | None = None) -> list[Flag]:
    """Every failed check of one image, in `CHECKS` order; an empty list means no objection."""
    params = params or ImageQualityParams()
    pixels = image if isinstance(image, np.ndarray) else decode_rgb(image)
    return failed_checks(measure(pixels, working_side=params.working_side), params)


def check_images(images: Sequence[bytes | Image.Image | np.ndarray], params: ImageQualityParams | None = None) -> list[list[Flag]]:
    """`check_quality` over a chunk."""
    return [check_quality(image, params) for image in images]


def _below(name: str, value: float, check: MinCheck) -> Flag | None:
    return Flag(name, value, check.min) if check.action != "off" and value < check.min else None


def _above(name: str, value: float, check: MaxCheck) -> Flag | None:
    return Flag(name, value, check.max) if check.action != "off" and value > check.max else None
