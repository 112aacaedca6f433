"""Decode encoded image bytes into a fully loaded RGB Pillow image, safely.

Every failure becomes an :class:`~vestis.errors.ImageError` that names the source and says why
(not an image, truncated, too large, ...); Pillow's warnings and exceptions never escape.
The pixel limit is checked on the header size, before any pixel data is decoded, so a
decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vestis.errors import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
"""File extensions (lower case) that catalogue readers treat as images."""

_WHITE = (255, 255, 255)

# ``warnings.catch_warnings`` swaps a process-wide filter list: concurrent uses from several
# threads can restore each other's filters. The lock keeps those swaps ordered; it is held only
# for the cheap steps (header parsing, EXIF orientation, colour conversion), never for decoding.
_WARNINGS_LOCK = threading.Lock()


MAX_PIXELS = 40_000_000  # decompression-bomb guard: larger images are refused


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


@contextmanager
def _quiet() -> Iterator[None]:
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode.startswith("I") or im.mode == "F":
        # 16/32-bit greyscale: Pillow's own conversion clips at 255, so rescale 16-bit data first.
        arr = np.asarray(im, dtype=np.float32)
        if im.mode != "F":
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, source: str = "") -> Image.Image:
    """Decode JPEG/PNG/WebP/... bytes to a loaded RGB image with EXIF orientation applied.

    Raises ImageError for empty or non-image data, images over ``max_pixels`` (checked on the
    header, before decoding), truncated files and any other decoding failure. Pillow's own
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) still applies on top of ``max_pixels``.
    """
    where = f" ({source})" if source else ""
    if not data:
        raise ImageError(f"not an image: empty data{where}")
    try:
        with _quiet():
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(f"too large: {width}x{height} > {max_pixels:,} pixels{where}")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not an image: unrecognised format{where}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"too large: over Pillow's {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixel "
                         f"limit (> {max_pixels:,} pixels){where}") from None
    except Exception as e:  # noqa: BLE001 - any parser failure means the header is unusable
        raise ImageError(f"not an image: unreadable header ({e}){where}") from None
    try:
        im.load()
    except Exception as e:  # noqa: BLE001 - decoder errors come as OSError, SyntaxError, ValueError...
        reason = "truncated" if "truncated" in str(e).lower() else f"corrupt image data ({e})"
        raise ImageError(f"{reason}{where}") from None
    try:
        with _quiet():
            ImageOps.exif_transpose(im, in_place=True)
            return to_rgb(im)
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"cannot convert image to RGB ({e}){where}") from None
