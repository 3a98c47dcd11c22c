"""One image file -> an upright 8-bit Pillow image in "L" or "RGB", or a one-line DataError.

Decisions, per Pillow mode (the file's own pixels, before the user's `channels` is applied):
- "1" -> "L" (0 or 255). "L", "RGB" as they are. "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "P" -> "RGB".
- 16-bit ("I;16", "I;16B", "I;16L", "I;16N") and 32-bit "I" are read as 16-bit levels 0..65535 (Pillow decodes
  16-bit PNG and TIFF to these modes) and scaled, not clipped, to 8 bits: round(v / 257), so 65535 -> 255,
  32896 -> 128. An "I" image with values outside 0..65535 is refused rather than guessed at. (16-bit RGB PNGs
  arrive as "RGB": Pillow itself keeps their high byte.)
- "F" (float) is read as intensity in [0, 1] -> round(v * 255). Per-image min/max stretching was rejected: it would
  give each image its own brightness scale. Values outside [0, 1] (beyond a 1e-3 tolerance) or NaN are refused.
- Transparency ("RGBA", "LA", "PA", "La", "RGBa", or a "tRNS" colour in "P"/"L"/"RGB") is composited on white,
  keeping grey images grey (see `common.composite_on_white` for why white).
- EXIF orientation is applied; an EXIF block that cannot be parsed is treated as "no rotation" (logged at debug).
- Pillow's decompression-bomb guard is kept and tightened: above Image.MAX_IMAGE_PIXELS (where Pillow only warns)
  the image is refused too, because a data set image that large is almost surely a mistake.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpmkit.data.common import composite_on_white, file_error, one_line

log = logging.getLogger(__name__)

# What Pillow and its format plugins raise for a file that is missing, unreadable, truncated or not an image.
# Pillow's parsers are not consistent (a broken PNG chunk is a SyntaxError, a bad palette an IndexError), so the
# list is wide; it wraps only the open-and-decode of one file, where no ddpmkit code runs.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError, struct.error,
                 zlib.error, Image.DecompressionBombError, Image.DecompressionBombWarning)

ORIENTATION_TAG = 0x0112
TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
F_TOLERANCE = 1e-3


def native_channels(mode: str) -> int:
    """1 for single-channel grey modes, 3 for everything else (a palette "P" image counts as colour)."""
    return 1 if mode in GREY_MODES else 3


def read_image(path: Path) -> tuple[Image.Image, str]:
    """Decode `path` fully; returns (8-bit upright "L"/"RGB" image, the file's original mode). DataError if bad."""
    try:
        # Pillow warns, and goes on, for oddities such as corrupt EXIF: those are logged at debug level below.
        # Its decompression-bomb warning becomes an error instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode every pixel here, so a truncated file fails inside this try
                mode = img.mode
                img = upright(img, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise file_error(path, f"image over Pillow's size limit ({err})",
                         "shrink or remove it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it") from None
    except PermissionError:
        raise file_error(path, "permission denied", "make the file readable (chmod a+r)") from None
    except UnidentifiedImageError:
        raise file_error(path, "not an image Pillow can identify (wrong extension, empty or corrupt header)",
                         "re-save or remove the file") from None
    except FileNotFoundError:
        raise file_error(path, "file not found (a broken symbolic link?)", "fix or remove the link") from None
    except DECODE_ERRORS as err:
        raise file_error(path, f"not a readable image ({type(err).__name__}: {err})",
                         "re-save or remove the file") from None
    for warning in caught:
        log.debug("data: %s: %s", path, one_line(warning.message))
    return to_8bit(img, mode, path), mode


def upright(img: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF orientation tag; an EXIF block that cannot be parsed means no rotation."""
    try:
        orientation = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception as err:  # noqa: BLE001 -- any failure inside Pillow's TIFF/EXIF parser means "no tag"
        log.debug("data: %s: EXIF not readable (%s), keeping the stored orientation", path, err)
        orientation = 1
    method = TRANSPOSE_FOR_ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img  # pixels are loaded: closing the file is fine


def to_8bit(img: Image.Image, mode: str, path: Path) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" with 8-bit levels (rules in the module docstring)."""
    if mode in SIXTEEN_BIT_MODES:
        return _from_sixteen_bit(img, path)
    if mode == "F":
        return _from_float(img, path)
    if mode in ALPHA_MODES or "transparency" in img.info:
        return _without_alpha(img, mode)
    if mode == "L" or mode == "RGB":
        return img
    return img.convert("L" if mode == "1" else "RGB")


def _from_sixteen_bit(img: Image.Image, path: Path) -> Image.Image:
    levels = np.asarray(img).astype(np.int64)
    low, high = int(levels.min()), int(levels.max())
    if low < 0 or high > 65535:
        raise file_error(path, f"mode {img.mode} values span {low}..{high}, outside 16-bit 0..65535",
                         "save it as an 8- or 16-bit image")
    return Image.fromarray(np.rint(levels / 257.0).astype(np.uint8))


def _from_float(img: Image.Image, path: Path) -> Image.Image:
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise file_error(path, "mode F image holds NaN or infinite values", "save it as an 8-bit image")
    low, high = float(values.min()), float(values.max())
    if low < -F_TOLERANCE or high > 1 + F_TOLERANCE:
        raise file_error(path, f"mode F values span [{low:g}, {high:g}], expected [0, 1]",
                         "save it as an 8-bit image, or scale it to [0, 1]")
    return Image.fromarray(np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8))


def _without_alpha(img: Image.Image, mode: str) -> Image.Image:
    grey = native_channels(mode) == 1
    rgba = np.asarray(img.convert("LA" if grey else "RGBA"))
    color = composite_on_white(rgba[..., :-1], rgba[..., -1])
    return Image.fromarray(color[..., 0] if grey else color)
