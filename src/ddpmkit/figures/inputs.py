"""Real images for the paper's figures, checked against what a trained model makes: one-line errors otherwise.

Images stay uint8 (H, W, C) here, as the data loaders give them; the figures scale them to [-1, 1] themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import ImageDataset, load_dataset
from ..errors import DataError


def describe(image_size: int, channels: int) -> str:
    return f"{image_size}x{image_size}x{channels}"


def check_fits(images: np.ndarray, pipeline, what: str) -> np.ndarray:
    """`images` (..., H, W, C) uint8 if H, W, C are the model's; else a DataError naming `what`."""
    size, channels = pipeline.image_size, pipeline.channels
    if images.dtype != np.uint8 or images.shape[-3:] != (size, size, channels):
        got = "x".join(map(str, images.shape[-3:]))
        raise DataError(f"{what}: {got} (HxWxC) {images.dtype}, but the model makes uint8 {describe(size, channels)}"
                        ": pass images of that size and channel count")
    return images


def dataset_for(pipeline, spec: str | None, split: str, cache=None) -> ImageDataset:
    """The data set `spec` names (default: the run's own), with the run's resizing when it is the run's own.

    cache: as `load_dataset` takes it (a folder of images is mapped from the decoded-image cache)."""
    data = pipeline.config.data
    spec = spec or data.spec
    options = {"image_size": data.image_size, "channels": data.channels} if spec == data.spec else {}
    ds = load_dataset(spec, split=split, cache=cache, **options)
    check_fits(ds.images, pipeline, f"--data {spec}")
    return ds


def image_from_dataset(ds: ImageDataset, index: str | int, flag: str, split: str) -> np.ndarray:
    """Image number `index` of a data set's split, uint8 (H, W, C)."""
    try:
        i = int(index)
    except ValueError:
        raise DataError(f"{flag} {index!r}: with --data, {flag} is an index into the data set, not a path") from None
    if not 0 <= i < len(ds):
        raise DataError(f"{flag} {i}: out of range; the {split} split of {ds.name} has {len(ds)} images "
                        f"(0..{len(ds) - 1})")
    return ds.images[i]


def image_from_file(path: str | Path, pipeline, flag: str) -> np.ndarray:
    """One image file as uint8 (H, W, C), which must be the model's size and channel count."""
    from ..data.decode import read_image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{flag} {str(path)!r}: no such image file (or give --data SPEC and an index)")
    img, _ = read_image(path)
    pixels = np.asarray(img, dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels  # (H, W, C)
    return check_fits(pixels, pipeline, f"{flag} {str(path)!r}")
