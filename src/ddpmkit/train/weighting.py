"""Per-timestep weights of L_simple: none (the paper's) or min-SNR-gamma.

References:
    [DDPM]    Ho, Jain & Abbeel 2020, arXiv 2006.11239, Eq. 14: L_simple, every t weighted 1.
    [MinSNR]  Hang, Gu, Li, Bao, Chen, Hu, Geng & Guo 2023, "Efficient Diffusion Training via Min-SNR Weighting
              Strategy", arXiv 2303.09556, Sec. 3.4: the x0-loss weight min(SNR_t, gamma); for a network that
              predicts eps the same objective is the eps-loss times min(SNR_t, gamma) / SNR_t, for v-prediction
              min(SNR_t, gamma) / (SNR_t + 1).

SNR_t = alpha_bar_t / (1 - alpha_bar_t) [DDPM Eq. 4]. `train.loss_weighting = "min_snr"` (with `train.min_snr_gamma`,
5 in the paper) multiplies each example's L_simple by that weight; it is an option, measured against L_simple in
docs/RESULTS.md (bench/budget.py), and L_simple stays the default.
"""

from __future__ import annotations

import torch

# the factor that turns min(SNR, gamma) (the x0-loss weight) into the weight of each parameterization's own loss
_PER_PARAMETERIZATION = {
    "eps": lambda snr: snr,  # ||eps - eps_pred||^2 = SNR ||x0 - x0_pred||^2
    "x0": lambda snr: torch.ones_like(snr),
    "v": lambda snr: snr + 1.0,  # ||v - v_pred||^2 = (SNR + 1) ||x0 - x0_pred||^2
}


def min_snr_weights(alpha_bar: torch.Tensor, gamma: float, parameterization: str) -> torch.Tensor:
    """(T,) weights min(SNR_t, gamma) / factor(SNR_t) of the per-example L_simple [MinSNR Sec. 3.4]."""
    snr = alpha_bar.double() / (1.0 - alpha_bar.double())
    return (torch.clamp(snr, max=gamma) / _PER_PARAMETERIZATION[parameterization](snr)).float()


def loss_weights(train, diffusion, parameterization: str) -> torch.Tensor | None:
    """The (T,) weights a TrainConfig asks for, or None for L_simple's uniform weights."""
    if train.loss_weighting == "none":
        return None
    return min_snr_weights(diffusion.alpha_bar, train.min_snr_gamma, parameterization)
