"""Image quality: measure decoded pixels once, then flag what a threshold says is unusable.

`measure` reduces a picture to a few numbers (size, aspect ratio, grey-level spread and entropy,
mean luminance, sharpness, colourfulness). Each check compares one of them with its threshold
and returns `None` or a `Flag` with the measured value. Everything except the size is measured
on a working copy whose shorter side is at most `working_side` pixels (downscaled by
`working_copy`, never upscaled), so the sharpness of a large photo does not depend on its resolution.
The default thresholds are measured on the 398 hymenoptera photos (see `QualityThresholds`).
"""
from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipeline.steps.pixels import pillow_pixel_guard_off, shrink_to_side


@dataclass(slots=True)
class QualityThresholds:
    """Limits for each check; `None` turns a check off (e.g. `min_chroma` in a grey corpus).

    Defaults are set against the 398 hymenoptera files. Measured at working side 256, the photos
    among them (all but the two non-photos named below) have sides >= 130 px, aspect <= 3.42, grey std
    >= 17.3, entropy >= 4.2 bits, brightness 46.6 to 209.7, sharpness >= 76.4 (a Gaussian blur of
    sigma 2 at the working size brings every photo to 40.1 or below), chroma >= 3.4 for colour
    photos. They flag 4 files: two black-and-white photos (chroma 0.0 and 1.96), a white "image
    not found" placeholder and a rendered ant on a white background (entropy < 2, brightness > 239).
    """

    min_width: int | None = 32
    min_height: int | None = 32
    max_aspect_ratio: float | None = 5.0
    min_grey_std: float | None = 8.0  # near_constant: grey standard deviation, 0-255 scale
    min_entropy: float | None = 3.0  # low_information: grey-level histogram entropy, bits (max 8)
    min_brightness: float | None = 25.0  # too_dark: mean grey level
    max_brightness: float | None = 230.0  # too_bright
    min_sharpness: float | None = 45.0  # blurry: variance of the 3x3 Laplacian at the working size
    min_chroma: float | None = 2.0  # grayscale: mean of max(R, G, B) - min(R, G, B) per pixel
    working_side: int = 256

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> QualityThresholds:
        """Thresholds from a plain mapping; an unknown key is an error that names it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown quality threshold(s) {unknown}; expected some of {sorted(known)}.")
        return cls(**values)


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

Check = Callable[[Measures, QualityThresholds], Flag | None]


def too_small(m: Measures, t: QualityThresholds) -> Flag | None:
    """Width or height below its minimum (the value is the failing side)."""
    if t.min_width is not None and m.width < t.min_width:
        return Flag("too_small", float(m.width), float(t.min_width))
    if t.min_height is not None and m.height < t.min_height:
        return Flag("too_small", float(m.height), float(t.min_height))
    return None


def extreme_aspect_ratio(m: Measures, t: QualityThresholds) -> Flag | None:
    """Longer side over shorter side above the maximum."""
    return _above("extreme_aspect_ratio", m.aspect_ratio, t.max_aspect_ratio)


def near_constant(m: Measures, t: QualityThresholds) -> Flag | None:
    """Grey levels barely vary: a flat or almost flat image."""
    return _below("near_constant", m.grey_std, t.min_grey_std)


def low_information(m: Measures, t: QualityThresholds) -> Flag | None:
    """Few distinct grey levels in use: flat, posterised or mostly one colour."""
    return _below("low_information", m.entropy, t.min_entropy)


def too_dark(m: Measures, t: QualityThresholds) -> Flag | None:
    """Mean luminance below the minimum."""
    return _below("too_dark", m.brightness, t.min_brightness)


def too_bright(m: Measures, t: QualityThresholds) -> Flag | None:
    """Mean luminance above the maximum."""
    return _above("too_bright", m.brightness, t.max_brightness)


def blurry(m: Measures, t: QualityThresholds) -> Flag | None:
    """Little high-frequency energy at the working size."""
    return _below("blurry", m.sharpness, t.min_sharpness)


def grayscale(m: Measures, t: QualityThresholds) -> Flag | None:
    """No colour: a grey picture, possibly stored as RGB, in a colour corpus."""
    return _below("grayscale", m.chroma, t.min_chroma)


CHECKS: tuple[Check, ...] = (
    too_small, extreme_aspect_ratio, near_constant, low_information, too_dark, too_bright, blurry, grayscale,
)


def check_quality(image: bytes | Image.Image | np.ndarray,
                  thresholds: QualityThresholds | Mapping[str, object] | None = None) -> list[Flag]:
    """Every failed check of one image, in `CHECKS` order; an empty list means no objection."""
    t = _thresholds(thresholds)
    pixels = image if isinstance(image, np.ndarray) else decode_rgb(image)
    m = measure(pixels, working_side=t.working_side)
    return failed_checks(m, t)


def failed_checks(measures: Measures, thresholds: QualityThresholds) -> list[Flag]:
    """The flag of every check the measures fail, in `CHECKS` order."""
    return [flag for check in CHECKS if (flag := check(measures, thresholds)) is not None]


def check_images(images: Sequence[bytes | Image.Image | np.ndarray],
                 thresholds: QualityThresholds | Mapping[str, object] | None = None) -> list[list[Flag]]:
    """`check_quality` over a chunk."""
    t = _thresholds(thresholds)
    return [check_quality(image, t) for image in images]


def _thresholds(thresholds: QualityThresholds | Mapping[str, object] | None) -> QualityThresholds:
    if thresholds is None:
        return QualityThresholds()
    if isinstance(thresholds, QualityThresholds):
        return thresholds
    return QualityThresholds.from_dict(thresholds)


def _below(name: str, value: float, limit: float | None) -> Flag | None:
    return Flag(name, value, limit) if limit is not None and value < limit else None


def _above(name: str, value: float, limit: float | None) -> Flag | None:
    return Flag(name, value, limit) if limit is not None and value > limit else None
