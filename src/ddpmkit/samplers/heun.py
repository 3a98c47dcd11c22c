"""Heun's second-order method for the probability-flow ODE in sigma [EDM Alg. 1, without churn].

References:
    [EDM] Karras, Aittala, Aila & Laine 2022, arXiv 2206.00364: Alg. 1 (S_churn = 0), Eqs. 1 and 4.

A DDPM x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps is, divided by sqrt(alpha_bar), the variance-exploding
x^ = x0 + sigma eps with sigma = sqrt((1 - alpha_bar) / alpha_bar). There the ODE is dx^/dsigma = (x^ - D(x^)) / sigma
[EDM Eq. 4 with s = 1], and D is the model's x0 prediction at the timestep of that sigma. Each step from node i to
node i - 1 is an Euler step and its trapezoidal correction: two evaluations, D at node i and at node i - 1. The
last step, from node 0 to sigma = 0, is Euler alone: x_0 = D at node 0. K nodes cost 2K - 1 evaluations.
"""

from __future__ import annotations

from ..diffusion import Diffusion
from .dpm_solver import column, denoise
from .state import SamplerState

TRAPEZOID = 0.5  # the weight of each slope in step 3 (a module constant so that a test can break it on purpose)


def heun_step(d: Diffusion, model, xt, t, state: SamplerState):
    """x^_{i-1} = x^_i + (sigma_{i-1} - sigma_i) (d_i + d'_{i-1}) / 2, d = (x^ - D) / sigma [EDM Alg. 1, l. 5-8]."""
    x0 = denoise(d, model, xt, t, state)
    if state.index == 0:
        return x0, x0
    ab, ab_prev = column(d.alpha_bar, t, xt), column(d.alpha_bar_prev, t, xt)
    sigma, sigma_next = ((1 - ab) / ab).sqrt(), ((1 - ab_prev) / ab_prev).sqrt()
    # 1. into the variance-exploding variable x^ = x / sqrt(alpha_bar)
    x_hat = xt / ab.sqrt().to(xt.dtype)
    d_i = (x_hat - x0) / sigma.to(xt.dtype)
    # 2. Euler to sigma_{i-1}, then the slope there with the model at node i - 1
    step = (sigma_next - sigma).to(xt.dtype)
    x_euler = x_hat + step * d_i
    t_next = t - 1
    x0_next = denoise(d, model, x_euler * ab_prev.sqrt().to(xt.dtype), t_next, state)
    d_next = (x_euler - x0_next) / sigma_next.to(xt.dtype)
    # 3. the trapezoidal rule, back to x_t = sqrt(alpha_bar) x^
    x_hat_next = x_hat + step * TRAPEZOID * (d_i + d_next)
    return x_hat_next * ab_prev.sqrt().to(xt.dtype), x0
