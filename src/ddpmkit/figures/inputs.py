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


def image_like_training(path: str | Path, pipeline, flag: str) -> np.ndarray:
    """One image file of any size as uint8 (H, W, C) of the model's: resized on the shorter side and centre-cropped,
    and converted to its channel count, as training data are (data.common.fit_square, to_channels)."""
    from ..data.common import fit_square
    from ..data.decode import read_image
    from ..data.folder import as_array

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{flag} {str(path)!r}: no such image file (or give --data SPEC and an index, list or range)")
    img, _ = read_image(path)
    return as_array(fit_square(img, pipeline.image_size), pipeline.channels)


def parse_indices(text: str, flag: str = "--image") -> list[int] | None:
    """An index `5`, a list `0,5,9` or a range `0:40` (40 not included) -> the indices; None if it is none of them."""
    text = str(text).strip()
    try:
        if ":" in text:
            start, stop = (int(v) if v else None for v in text.split(":", 1))
            if start is None or stop is None or stop <= start:
                raise DataError(f"{flag} {text!r}: a range is START:STOP with STOP > START, e.g. 0:40")
            return list(range(start, stop))
        return [int(v) for v in text.split(",")]
    except ValueError:
        return None


def images_for(pipeline, image: str, data: str | None, split: str, cache=None, flag: str = "--image"):
    """(uint8 (N, H, W, C), labels (N,) or None, a description) for --image: a file (any size, fitted as training
    data are), or with --data an index `5`, a list `0,5,9` or a range `0:40` of its split."""
    indices = parse_indices(image, flag)
    if data is None:
        if indices is not None and not Path(image).is_file():
            raise DataError(f"{flag} {image!r}: an index, list or range needs --data SPEC (e.g. --data digits)")
        return image_like_training(image, pipeline, flag)[None], None, str(image)
    if indices is None:
        raise DataError(f"{flag} {image!r}: with --data, {flag} is an index, a list 0,5,9 or a range 0:40")
    ds = dataset_for(pipeline, data, split, cache=cache)
    images = np.stack([image_from_dataset(ds, i, flag, split) for i in indices])
    labels = None if ds.labels is None else ds.labels[indices]
    return images, labels, f"{len(indices)} image(s) of {ds.name} ({split})"
