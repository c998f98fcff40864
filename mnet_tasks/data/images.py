"""The single image reader shared by every loader, so all tasks decode files the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(ValueError):
    """Raised when a file cannot be decoded into an RGB image; the message always names the file."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as an ``HxWx3`` uint8 RGB array, upright as a viewer would show it.

    EXIF orientation is applied because phone photos store pixels sideways. Grayscale, palette,
    alpha and 16-bit images are converted so that every model sees three 8-bit channels.
    """
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return _to_rgb_array(upright)
    except (OSError, SyntaxError, ValueError) as err:
        # OSError covers missing, empty (UnidentifiedImageError) and truncated files.
        raise ImageReadError(f"cannot read image {path}: {err}") from err


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255 (a white image); rescale instead.
        gray = (np.asarray(image, dtype=np.int64).clip(0, 65535) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("P", "PA"):
        # Going through RGBA resolves palette transparency without PIL's conversion warning.
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"), dtype=np.uint8)
