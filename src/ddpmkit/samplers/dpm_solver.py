"""Multistep DPM-Solver++ with data (x0) prediction: orders 2 and 3 for the probability-flow ODE, and 2M SDE.

References:
    [DPMS]   Lu et al. 2022, arXiv 2206.00927: the exponential integrator in lambda = log(alpha / sigma), Eq. 3.4.
    [DPMS++] Lu et al. 2022, arXiv 2211.01095: Alg. 2 (2M), Sec. 5 and App. (SDE-DPM-Solver++), data prediction.

Notation of [DPMS]: alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), lambda = log(alpha / sigma); a step goes
from node s to node t (lambda_t > lambda_s), h = lambda_t - lambda_s. With x0 prediction D(lambda) the ODE solution
is exactly (the solution with data prediction, [DPMS++ Sec. 3])
    x_t = (sigma_t / sigma_s) x_s + sigma_t * integral_{lambda_s}^{lambda_t} e^lambda D(lambda) d lambda,
and the solvers expand D around lambda_s: D = m0 + u m' + u^2 / 2 m'' (u = lambda - lambda_s), which integrates to
    x_t = (sigma_t / sigma_s) x_s - alpha_t phi1 m0 + alpha_t phi2 (h m') - alpha_t phi3 (h^2 m''),
    phi1 = expm1(-h), phi2 = phi1 / h + 1, phi3 = phi2 / h - 1/2.
m' and m'' come from the data predictions of the previous nodes (divided differences in lambda). Note: the
published multistep order-3 code divides the second difference once more by 2 (its D2 is h^2 m'' / 2 where this
expansion needs h^2 m''), which makes the step's local error O(h^3) and the solver second order; here the term is
the exact Taylor term, and tests/samplers/test_order.py measures the order (3) against the closed-form flow.

Every solver ends with the denoising step at node 0: x_0 = D(x at node 0) (the first-order step to sigma = 0).
Lower order where there is no history: order 1 at the first step, order 2 at the second (3M); with fewer than
15 steps the 3M's last ODE step is order 2 as well, as DPM-Solver++ does for stability at few steps.
"""

from __future__ import annotations

import torch

from ..diffusion import Diffusion
from .state import SamplerState, noise_like

LOWER_ORDER_FINAL_BELOW = 15  # steps; as DPM-Solver++ [DPMS++ App.] and diffusers' lower_order_final
# The two coefficients that make the orders (module constants so that a test can break them on purpose):
AB2_WEIGHT = 0.5  # D = m0 + AB2_WEIGHT (m0 - m1) / r [DPMS++ Alg. 2]
TAYLOR_D2 = 2.0  # h^2 m'' = TAYLOR_D2 (D1_0 - D1_1) / (r0 + r1); the published 3M code has 1.0 (see above)


def column(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] as (B, 1, ..., 1) in the table's own (float64) precision: coefficients are never rounded to x's."""
    return table[t].reshape(t.shape[0], *([1] * (x.dim() - 1)))


def node_coefficients(d: Diffusion, t: torch.Tensor, x: torch.Tensor):
    """(alpha_s, sigma_s, lambda_s) at node t and (alpha_t, sigma_t, lambda_t) at node t - 1, float64 columns."""
    ab, ab_prev = column(d.alpha_bar, t, x), column(d.alpha_bar_prev, t, x)
    lam_s = 0.5 * (torch.log(ab) - torch.log1p(-ab))
    lam_t = 0.5 * (torch.log(ab_prev) - torch.log1p(-ab_prev))  # +inf at node 0 (alpha_bar_prev = 1)
    return (ab.sqrt(), (1 - ab).sqrt(), lam_s), (ab_prev.sqrt(), (1 - ab_prev).sqrt(), lam_t)


def denoise(d: Diffusion, model, xt, t, state: SamplerState) -> torch.Tensor:
    """The model's x0 prediction (its mean output only, clipped when clip_denoised) [DDPM Eq. 15 setup]."""
    return d.p_mean_variance(model, xt, t, clip_denoised=state.clip_denoised)["x0_pred"]


def _order(state: SamplerState, max_order: int) -> int:
    order = min(max_order, len(state.history) + 1)
    if state.num_steps < LOWER_ORDER_FINAL_BELOW and state.index == 1:
        order = min(order, 2)
    return order


