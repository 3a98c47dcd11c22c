"""Memorisation: a copying "model" is flagged, fresh real images are not, the closest pairs become a PNG."""

import numpy as np
import pytest
from PIL import Image

from ddpmkit.data import load_dataset
from ddpmkit.errors import DataError, UserError
from ddpmkit.evaluate.memorisation import PAIRS_PER_ROW, memorisation, nearest_neighbours, save_closest_pairs


@pytest.fixture(scope="module")
def digits():
    """Three disjoint sets of real digits: train (1000), held-out (400), and fresh ones standing in for samples."""
    images = load_dataset("digits", split="all").images
    return images[:1000], images[1000:1400], images[1400:]


def _copies(train, n, seed=0):
    """A "model" that returns training images with +-2 grey levels of noise."""
    rng = np.random.default_rng(seed)
    picked = train[rng.choice(len(train), n, replace=False)].astype(np.int16)
    return np.clip(picked + rng.integers(-2, 3, picked.shape), 0, 255).astype(np.uint8)


def test_a_model_that_copies_its_training_set_is_flagged(digits):
    train, heldout, _ = digits
    out = memorisation(_copies(train, 300), train, heldout)
    assert out["ratio"] < 0.1
    assert out["gen_to_train_median"] < 0.02 < out["heldout_to_train_median"]  # RMS in [-1, 1]: 2 levels ~ 0.01


def test_new_real_images_look_like_held_out_ones(digits):
    train, heldout, fresh = digits
    out = memorisation(fresh, train, heldout)
    assert 0.7 <= out["ratio"] <= 1.4
    assert out["nearest_index"].shape == (len(fresh),) and out["nearest_distance"].shape == (len(fresh),)


def test_nearest_neighbours_match_brute_force(digits):
    train, _, fresh = digits
    idx, dist = nearest_neighbours(fresh[:50], train, batch_size=64)  # several train chunks and query blocks
    q = fresh[:50].reshape(50, -1) / 127.5 - 1.0
    t = train.reshape(len(train), -1) / 127.5 - 1.0
    rms = np.sqrt(((q[:, None, :] - t[None]) ** 2).mean(-1))  # (50, 1000)
    np.testing.assert_allclose(dist, rms.min(1), atol=1e-6)
    np.testing.assert_allclose(rms[np.arange(50), idx], rms.min(1), atol=1e-6)  # a tie may pick either image
    _, exact_dist = nearest_neighbours(train[:5], train)
    assert np.all(exact_dist == 0.0)  # a copy reads exactly 0, not float32 rounding noise


def test_closest_pairs_png(digits, tmp_path):
    train, heldout, _ = digits
    generated = _copies(train, 40, seed=1)
    out = memorisation(generated, train, heldout)
    shown = save_closest_pairs(generated, train, out, tmp_path / "pairs.png", n=16)
    assert len(shown) == 16 and np.all(np.diff(out["nearest_distance"][shown]) >= 0)  # closest first
    cell, pad = 32 + 1, 1  # 8x8 digits are enlarged 4x to make_grid's 32-pixel minimum; 1-pixel gaps
    cols, rows = 3 * PAIRS_PER_ROW - 1, 16 // PAIRS_PER_ROW  # pair, blank, pair, ...
    with Image.open(tmp_path / "pairs.png") as img:
        assert img.size == (cols * cell + pad, rows * cell + pad)


def test_bad_inputs(digits):
    train, heldout, fresh = digits
    with pytest.raises(DataError, match="shapes differ"):
        memorisation(np.zeros((4, 16, 16, 1), np.uint8), train, heldout)
    with pytest.raises(UserError, match="uint8"):
        memorisation(fresh.astype(np.float32), train, heldout)
    with pytest.raises(DataError, match="copies of training"):
        memorisation(fresh, train, train[:100])
