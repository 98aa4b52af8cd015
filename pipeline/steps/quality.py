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
import pandas as pd
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
    failed = check.action != "off" and check.min is not None and value < check.min
    return Flag(name, value, check.min) if failed else None


def _above(name: str, value: float, check: MaxCheck) -> Flag | None:
    failed = check.action != "off" and check.max is not None and value > check.max
    return Flag(name, value, check.max) if failed else None


# --- corpus-relative limits -----------------------------------------------------------------

MEASURED_BY = {  # the measure each threshold check compares (too_small compares the sides)
    "extreme_aspect_ratio": "aspect_ratio", "near_constant": "grey_std", "low_information": "entropy",
    "too_dark": "brightness", "too_bright": "brightness", "blurry": "sharpness", "grayscale": "chroma",
}


# Measures whose spread grows with their value (sharpness spans 10 to 10,000 on ordinary photos):
# their fences are taken on log(1 + value), where the distribution is close to symmetric.
LOG_SCALED = frozenset({"sharpness", "chroma", "aspect_ratio"})


def relative_checks(params: ImageQualityParams) -> list[str]:
    """The checks (on) whose limit depends on the corpus: those with `outlier_iqr` set."""
    return [name for name in MEASURED_BY
            if getattr(params, name).action != "off" and getattr(params, name).outlier_iqr is not None]


def measure_columns(params: ImageQualityParams) -> list[str]:
    """The `Measures` fields the relative checks need, each once, in a fixed order."""
    return sorted({MEASURED_BY[name] for name in relative_checks(params)})


def fix_relative_limits(params: ImageQualityParams, measures: pd.DataFrame) -> tuple[ImageQualityParams, dict[str, dict]]:
    """`params` with each relative check's limit made absolute, and what was decided, per check.

    `measures` holds one row per decodable image of the corpus (columns: `measure_columns`). A min
    check's fence is Q1 - k x IQR (a max check's, Q3 + k x IQR) of its measure (of log(1 + measure)
    for `LOG_SCALED`, mapped back), quartiles by linear interpolation over the sorted values, so
    any order of the same rows gives the same limit; the limit applied is the stricter of the fence
    and the absolute limit.
    """
    decided, updates = {}, {}
    for name in relative_checks(params):
        check = getattr(params, name)
        measure = MEASURED_BY[name]
        values = np.sort(measures[measure].to_numpy(dtype=np.float64))
        if values.size == 0:
            continue
        scaled = np.log1p(values) if measure in LOG_SCALED else values
        q1, q3 = (float(q) for q in np.quantile(scaled, [0.25, 0.75]))
        is_min = isinstance(check, MinCheck)
        fence = q1 - check.outlier_iqr * (q3 - q1) if is_min else q3 + check.outlier_iqr * (q3 - q1)
        if measure in LOG_SCALED:
            q1, q3, fence = (max(float(np.expm1(v)), 0.0) for v in (q1, q3, fence))
        absolute = check.min if is_min else check.max
        applied = fence if absolute is None else (max(fence, absolute) if is_min else min(fence, absolute))
        decided[name] = {"measure": MEASURED_BY[name], "q1": round(q1, 6), "q3": round(q3, 6), "fence": round(fence, 6),
                         "absolute": absolute, "applied": round(applied, 6)}
        updates[name] = check.model_copy(update={"min" if is_min else "max": round(applied, 6)})
    return params.model_copy(update=updates), decided
