"""Exponential moving average of the weights, as the paper samples from [DDPM App. B: decay 0.9999].

The EMA is a full copy of the network (`EMA.model`, in eval mode, never trained), so sampling from it never
touches the training weights. Parameters follow theta_ema <- d theta_ema + (1 - d) theta with one foreach lerp;
buffers (none in the U-Net; running statistics in other networks) are copied, not averaged.
With warm-up the decay is min(decay, (1 + n) / (10 + n)) after n updates, so a short run's EMA is not stuck
near its random initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, num_updates: int) -> float:
        """The decay used for update number `num_updates` (0-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay_at(num_updates))
        for ema_buf, buf in zip(self.model.buffers(), model.buffers()):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
