"""ddpmkit.train.weighting: min-SNR-gamma [MinSNR Sec. 3.4] as the x0-loss weight min(SNR, gamma), exactly."""

from __future__ import annotations

import torch

from ddpmkit import Diffusion
from ddpmkit.config import TrainConfig
from ddpmkit.train.weighting import loss_weights, min_snr_weights


def test_weighted_eps_loss_is_min_snr_times_the_x0_loss():
    """eps-prediction: x0 - x0_pred = sqrt((1 - ab) / ab) (eps_pred - eps) [DDPM Eq. 15], so
    w_eps ||eps - eps_pred||^2 = min(SNR, gamma) ||x0 - x0_pred||^2 with w_eps = min(SNR, gamma) / SNR."""
    d = Diffusion.from_name("linear", 1000)
    ab = d.alpha_bar.double()
    w = min_snr_weights(d.alpha_bar, 5.0, "eps").double()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 10, 200, 999])
    eps, eps_pred = torch.randn(4, 16, generator=g, dtype=torch.float64), torch.randn(4, 16, generator=g,
                                                                                       dtype=torch.float64)
    x0_err = ((1 - ab[t]) / ab[t]).sqrt()[:, None] * (eps_pred - eps)
    snr = ab[t] / (1 - ab[t])
    lhs = w[t] * ((eps - eps_pred) ** 2).sum(1)
    rhs = torch.clamp(snr, max=5.0) * (x0_err ** 2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-6, atol=0)
    assert w[999] == 1.0 and w[0] < 1e-3  # noisy end: SNR < 5, unweighted; clean end: SNR >> 5, down-weighted


def test_v_weights_and_the_default_is_none():
    d = Diffusion.from_name("linear", 100)
    snr = d.alpha_bar.double() / (1 - d.alpha_bar.double())
    torch.testing.assert_close(min_snr_weights(d.alpha_bar, 5.0, "v").double(), torch.clamp(snr, max=5) / (snr + 1),
                               rtol=1e-6, atol=0)
    assert loss_weights(TrainConfig(), d, "eps") is None


def test_the_weights_exist_for_exactly_the_predictions_the_config_check_lets_through():
    from ddpmkit.parameterization import MIN_SNR_PREDICTIONS
    from ddpmkit.train.weighting import _PER_PARAMETERIZATION

    assert set(_PER_PARAMETERIZATION) == set(MIN_SNR_PREDICTIONS)