def _derivatives(state: SamplerState, lam_s, m0, h, order: int):
    """h m' and h^2 m'' (None where the order does not use them) from divided differences of the history."""
    if order == 1:
        return None, None
    lam_1, m1 = state.history[-1]
    r0 = (lam_s - lam_1) / h
    d1_0 = (m0 - m1) / r0.to(m0.dtype)  # h m' - r0 h^2 m'' / 2 + ...
    if order == 2:
        return d1_0, None
    lam_2, m2 = state.history[-2]
    r1 = (lam_1 - lam_2) / h
    d1_1 = (m1 - m2) / r1.to(m0.dtype)  # h m' - (2 r0 + r1) h^2 m'' / 2 + ...
    w = (r0 / (r0 + r1)).to(m0.dtype)
    hd1 = d1_0 + w * (d1_0 - d1_1)  # h m' + O(h^3)
    h2d2 = (TAYLOR_D2 / (r0 + r1)).to(m0.dtype) * (d1_0 - d1_1)  # h^2 m'' + O(h^3)
    return hd1, h2d2


def _multistep(d: Diffusion, model, xt, t, state: SamplerState, max_order: int):
    """One DPM-Solver++ multistep ODE step from node t to node t - 1 [DPMS++ Alg. 2 and its order-3 form]."""
    x0 = denoise(d, model, xt, t, state)
    if state.index == 0:
        return x0, x0
    (_, sigma_s, lam_s), (alpha_t, sigma_t, lam_t) = node_coefficients(d, t, xt)
    return exponential_update(xt, x0, (sigma_s, lam_s), (alpha_t, sigma_t, lam_t), state, _order(state, max_order)), x0


def exponential_update(xt, x0, s, t, state: SamplerState, order: int):
    """x at node t from x at node s = (sigma_s, lambda_s) and its data prediction x0, with t = (alpha_t, sigma_t,
    lambda_t); m' and m'' from state.history, to which (lambda_s, x0) is then added. The formula holds whichever
    way lambda moves, so ddpmkit.edit's ODE encoder (lambda falling) runs the same update as the samplers."""
    (sigma_s, lam_s), (alpha_t, sigma_t, lam_t) = s, t
    h = lam_t - lam_s
    hd1, h2d2 = _derivatives(state, lam_s, x0, h, order)
    phi1 = torch.expm1(-h)
    phi2 = phi1 / h + 1.0
    x = (sigma_t / sigma_s).to(xt.dtype) * xt - (alpha_t * phi1).to(xt.dtype) * x0
    if hd1 is not None:
        if h2d2 is None:  # order 2 as in Alg. 2: D = m0 + (m0 - m1) / (2 r), the h m' term with weight phi1 / 2
            x = x - (alpha_t * phi1 * AB2_WEIGHT).to(xt.dtype) * hd1
        else:
            phi3 = phi2 / h - 0.5
            x = x + (alpha_t * phi2).to(xt.dtype) * hd1 - (alpha_t * phi3).to(xt.dtype) * h2d2
    state.remember(lam_s, x0)
    return x


def dpmpp_2m_step(d: Diffusion, model, xt, t, state: SamplerState):
    """DPM-Solver++(2M) [DPMS++ Alg. 2]."""
    return _multistep(d, model, xt, t, state, max_order=2)


def dpmpp_3m_step(d: Diffusion, model, xt, t, state: SamplerState):
    """DPM-Solver++(3M): the multistep order-3 form with the exact Taylor coefficients (see the module)."""
    return _multistep(d, model, xt, t, state, max_order=3)


def dpmpp_2m_sde_step(d: Diffusion, model, xt, t, state: SamplerState):
    """SDE-DPM-Solver++(2M) [DPMS++ Sec. 5]: the reverse SDE integrated exactly in its linear part,
    x_t = (sigma_t / sigma_s) e^-h x_s + 2 alpha_t int e^{-2(lambda_t - lambda)} D d lambda + sigma_t sqrt(1 - e^-2h) z.

    With D = m0 + u m': alpha_t (1 - e^-2h) m0 + alpha_t (h - (1 - e^-2h) / 2) m'. The first-order step is exactly
    Algorithm 2's step with sigma^2 = beta~ on the same nodes (tested)."""
    x0 = denoise(d, model, xt, t, state)
    if state.index == 0:
        return x0, x0
    (_, sigma_s, lam_s), (alpha_t, sigma_t, lam_t) = node_coefficients(d, t, xt)
    h = lam_t - lam_s
    one_minus = -torch.expm1(-2.0 * h)  # 1 - e^{-2h}
    x = (sigma_t / sigma_s * torch.exp(-h)).to(xt.dtype) * xt + (alpha_t * one_minus).to(xt.dtype) * x0
    if state.history:
        hd1, _ = _derivatives(state, lam_s, x0, h, order=2)  # h m'
        x = x + (alpha_t * (h - 0.5 * one_minus) / h).to(xt.dtype) * hd1
    x = x + (sigma_t * one_minus.sqrt()).to(xt.dtype) * noise_like(xt, state.generator)
    state.remember(lam_s, x0)
    return x, x0
