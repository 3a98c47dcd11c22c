"""The built-in "digits" data set and the "fashion-mnist" name."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from ddpmkit.data import idx, load_dataset


@pytest.fixture(scope="module")
def digits():
    return sklearn_digits()


def test_digits_pixels_and_labels(digits):
    ds = load_dataset("digits", split="all")
    assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.uint8
    assert ds.name == "digits" and (ds.image_size, ds.channels, ds.num_skipped) == (8, 1, 0)
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(ds.images[..., 0], expected)
    np.testing.assert_array_equal(ds.labels, digits.target)
    assert ds.labels.dtype == np.int64
    # 16 -> 255, 8 -> 128 (127.5 rounds to even), 0 -> 0
    assert set(np.unique(ds.images)) >= {0, 128, 255}


def test_digits_splits(digits):
    test = load_dataset("digits", split="test")
    assert len(test) == 297
    np.testing.assert_array_equal(test.labels, digits.target[-297:])
    train = load_dataset("DIGITS", split="train")
    assert len(load_dataset("digits", split="all")) == 1797 and len(train) == 1500  # train and test are disjoint
    np.testing.assert_array_equal(train.labels, digits.target[:1500])


def test_digits_resized_to_rgb():
    ds = load_dataset("digits", image_size=16, channels=3)
    assert ds.images.shape == (1500, 16, 16, 3)
    assert (ds.images[..., 0] == ds.images[..., 2]).all()  # grey repeated into RGB
    small = load_dataset("digits")
    # bicubic upsampling keeps the mean brightness close
    assert abs(ds.images.astype(float).mean() - small.images.astype(float).mean()) < 3


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch, data_error):
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    data_error(lambda: load_dataset("fashion-mnist"), "nowhere", "apt-get install dataset-fashion-mnist")


@pytest.mark.skipif(not idx.has_idx(idx.FASHION_MNIST_DIR), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_test_split():
    ds = load_dataset("fashion-mnist", split="test")
    assert ds.images.shape == (10000, 28, 28, 1) and ds.name == "fashion-mnist"
    assert ds.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
