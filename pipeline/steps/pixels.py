"""Decoding helpers shared by the image steps."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image


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


def resample(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`pixels` (H x W or H x W x C, uint8) at `size` = (width, height).

    Shrinking is area averaging by the largest whole factor per axis (OpenCV's fast integer path),
    then bilinear for the remaining factor, which is below 2 (the way Pillow's `reducing_gap`
    works): anti-aliased like a full area resize at a fraction of its cost for non-integer
    ratios. Enlarging is bicubic. The last rows or columns that do not fill a whole factor are
    left out of the averaging (fewer than the factor, at the bottom and right edges).
    """
    height, width = pixels.shape[:2]
    target_w, target_h = size
    fx, fy = max(1, width // target_w), max(1, height // target_h)
    if fx > 1 or fy > 1:
        whole = np.ascontiguousarray(pixels[: height // fy * fy, : width // fx * fx])
        pixels = cv2.resize(whole, (width // fx, height // fy), interpolation=cv2.INTER_AREA)
    if pixels.shape[1] == target_w and pixels.shape[0] == target_h:
        return np.ascontiguousarray(pixels)
    enlarge = target_w > pixels.shape[1] or target_h > pixels.shape[0]
    return cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_LINEAR)


def shrink_to_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """`pixels` scaled so the shorter side is at most `side` (never enlarged)."""
    height, width = pixels.shape[:2]
    scale = side / max(1, min(height, width))
    if scale >= 1:
        return pixels
    return resample(pixels, (max(1, round(width * scale)), max(1, round(height * scale))))
