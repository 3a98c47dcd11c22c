"""Improved precision and recall [PR Kynkaanniemi et al. 2019]: limiting cases, mode dropping, a brute-force check."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from ddpmkit.errors import UserError
from ddpmkit.evaluate.precision_recall import knn_radii, precision_recall

CORNERS = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])  # four modes, 20 sigma apart


def _modes(rng, centres, per_mode):
    return np.concatenate([c + rng.normal(size=(per_mode, 2)) for c in centres])


def test_a_set_against_itself_is_perfect():
    x = np.random.default_rng(0).normal(size=(400, 16))
    out = precision_recall(x, x, k=3)
    assert (out["precision"], out["recall"]) == (1.0, 1.0)


def test_far_apart_sets_score_zero():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(300, 8)), 100.0 + rng.normal(size=(200, 8))
    out = precision_recall(real, fake)
    assert (out["precision"], out["recall"]) == (0.0, 0.0)


def test_dropping_half_the_modes_keeps_precision_and_halves_recall():
    rng = np.random.default_rng(2)
    real = _modes(rng, CORNERS, 500)
    fake = _modes(rng, CORNERS[:2], 500)  # fresh samples of two of the four modes
    out = precision_recall(real, fake, k=3)
    assert out["precision"] >= 0.95  # every fake lies in a real mode; k-NN balls of 500 points cover ~98% of it
    assert 0.45 <= out["recall"] <= 0.5  # the two dropped modes hold half the real points


def test_matches_brute_force_and_does_not_depend_on_batch_size():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(120, 5)), 0.5 + rng.normal(size=(90, 5))
    d_rr, d_ff, d_fr = cdist(real, real), cdist(fake, fake), cdist(fake, real)
    r_real = np.sort(d_rr, axis=1)[:, 3]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, 3]
    precision = np.mean((d_fr <= r_real[None, :]).any(axis=1))
    recall = np.mean((d_fr.T <= r_fake[None, :]).any(axis=1))
    np.testing.assert_allclose(knn_radii(real, 3).numpy(), r_real, rtol=1e-9)
    for batch_size in (7, 1024):
        out = precision_recall(real, fake, k=3, batch_size=batch_size)
        assert out["precision"] == pytest.approx(precision) and out["recall"] == pytest.approx(recall)
    assert 0.0 < recall < 1.0 and 0.0 < precision < 1.0  # the shift makes a case that is not trivial


def test_bad_inputs_are_user_errors():
    x = np.zeros((10, 4))
    with pytest.raises(UserError, match="same feature extractor"):
        precision_recall(x, np.zeros((10, 3)))
    with pytest.raises(UserError, match="at least k"):
        precision_recall(x, np.zeros((3, 4)), k=3)
    with pytest.raises(UserError, match="NaN"):
        precision_recall(x, np.full((10, 4), np.nan))
