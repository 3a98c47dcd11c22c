"""FID, IS and the statistics cache: closed forms, a scipy reference, singular covariances, cache behaviour."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from ddpmkit.errors import ConfigError, DataError
from ddpmkit.evaluate.fid import (
    cached_stats,
    feature_stats,
    frechet_distance,
    inception_score,
    stats_cache_path,
    trace_sqrt_product,
)


def gaussian(n=500, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def fid_of(a, b):
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def scipy_fid(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy's general matrix square root of the non-symmetric product."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean.real))


def test_feature_stats_are_mean_and_unbiased_covariance():
    x = gaussian(50, 4).astype(np.float32)
    mu, sigma = feature_stats(x)
    x = x.astype(np.float64)
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (4,) and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    assert np.array_equal(sigma, sigma.T)


def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian()
    assert fid_of(x, x) == pytest.approx(0.0, abs=1e-9)


def test_fid_grows_with_the_shift_and_is_the_squared_shift_for_pure_mean_shifts():
    x = gaussian()
    direction = np.random.default_rng(1).standard_normal(16)
    shifts = [0.0, 0.1, 0.5, 1.0, 2.0, 4.0]
    fids = [fid_of(x, x + s * direction) for s in shifts]
    assert all(a < b for a, b in itertools.pairwise(fids))
    # shifting every vector leaves the covariance unchanged: FID = ||shift||^2 exactly
    for s, fid in zip(shifts, fids):
        assert fid == pytest.approx(s**2 * direction @ direction, rel=1e-9, abs=1e-9)


def test_fid_matches_scipy_sqrtm_when_well_conditioned():
    rng = np.random.default_rng(2)
    for seed in range(3):
        a = gaussian(400, 8, seed=seed)
        b = gaussian(400, 8, seed=seed + 10) @ rng.standard_normal((8, 8)) * 0.5 + rng.standard_normal(8)
        stats = (*feature_stats(a), *feature_stats(b))
        assert frechet_distance(*stats) == pytest.approx(scipy_fid(*stats), rel=1e-8)


def test_fid_of_gaussians_in_closed_form():
    # Tr((S1 S2)^(1/2)) for diagonal covariances is sum(sqrt(s1 * s2)): FID = sum((sqrt(s1) - sqrt(s2))^2) + |dmu|^2
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, -2.0])
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2) + 5.0
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)
    assert trace_sqrt_product(np.diag(s1), np.diag(s2)) == pytest.approx(np.sqrt(s1 * s2).sum(), rel=1e-12)


def test_fid_is_finite_and_nonnegative_with_singular_covariances():
    a, b = gaussian(10, 64, seed=3), gaussian(10, 64, seed=4)  # rank 9 covariances in 64 dimensions
    fid = fid_of(a, b)
    assert np.isfinite(fid) and fid > 0
    # identical rank-deficient sets: ~0 even though sqrtm of the singular product is ill-posed
    assert fid_of(a, a) == pytest.approx(0.0, abs=1e-8 * np.trace(np.cov(a, rowvar=False)))
    assert fid_of(a, a + 1.0) == pytest.approx(64.0, rel=1e-8)


def test_fid_rejects_mismatched_or_broken_statistics():
    mu, sigma = feature_stats(gaussian(20, 4))
    with pytest.raises(DataError, match="different feature spaces"):
        frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(DataError, match="sigma1"):
        frechet_distance(mu, np.eye(3), mu, sigma)
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(mu * np.nan, sigma, mu, sigma)
    with pytest.raises(DataError, match="at least 2"):
        feature_stats(np.zeros((1, 4)))


def test_inception_score_of_uniform_logits_is_one():
    mean, std = inception_score(np.zeros((100, 10)))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    k = 10
    labels = np.tile(np.arange(k), 20)  # each split of 20 holds every class twice
    logits = 100.0 * np.eye(k)[labels]
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # shift-invariance of softmax: huge logits do not overflow in the log-softmax
    assert inception_score(logits + 1e4, splits=10)[0] == pytest.approx(k, rel=1e-9)


def test_inception_score_checks_its_arguments():
    with pytest.raises(DataError, match="fewer splits"):
        inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ConfigError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=0)


def test_cached_stats_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return gaussian(30, 5)

    mu, sigma = cached_stats("digits|test|30|net|abc", compute, cache_dir=tmp_path)
    mu2, sigma2 = cached_stats("digits|test|30|net|abc", compute, cache_dir=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    assert [p.name for p in tmp_path.iterdir()] == [stats_cache_path("digits|test|30|net|abc", tmp_path).name]
    cached_stats("digits|test|31|net|abc", compute, cache_dir=tmp_path)  # another key: computed
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "npy", "wrong_key"])
def test_cached_stats_recomputes_a_corrupt_file(tmp_path, damage):
    calls = []

    def compute():
        calls.append(1)
        return gaussian(30, 5)

    key = "cifar10|train|50000|inception-v3-fid|0123"
    expected = cached_stats(key, compute, cache_dir=tmp_path)
    path = stats_cache_path(key, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"\x93NUMPY not really" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(5))
    else:
        np.savez(path, key=np.array("another key"), mu=np.zeros(5), sigma=np.eye(5))
    with pytest.warns(UserWarning, match="recomputing"):
        mu, sigma = cached_stats(key, compute, cache_dir=tmp_path)
    assert len(calls) == 2
    np.testing.assert_array_equal(mu, expected[0])
    np.testing.assert_array_equal(sigma, expected[1])
    cached_stats(key, compute, cache_dir=tmp_path)  # the rewritten file is good again
    assert len(calls) == 2


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMKIT_CACHE", str(tmp_path / "cache"))
    cached_stats("k", lambda: gaussian(10, 3))
    assert stats_cache_path("k").parent == tmp_path / "cache" and stats_cache_path("k").is_file()


def test_unwritable_cache_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="DDPMKIT_CACHE"):
        cached_stats("k", lambda: gaussian(10, 3), cache_dir=blocker / "cache")
