"""Built-in data set "digits": scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test part).

It ships inside scikit-learn, so it needs no download and is the default data set: 1797 grey 8x8 images with
levels 0..16, mapped to uint8 by round(v * 255 / 16) (16 -> 255, 8 -> 128), labels 0..9 kept.

Splits (decision): "train" is the first 1500 images and "test" the fixed last 297 (indices 1500..1796), disjoint,
so that the NLL and the memorisation check of `ddpm eval` measure generalisation to images the model never saw;
"all" is all 1797.
"""

from __future__ import annotations

import numpy as np

from ddpmkit.data.common import finish
from ddpmkit.data.dataset import ImageDataset

DIGITS_LEVELS = 16
DIGITS_TEST_SIZE = 297


def load_digits(*, image_size: int | None, channels: int | None, split: str) -> ImageDataset:
    """The "digits" data set as uint8 (N, 8, 8, 1) [see module docstring for the splits]."""
    from sklearn.datasets import load_digits as sklearn_digits  # scikit-learn is slow to import; only on use

    bunch = sklearn_digits()
    levels = bunch.images  # (1797, 8, 8) float64 holding integers 0..16
    images = np.rint(levels * 255.0 / DIGITS_LEVELS).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    if split == "test":
        images, labels = images[-DIGITS_TEST_SIZE:], labels[-DIGITS_TEST_SIZE:]
    elif split == "train":
        images, labels = images[:-DIGITS_TEST_SIZE], labels[:-DIGITS_TEST_SIZE]
    return finish(images, labels, "digits", image_size=image_size, channels=channels,
                  class_names=[str(i) for i in range(10)])
