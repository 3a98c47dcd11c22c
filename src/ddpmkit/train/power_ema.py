"""The power-function EMA of Karras et al. 2024, whose averaging length grows with the run, and the EMA factory.

References:
    [EDM2]  Karras, Aittala, Lehtinen, Hellsten, Aila & Laine 2024, "Analyzing and Improving the Training Dynamics
            of Diffusion Models", arXiv 2312.02696: Sec. 3.1 (power-function EMA profile), Eq. 3 (its length
            sigma_rel), Algorithm 2 (the update with beta_t = (1 - 1/t)^(gamma + 1)).

The EMA after t updates is the average of the weights theta_1 .. theta_t with weight proportional to tau^gamma
[EDM2 Sec. 3.1]: it forgets the initial weights at once (beta_1 = 0) and always spans a fixed *fraction* of the run
(sigma_rel: the profile's standard deviation relative to its end), so a 2-minute run and a 2-hour run average over
the same share of their steps. That is what a planned run needs: the exponential EMA with a fixed decay averages a
fixed *number* of steps, which is most of a short run (noise) or a sliver of a long one.
"""

from __future__ import annotations

import math

from torch import nn

from .ema import EMA


def sigma_rel_of_gamma(gamma: float) -> float:
    """Relative standard deviation of the power profile t^gamma on [0, 1]: sqrt((g+1) / ((g+2)^2 (g+3))) [EDM2 Eq. 3]."""
    return math.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0)))


def gamma_of_sigma_rel(sigma_rel: float) -> float:
    """The gamma whose profile has this sigma_rel (the inverse of Eq. 3 [EDM2], by bisection; it decreases in gamma).

    sigma_rel must lie in (0, sigma_rel_of_gamma(0) = 0.2887): 0.05 gives 16.97 and 0.10 gives 6.94, the two
    profiles [EDM2 Sec. 3.1] names."""
    top = sigma_rel_of_gamma(0.0)
    if not 0.0 < sigma_rel < top:
        raise ValueError(f"sigma_rel = {sigma_rel!r}: must lie in (0, {top:.4f})")
    lo, hi = 0.0, 1.0
    while sigma_rel_of_gamma(hi) > sigma_rel:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sigma_rel_of_gamma(mid) > sigma_rel else (lo, mid)
    return 0.5 * (lo + hi)


class PowerEMA(EMA):
    """EMA whose decay at update t = 1, 2, ... is beta_t = (1 - 1/t)^(gamma + 1) [EDM2 Algorithm 2]."""

    def __init__(self, model: nn.Module, sigma_rel: float = 0.10):
        super().__init__(model, decay=0.0, warmup=False)
        self.sigma_rel, self.gamma = sigma_rel, gamma_of_sigma_rel(sigma_rel)

    def decay_at(self, num_updates: int) -> float:
        """num_updates is 0-based (the trainer's step), so t = num_updates + 1 and the first update copies."""
        t = num_updates + 1
        return (1.0 - 1.0 / t) ** (self.gamma + 1.0)


def build_ema(model: nn.Module, train) -> EMA:
    """The EMA a TrainConfig asks for: `ema_schedule` "exponential" (decay, optional warm-up) or "power"."""
    builders = {"exponential": lambda: EMA(model, train.ema_decay, train.ema_warmup),
                "power": lambda: PowerEMA(model, train.ema_sigma_rel)}
    return builders[train.ema_schedule]()


def initial_weight_share(ema: EMA, num_updates: int) -> float:
    """How much of the EMA is still the initial weights after `num_updates` updates: prod of decay_at(k), k < n."""
    share = 1.0
    for k in range(num_updates):
        share *= ema.decay_at(k)
        if share < 1e-12:
            return 0.0
    return share
