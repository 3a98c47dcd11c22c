"""What the one sampling loop passes to every step: the options and a multistep solver's history.

A step is `step(d, model, x_t, t, state) -> (x_prev, x0_pred)` on the (respaced) Diffusion `d`, whose index i is
the i-th node and whose `alpha_bar_prev[i]` is alpha_bar at node i - 1 (1 at i = 0). The loop runs i = K-1 .. 0;
the step at i = 0 ends at x_0. A multistep solver reads the data predictions of earlier nodes from
`state.history` and appends its own; no sampler has a loop of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..noise import randn


def noise_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like x; drawn on the generator's device so a seed means the same noise, or
    per image from a ddpmkit.noise.ImageNoise (each image's noise depends only on (seed, its index))."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


@dataclass
class SamplerState:
    """Options of one sampling run and the history of a multistep solver.

    history: (lambda, x0_pred) of the nodes already evaluated, newest last, where lambda = log(alpha / sigma)
    (alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar)) is the half log-SNR of DPM-Solver. Only the last
    `keep` entries are kept.
    """

    num_steps: int
    eta: float = 0.0
    generator: torch.Generator | None = None
    clip_denoised: bool = True
    history: list = field(default_factory=list)
    keep: int = 3
    index: int = 0  # the node the current step starts from (set by the loop): K-1 .. 0

    def remember(self, lam: torch.Tensor, x0_pred: torch.Tensor) -> None:
        self.history.append((lam, x0_pred))
        del self.history[:-self.keep]
