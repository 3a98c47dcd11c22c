"""Deterministic encoding: the probability-flow ODE from x_0 to x_T (DDIM inversion), and decoding back.

References:
    [DDIM]   Song, Meng & Ermon 2020, arXiv 2010.02502: Sec. 4.3 and Eq. 14 (the ODE, run from x_0 to x_T encodes).
    [DPMS++] Lu et al. 2022, arXiv 2211.01095: Alg. 2, the multistep update in lambda = log(alpha / sigma).

The decoder is a deterministic sampler on K nodes n_0 = 0 < .. < n_{K-1} = T - 1, ending with x_0 = D(x at n_0).
The encoder runs the same nodes upwards: it starts at x_{n_0} = alpha_0 x_0 + sigma_0 eps_theta(alpha_0 x_0, n_0)
(one network evaluation: the inverse of the decoder's last step to first order in sigma_0 = sqrt(1 - alpha_bar_0),
0.01 on the linear schedule), then takes K - 1 steps of the samplers' own exponential update
(`dpm_solver.exponential_update`), which holds with lambda falling as well as rising: ddim (order 1), dpm++2m
(2), dpm++3m (3), on the sampler's spacing. K network evaluations in all, as the decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import from_model_range
from ..errors import ConfigError
from ..samplers import SAMPLERS, SamplerState, model_device, timestep_nodes
from ..samplers.dpm_solver import exponential_update
from .common import as_model_input

ENCODERS = {"ddim": 1, "dpm++2m": 2, "dpm++3m": 3}  # sampler: order of its update


def check_encoder(sampler: str, steps: int, num_timesteps: int) -> int:
    """The order of `sampler` as an encoder, or a one-line ConfigError."""
    if sampler not in ENCODERS:
        raise ConfigError(f"--sampler {sampler!r}: encoding runs a deterministic ODE solver, one of {list(ENCODERS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= num_timesteps:
        raise ConfigError(f"--steps {steps}: encoding needs between 2 and T = {num_timesteps} steps")
    return ENCODERS[sampler]


@torch.no_grad()
def ode_encode(diffusion, model, x0: torch.Tensor, *, sampler: str = "dpm++2m", steps: int = 50,
               spacing: str | None = None, clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """x_T from x_0 (B, ...) in model range along the probability-flow ODE [DDIM Sec. 4.3] on the nodes of the
    K-step decoder (see the module)."""
    order = check_encoder(sampler, steps, diffusion.num_timesteps)
    spacing = spacing or SAMPLERS[sampler].default_spacing
    ab_all = diffusion.alpha_bar.cpu().double()
    nodes = timestep_nodes(ab_all.numpy(), int(steps), spacing)  # increasing, 0 .. T - 1
    d = diffusion.respaced(nodes) if len(nodes) < diffusion.num_timesteps else diffusion  # index j = node j
    ab = d.alpha_bar.double().to(x0.device)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)
    state = SamplerState(num_steps=int(steps), clip_denoised=clip_denoised, keep=3)

    def column(v):  # a float64 scalar as (1, 1, ..) for x's shape
        return v.reshape(1, *([1] * (x0.dim() - 1)))

    def at(j):
        return torch.full((len(x0),), j, dtype=torch.int64, device=x0.device)

    # 1. x at node 0: the inverse of the decoder's last step, x_0 = D(x_{n_0}), to first order in sigma_0
    start = alpha[0].to(x0.dtype) * x0
    x = start + sigma[0].to(x0.dtype) * d.p_mean_variance(model, start, at(0), clip_denoised=False)["eps_pred"]
    for j in tqdm(range(len(nodes) - 1), disable=not progress, desc=f"encoding ({sampler}, {steps} NFE)"):
        # 2. node j -> j + 1 with the data prediction at node j [DPMS++ Alg. 2, lambda falling]
        x0_pred = d.p_mean_variance(model, x, at(j), clip_denoised=clip_denoised)["x0_pred"]
        x = exponential_update(x, x0_pred, (column(sigma[j]), column(lam[j])),
                               (column(alpha[j + 1]), column(sigma[j + 1]), column(lam[j + 1])), state,
                               min(order, len(state.history) + 1))
    return x


def encoder_settings(pipeline, sampler: str | None, steps: int | None, spacing: str | None) -> tuple:
    """(sampler, steps, spacing) of an encoding: dpm++2m by default, the run's [sample] steps, the sampler's own
    spacing; checked. The decoder (ddpm sample --x-T) must use the same three."""
    sampler = sampler or "dpm++2m"
    steps = steps if steps is not None else pipeline.config.sample.steps or pipeline.diffusion.num_timesteps
    check_encoder(sampler, steps, pipeline.diffusion.num_timesteps)
    return sampler, int(steps), spacing or SAMPLERS[sampler].default_spacing


@torch.no_grad()
def encode(pipeline, images: np.ndarray, *, sampler: str | None = None, steps: int | None = None,
           spacing: str | None = None, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """x_T of uint8 images (N, H, W, C) by the probability-flow ODE: float32 (N, C, H, W). Decode with `decode`
    (or `ddpm sample --x-T`) with the same sampler, steps and spacing."""
    sampler, steps, spacing = encoder_settings(pipeline, sampler, steps, spacing)
    x0 = as_model_input(pipeline, images).to(model_device(pipeline.model))
    out = [ode_encode(pipeline.diffusion, pipeline.model, x0[i:i + batch_size], sampler=sampler, steps=steps,
                      spacing=spacing, progress=progress).cpu() for i in range(0, len(x0), batch_size)]
    return torch.cat(out).float().numpy()


@torch.no_grad()
def decode(pipeline, latents, *, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
           batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """x_0 from x_T (N, C, H, W) by the deterministic sampler (the ODE's other direction): float32 (N, C, H, W)."""
    sampler, steps, spacing = encoder_settings(pipeline, sampler, steps, spacing)
    latents = torch.as_tensor(np.asarray(latents, dtype=np.float32))
    shape = (pipeline.channels, pipeline.image_size, pipeline.image_size)
    if latents.ndim != 4 or tuple(latents.shape[1:]) != shape:
        raise ConfigError(f"x_T of shape {tuple(latents.shape)}: the model takes (N, {', '.join(map(str, shape))})")
    latents = latents.to(model_device(pipeline.model))
    out = [pipeline.diffusion.sample(pipeline.model, latents[i:i + batch_size].shape, x_T=latents[i:i + batch_size],
                                     sampler=sampler, steps=steps, spacing=spacing, progress=progress).cpu()
           for i in range(0, len(latents), batch_size)]
    return torch.cat(out).float().numpy()


def round_trip_error(images: np.ndarray, decoded: np.ndarray) -> dict:
    """RMSE and largest error on the 0-255 scale between uint8 images (N, H, W, C) and decoded float (N, C, H, W)."""
    back = from_model_range(torch.from_numpy(decoded)).numpy().astype(np.float64)
    diff = back - np.asarray(images, dtype=np.float64).reshape(back.shape)
    return {"rmse": float(np.sqrt((diff**2).mean())), "max": float(np.abs(diff).max())}
