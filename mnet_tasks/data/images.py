"""The single image reader shared by every loader, so all tasks decode files the same way."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(ValueError):
    """Raised when a file cannot be decoded into an RGB image; the message always names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = str(path), reason


def read_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Read an image as an ``HxWx3`` uint8 RGB array, upright as a viewer would show it.

    With ``min_side``, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8: libjpeg's reduced-size
    decoding, PIL's ``draft``) whose shorter side is still at least ``min_side`` pixels: a model that sees 128 px
    gains nothing from decoding a 500x375 photo at full size (its decode is the costliest step of a loader
    worker), and the reduced decode smooths like a resize. Other formats, and JPEGs too small to reduce, are
    decoded at full size.

    EXIF orientation is applied because phone photos store pixels sideways. Grayscale, palette,
    alpha and 16-bit images are converted so that every model sees three 8-bit channels. A truncated file is an
    error, never a partly grey picture: PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its default).
    """
    try:
        with Image.open(path) as image:
            if min_side is not None and image.format == "JPEG":
                image.draft("RGB", (min_side, min_side))  # the scale s <= min(width, height) // min_side
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image already upright
            return _to_rgb_array(image)
    except Exception as err:  # decoders of a dozen formats raise many exception types on corrupt bytes
        raise ImageReadError(path, _describe(path, err)) from err


def upright_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image :func:`read_rgb` returns, from the file's header without decoding the
    pixels: for annotation files that omit the sizes (exports of labeling tools)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            quarter_turn = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
    except Exception as err:  # as read_rgb: any decoder's exception on corrupt bytes
        raise ImageReadError(path, _describe(path, err)) from err
    return (height, width) if quarter_turn else (width, height)


def _describe(path: str | Path, error: Exception) -> str:
    """A short reason for the skipped-files report: the common cases in words, else the decoder's own message."""
    if isinstance(error, FileNotFoundError):
        return "missing file"
    if isinstance(error, UnidentifiedImageError):
        return "empty file (0 bytes)" if os.path.getsize(path) == 0 else "not an image format PIL can identify"
    if isinstance(error, OSError) and "truncated" in str(error).lower():  # PIL words it per format
        return f"truncated file ({error})"
    return f"{type(error).__name__}: {error}"


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255 (a white image); rescale instead.
        gray = (np.asarray(image, dtype=np.int64).clip(0, 65535) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("P", "PA"):
        # Going through RGBA resolves palette transparency without PIL's conversion warning.
        image = image.convert("RGBA")
    return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
