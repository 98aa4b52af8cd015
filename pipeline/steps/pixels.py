"""Decoding helpers shared by the image steps."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
