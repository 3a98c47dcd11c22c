"""Bits/dim of models whose answer is known: a model predicting eps = 0 (checked term by term against SciPy)
and the analytic oracle on a small finite data set."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddpmkit import oracle
from ddpmkit.data import to_model_range
from ddpmkit.diffusion import Diffusion
from ddpmkit.evaluate.nll import bits_per_dim
from ddpmkit.noise import ImageNoise


def direct_total_for_eps_zero(d: Diffusion, x0: np.ndarray, seed: int) -> np.ndarray:
    """L_T + sum of every term, written out with SciPy, drawing the noise exactly as bits_per_dim does: image i's
    from its own stream (seed, i), one (C, H, W) block per t from T-1 down to 0."""
    g = ImageNoise(seed, range(len(x0)))
    n = len(x0)
    total = np.zeros(n)
    for i in range(d.num_timesteps - 1, -1, -1):
        noise = g.randn(x0.shape).double().numpy()
        ab, ab_prev = float(d.alpha_bar[i]), float(d.alpha_bar_prev[i])
        beta, alpha = float(d.beta[i]), float(d.alpha[i])
        xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
        x0_pred = np.clip(xt / math.sqrt(ab), -1, 1)  # eps = 0, clipped as in evaluation
        c0, ct = beta * math.sqrt(ab_prev) / (1 - ab), (1 - ab_prev) * math.sqrt(alpha) / (1 - ab)
        mean_p = c0 * x0_pred + ct * xt
        if i == 0:  # sigma_1^2 = beta~_2 = beta_2 (1 - ab_1) / (1 - ab_2) for fixed_large, as the authors' code
            b2 = float(d.beta[1])
            sigma = math.sqrt(b2 * beta / (1 - (1 - beta) * (1 - b2)))
            lo = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
            hi = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
            term = -np.log(stats.norm.cdf(hi, mean_p, sigma) - stats.norm.cdf(lo, mean_p, sigma))
        else:
            var_q = beta * (1 - ab_prev) / (1 - ab)
            mean_q = c0 * x0 + ct * xt
            term = 0.5 * (np.log(beta / var_q) + var_q / beta + (mean_q - mean_p) ** 2 / beta - 1)
        total += term.reshape(n, -1).mean(1) / math.log(2)
    ab_T = float(d.alpha_bar[-1])
    prior = 0.5 * (ab_T * x0**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))
    return total + prior.reshape(n, -1).mean(1) / math.log(2)


def test_eps_zero_model_matches_a_direct_computation():
    d = Diffusion.from_name("linear", 30, beta_end=0.3)
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 3, 1), dtype=np.uint8)
    out = bits_per_dim(d, lambda x, t: torch.zeros_like(x), images, batch_size=5, seed=7)
    x0 = to_model_range(torch.from_numpy(images)).double().numpy()
    ref = direct_total_for_eps_zero(d, x0, seed=7)
    assert np.allclose(out["per_image_bpd"], ref, rtol=1e-5)
    assert out["nll_bpd"] == pytest.approx(ref.mean(), rel=1e-5)


def test_oracle_on_a_finite_set_pays_log2_n_bits_in_the_diffusion_terms():
    d = Diffusion.from_name("linear", 200, beta_end=0.1, variance="fixed_small")
    images = np.random.default_rng(1).integers(0, 256, (8, 4, 4, 1), dtype=np.uint8)
    points = to_model_range(torch.from_numpy(images))
    out = bits_per_dim(d, oracle.finite_set(d, points), images, batch_size=4, seed=0)
    zero = bits_per_dim(d, lambda x, t: torch.zeros_like(x), images, batch_size=4, seed=0)
    assert sum(out["diffusion_bpd_by_quarter"]) == pytest.approx(math.log2(8) / 16, rel=0.15)
    assert out["nll_bpd"] < zero["nll_bpd"]
    parts = out["prior_bpd"] + out["decoder_bpd"] + sum(out["diffusion_bpd_by_quarter"])
    assert parts == pytest.approx(out["nll_bpd"], rel=1e-6)
    assert out["terms_bpd"].shape == (200,) and out["x0_mse"].shape == (200,)
    # the oracle's x0 prediction only gets worse with more noise
    assert out["x0_mse"][0] < 1e-6 and out["x0_mse"][-1] > out["x0_mse"][0]


def test_batching_does_not_change_the_result():
    d = Diffusion.from_name("cosine", 10)
    images = np.random.default_rng(2).integers(0, 256, (6, 2, 2, 1), dtype=np.uint8)
    model = lambda x, t: 0.1 * x  # noqa: E731
    one = bits_per_dim(d, model, images, batch_size=6, seed=3)
    assert one["per_image_bpd"].shape == (6,) and np.isfinite(one["per_image_bpd"]).all()
    again = bits_per_dim(d, model, images, batch_size=6, seed=3)
    assert np.array_equal(one["per_image_bpd"], again["per_image_bpd"])  # seeded: reproducible
