"""Shared by every source format: one-line error messages and the pixel operations applied after loading.

Every loader returns native uint8 pixels (N, H, W, C); `finish` then applies the user's `image_size` (resize the
shorter side, centre-crop) and `channels` (grey <-> RGB) the same way for all formats, so a folder, an IDX file and
an .npz give the same result for the same pixels.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
from PIL import Image

from ddpmkit.data.dataset import ImageDataset
from ddpmkit.errors import DataError

SPLITS = ("train", "test", "all")

# ITU-R BT.601 luma, the weights Pillow's convert("L") uses; applied in numpy so every format shares one formula.
LUMA = np.array([0.299, 0.587, 0.114])

# Bicubic for every resize: Pillow's resize filters the whole support when shrinking, so it also antialiases.
RESAMPLE = Image.Resampling.BICUBIC


def show(path: str | os.PathLike) -> str:
    """A path quoted for a one-line message; control characters in a file name cannot break the line."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return repr(text)


def one_line(text: object) -> str:
    """Squash a library's exception text (which may hold newlines) into one line."""
    return " ".join(str(text).split())


def file_error(path: str | os.PathLike, problem: str, fix: str | None = None) -> DataError:
    """DataError 'data: 'PATH': problem[: fix]' -- the message format of every bad-input error here."""
    message = f"data: {show(path)}: {one_line(problem)}"
    if fix:
        message += f": {fix}"
    return DataError(message)


def check_options(image_size: int | None, channels: int | None, split: str) -> None:
    """Reject impossible load options before touching any file."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral)
                                   or image_size < 1):
        raise DataError(f"data: image size must be a positive integer, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise DataError(f"data: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if split not in SPLITS:
        raise DataError(f"data: split must be one of {', '.join(SPLITS)}, got {split!r}")


def composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend uint8 colour (..., C) over a white background by uint8 alpha (...,); returns uint8 (..., C).

    White, not black: transparent pixels hold arbitrary colour (often black), and a transparent icon or sprite is
    meant to be seen on a page, so white is how the image looks to the person who chose it.
    """
    a = alpha.astype(np.uint32)[..., None]
    blended = (color.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255  # rounded integer blend
    return blended.astype(np.uint8)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) with C in {1, 3} -> C = `channels`: grey is repeated, RGB becomes BT.601 luma."""
    have = images.shape[3]
    if have == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=3)
    grey = np.rint(images.astype(np.float64) @ LUMA)
    return np.clip(grey, 0, 255).astype(np.uint8)[..., None]


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size`, then centre-crop to size x size; a no-op at the right size."""
    width, height = img.size
    if (width, height) == (size, size):
        return img
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), RESAMPLE)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Apply `fit_square` to each uint8 (H, W, C) image of a (N, H, W, C) array."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
        out[i] = np.asarray(fit_square(pil, size)).reshape(size, size, -1)
    return out


def finish(images: np.ndarray, labels: np.ndarray | None, name: str, *, image_size: int | None,
           channels: int | None, skipped: list[str] | None = None,
           class_names: list[str] | None = None) -> ImageDataset:
    """Native uint8 (N, H, W, C) -> ImageDataset with the requested size and channels; checks it is usable."""
    if len(images) == 0:
        raise file_error(name, "holds no images", "check the path and the split")
    if image_size is not None:
        images = resize_images(images, image_size)
    height, width = images.shape[1:3]
    if height != width:
        raise file_error(name, f"images are {width}x{height} pixels (width x height), not square",
                         "pass --image-size N to resize and centre-crop them")
    if channels is not None:
        images = to_channels(images, channels)
    if labels is not None:
        labels = labels.astype(np.int64)
    skipped = list(skipped or [])
    names = list(class_names) if class_names is not None and labels is not None else None
    return ImageDataset(np.ascontiguousarray(images), labels, name, len(skipped), skipped, names)


def concat_parts(parts: list[tuple[str, np.ndarray, np.ndarray | None]], source: str | os.PathLike, *,
                 image_size: int | None, channels: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Join the (part name, images, labels) of several splits or batches into one (images, labels).

    Parts may differ in channels (the result takes `channels`, else colour if any part has it) and, only when
    `image_size` resizes them, in size. Labels are kept only if every part has them.
    """
    target = channels or max(images.shape[3] for _, images, _ in parts)
    arrays = [to_channels(resize_images(images, image_size) if image_size else images, target)
              for _, images, _ in parts]
    first_name, first = parts[0][0], arrays[0]
    for (part_name, _, _), images in zip(parts[1:], arrays[1:]):
        if images.shape[1:3] != first.shape[1:3]:
            raise file_error(source, f"{part_name} images are {images.shape[2]}x{images.shape[1]} pixels but "
                                     f"{first_name} images are {first.shape[2]}x{first.shape[1]}",
                             "pass --image-size N to resize and centre-crop them all")
    labels = [part_labels for _, _, part_labels in parts]
    joined_labels = np.concatenate(labels).astype(np.int64) if all(x is not None for x in labels) else None
    return np.concatenate(arrays), joined_labels


def with_alpha_removed(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 4) RGBA -> (N, H, W, 3) composited on white (see `composite_on_white`)."""
    return composite_on_white(images[..., :3], images[..., 3])
