"""Pure tensor functions for the terms of the variational bound.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 5 (the bound), Eq. 13 (the discretized decoder).
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672.

All log-likelihoods and KLs here are in nats per element; divide by log(2) and average over dimensions for
bits/dim.
"""

from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch one: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats. Arguments broadcast."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log_bin_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for standardised bin edges lower < upper, without cancellation.

    Both edges are first moved into the lower tail (Phi(u) - Phi(l) = Phi(-l) - Phi(-u)), where log Phi is
    accurate, and then log(Phi(u) - Phi(l)) = log Phi(u) + log(1 - exp(log Phi(l) - log Phi(u))).
    """
    flip = lower > 0
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi = torch.special.log_ndtr(hi)
    ratio = -torch.expm1(torch.special.log_ndtr(lo) - log_hi)  # 1 - Phi(lo) / Phi(hi), in (0, 1]
    return log_hi + torch.log(ratio.clamp(min=torch.finfo(ratio.dtype).tiny))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x | mean, scale) for x in {-1, -1 + 2/255, ..., 1}: the decoder L_0 [DDPM Eq. 13].

    Each of the 256 values owns a bin of width 2/255 centred on it; the two outer bins reach -inf and +inf,
    so the probabilities of the 256 values sum to 1. `log_scale` is log sigma (half the log-variance).
    Returns nats per element, shape of x.
    """
    inv_scale = torch.exp(-log_scale)
    centred = x - mean
    upper = (centred + 1.0 / 255.0) * inv_scale  # (x + 1/255 - mean) / sigma
    lower = (centred - 1.0 / 255.0) * inv_scale
    log_cdf_upper = torch.special.log_ndtr(upper)  # outer bin at x = -1: Phi(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # outer bin at x = +1: 1 - Phi(lower)
    log_mid = _log_bin_mass(lower, upper)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))
