"""KL of Gaussians and the discretized decoder [DDPM Eq. 13], against closed forms and SciPy."""

import numpy as np
import pytest
import torch
from scipy import stats

from ddpmkit.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl

BINS = torch.linspace(-1.0, 1.0, 256, dtype=torch.float64)  # the 256 values of a [-1, 1]-scaled uint8 pixel


def test_kl_of_equal_gaussians_is_zero():
    mean = torch.randn(100, dtype=torch.float64)
    logvar = torch.randn(100, dtype=torch.float64)
    assert torch.allclose(normal_kl(mean, logvar, mean, logvar), torch.zeros(100, dtype=torch.float64), atol=1e-15)


def test_kl_matches_monte_carlo():
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 1.7
    x = np.random.default_rng(0).normal(m1, np.sqrt(v1), 2_000_000)
    mc = np.mean(stats.norm.logpdf(x, m1, np.sqrt(v1)) - stats.norm.logpdf(x, m2, np.sqrt(v2)))
    kl = normal_kl(torch.tensor(m1), torch.tensor(np.log(v1)), torch.tensor(m2), torch.tensor(np.log(v2)))
    assert float(kl) == pytest.approx(mc, abs=3e-3)
    assert float(kl) > 0


@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.5, 0.0, 0.004, 0.7, 1.0, 2.0])
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 0.3, 5.0])
def test_decoder_probabilities_over_256_bins_sum_to_one(mean, scale):
    log_p = discretized_gaussian_log_likelihood(
        BINS, torch.full_like(BINS, mean), torch.full_like(BINS, np.log(scale))
    )
    assert torch.isfinite(log_p).all()
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-6)


def test_decoder_matches_scipy_bin_masses():
    mean, scale = 0.1, 0.05
    edges = np.concatenate([[-np.inf], (BINS[:-1].numpy() + BINS[1:].numpy()) / 2, [np.inf]])
    # reference bin masses, from the survival function above the mean so SciPy itself does not cancel
    ref = np.where(edges[1:] <= mean, np.diff(stats.norm.cdf(edges, mean, scale)),
                   -np.diff(stats.norm.sf(edges, mean, scale)))
    log_p = discretized_gaussian_log_likelihood(
        BINS, torch.full_like(BINS, mean), torch.full_like(BINS, np.log(scale))
    )
    mask = ref > 1e-12
    assert np.allclose(log_p.numpy()[mask], np.log(ref[mask]), rtol=1e-6, atol=1e-9)


def test_decoder_is_accurate_far_above_the_mean():
    # Phi(u) - Phi(l) with both near 1 would cancel to 0; the survival-function path keeps the digits
    x = torch.tensor([0.5], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x, torch.tensor([0.0], dtype=torch.float64),
                                                torch.tensor([np.log(0.05)], dtype=torch.float64))
    ref = np.log(stats.norm.sf((0.5 - 1 / 255) / 0.05) - stats.norm.sf((0.5 + 1 / 255) / 0.05))
    assert float(log_p) == pytest.approx(ref, rel=1e-6)


def test_mean_flat():
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(mean_flat(x), torch.tensor([5.5, 17.5]))
