"""Decoding helpers shared by the image steps."""
from __future__ import annotations

import contextlib
import io
import math
import struct
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image

# What Pillow raises on a file it cannot read: OSError (UnidentifiedImageError), ValueError,
# SyntaxError and EOFError, and what its format readers let escape on malformed headers and pixel
# data: TypeError, IndexError and struct.error (which its own `Image.open` takes for "not this
# format"), KeyError (TIFF compressions), NotImplementedError (DDS pixel formats, BLP compressions)
# and AttributeError (SPIDER). Found by fuzzing; see tests/test_properties.py.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, struct.error, KeyError,
              NotImplementedError, AttributeError)
# The formats of the image extensions a source may hold, tried whatever a file's extension says
# (Pillow's JPEG reader also opens a camera's MPO). Pillow would otherwise try every reader it has
# on a corpus file, EPS among them, which runs Ghostscript on the file's PostScript wherever
# Ghostscript is installed.
RASTER_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


def open_raster(data: bytes) -> Image.Image:
    """A corpus image opened lazily, read only as one of `RASTER_FORMATS` (any other content is
    Pillow's UnidentifiedImageError)."""
    return Image.open(io.BytesIO(data), formats=RASTER_FORMATS)


@contextlib.contextmanager
def pillow_pixel_guard_off() -> Iterator[None]:
    """Turn off Pillow's own decompression-bomb limit (89M pixels) for the duration.

    clean applies the configured `max_pixels` itself, from the header, before any pixel is
    decoded; Pillow's fixed limit would otherwise overrule a user who raised it.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def resample(pixels: np.ndarray, size: tuple[int, int], *, anti_alias: bool = True) -> np.ndarray:
    """`pixels` (H x W or H x W x C, uint8) at `size` = (width, height).

    Shrinking is area averaging by the largest whole factor per axis (OpenCV's fast integer path),
    then bilinear for the factor left, which is below 2. With `anti_alias` (for pixels a model is
    trained on), a Gaussian blur comes first, whose variance plus bilinear's matches the filter of
    Pillow's anti-aliased bilinear resize (sigma^2 = (factor^2 - 1) / 6 per axis): about as smooth
    as OpenCV's area resize (tests/test_pixels.py) at a third of its cost on a photo. Without it (for the quality
    measures, whose thresholds are calibrated so) the last step aliases a little. Enlarging is
    bicubic. Rows or columns that do not fill a whole factor (fewer than the factor, at the bottom
    and right edges) are left out.
    """
    height, width = pixels.shape[:2]
    target_w, target_h = size
    fx, fy = max(1, width // target_w), max(1, height // target_h)
    if fx > 1 or fy > 1:
        whole = np.ascontiguousarray(pixels[: height // fy * fy, : width // fx * fx])
        pixels = cv2.resize(whole, (width // fx, height // fy), interpolation=cv2.INTER_AREA)
    height, width = pixels.shape[:2]
    if (width, height) == (target_w, target_h):
        return np.ascontiguousarray(pixels)
    if target_w > width or target_h > height:
        return cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_CUBIC)
    if anti_alias:
        sigma_x, sigma_y = (math.sqrt(max(0.0, ((n / t) ** 2 - 1) / 6)) for n, t in ((width, target_w), (height, target_h)))
        if max(sigma_x, sigma_y) >= 0.2:  # below, the blur moves no pixel by more than a level or two
            pixels = cv2.GaussianBlur(pixels, (0, 0), sigmaX=max(sigma_x, 0.01), sigmaY=max(sigma_y, 0.01))
    return cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_LINEAR)


def shrink_to_side(pixels: np.ndarray, side: int, *, anti_alias: bool = True) -> np.ndarray:
    """`pixels` scaled so the shorter side is at most `side` (never enlarged); see `resample`."""
    height, width = pixels.shape[:2]
    scale = side / max(1, min(height, width))
    if scale >= 1:
        return pixels
    return resample(pixels, (max(1, round(width * scale)), max(1, round(height * scale))), anti_alias=anti_alias)
