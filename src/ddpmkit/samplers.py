"""Sampling loops over t. Every sampler is one step function with one signature, run by one loop.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239: Algorithm 2.
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672, Sec. 4: sampling on a respaced subsequence of t.
    [DDIM]  Song, Meng & Ermon 2020, arXiv 2010.02502: Eq. 12 with sigma from Eq. 16 scaled by eta.

A step takes (diffusion, model, x_t, t, eta, generator, clip_denoised) and returns (x_{t-1}, x0_pred). With
fewer steps than T the loop runs on `diffusion.respaced(...)`, whose index i stands for the original timestep
`timestep_map[i]`; the model is always called with the original timestep.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from .diffusion import Diffusion, extract, timestep_subsequence
from .errors import ConfigError


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x; drawn on the generator's device so a seed means the same noise."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def ancestral_step(d: Diffusion, model, xt, t, eta, generator, clip_denoised):
    """x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I), and z = 0 at the last step [DDPM Algorithm 2, line 4]."""
    p = d.p_mean_variance(model, xt, t, clip_denoised=clip_denoised)
    nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))  # (B, 1, ..., 1)
    x_prev = p["mean"] + nonzero * torch.exp(0.5 * p["log_variance"]) * _noise_like(xt, generator)
    return x_prev, p["x0_pred"]


def ddim_step(d: Diffusion, model, xt, t, eta, generator, clip_denoised):
    """x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z [DDIM Eq. 12];
    sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev) [DDIM Eq. 16]; eta = 1 is DDPM-like."""
    p = d.p_mean_variance(model, xt, t, clip_denoised=clip_denoised)
    alpha_bar = extract(d.alpha_bar, t, xt)
    alpha_bar_prev = extract(d.alpha_bar_prev, t, xt)
    sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    direction = torch.sqrt((1 - alpha_bar_prev - sigma**2).clamp(min=0.0)) * p["eps_pred"]
    x_prev = torch.sqrt(alpha_bar_prev) * p["x0_pred"] + direction
    if eta > 0:
        x_prev = x_prev + sigma * _noise_like(xt, generator)
    return x_prev, p["x0_pred"]


SAMPLERS: dict[str, Callable] = {"ancestral": ancestral_step, "ddim": ddim_step}


def model_device(model) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in list(getattr(model, "parameters", lambda: [])()) + list(getattr(model, "buffers", lambda: [])()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def run_sampler(diffusion: Diffusion, model, shape, *, sampler="ancestral", steps=None, eta=0.0, generator=None,
                progress=False, return_trajectory=False, clip_denoised=True, device=None, x_T=None):
    """Run `sampler` from x_T ~ N(0, I) down to x_0 on `steps` evenly spaced timesteps (all T by default)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler {sampler!r} is not one of {sorted(SAMPLERS)}")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    total = diffusion.num_timesteps
    d = diffusion if steps is None or steps == total else diffusion.respaced(timestep_subsequence(total, steps))
    device = torch.device(device) if device is not None else model_device(model)
    x = x_T.to(device) if x_T is not None else _noise_like(torch.empty(tuple(shape), device=device), generator)
    step = SAMPLERS[sampler]
    traj_t, traj_x, traj_x0 = [], [x.cpu()] if return_trajectory else [], []
    for i in tqdm(range(d.num_timesteps - 1, -1, -1), disable=not progress, desc=f"sampling ({sampler})"):
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=device)
        x, x0_pred = step(d, model, x, t, eta, generator, clip_denoised)
        if return_trajectory:
            traj_t.append(int(d.timestep_map[i]))
            traj_x.append(x.cpu())
            traj_x0.append(x0_pred.cpu())
    x = x.clamp(-1.0, 1.0)
    if not return_trajectory:
        return x
    return x, {"t": traj_t, "xt": torch.stack(traj_x), "x0_pred": torch.stack(traj_x0)}
