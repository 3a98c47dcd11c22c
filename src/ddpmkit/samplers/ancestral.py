"""The DDPM family: Algorithm 2 (ancestral sampling, respaced when K < T) and DDIM.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239: Algorithm 2.
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672, Sec. 4: sampling on a respaced subsequence of t.
    [DDIM]  Song, Meng & Ermon 2020, arXiv 2010.02502: Eq. 12 with sigma from Eq. 16 scaled by eta.

DDIM with eta = 0 is the first-order DPM-Solver (and DPM-Solver++) [DPM-Solver++ Sec. 4.1]: the step
x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps is the exponential integrator with x0 held constant.
"""

from __future__ import annotations

import torch

from ..diffusion import Diffusion, extract
from .state import SamplerState, noise_like


def ancestral_step(d: Diffusion, model, xt, t, state: SamplerState):
    """x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I), and z = 0 at the last step [DDPM Algorithm 2, line 4]."""
    p = d.p_mean_variance(model, xt, t, clip_denoised=state.clip_denoised)
    nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))  # (B, 1, ..., 1)
    x_prev = p["mean"] + nonzero * torch.exp(0.5 * p["log_variance"]) * noise_like(xt, state.generator)
    return x_prev, p["x0_pred"]


def ddim_step(d: Diffusion, model, xt, t, state: SamplerState):
    """x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z [DDIM Eq. 12];
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev) [DDIM Eq. 16]; eta = 1 is DDPM-like."""
    p = d.p_mean_variance(model, xt, t, clip_denoised=state.clip_denoised)
    alpha_bar = extract(d.alpha_bar, t, xt)
    alpha_bar_prev = extract(d.alpha_bar_prev, t, xt)
    eta = state.eta
    sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    direction = torch.sqrt((1 - alpha_bar_prev - sigma**2).clamp(min=0.0)) * p["eps_pred"]
    x_prev = torch.sqrt(alpha_bar_prev) * p["x0_pred"] + direction
    if eta > 0:
        x_prev = x_prev + sigma * noise_like(xt, state.generator)
    return x_prev, p["x0_pred"]
