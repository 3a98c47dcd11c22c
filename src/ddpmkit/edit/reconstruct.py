"""Reconstruction from x_t: DDPM's Fig. 7 and SDEdit.

References:
    [DDPM]   Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 4 (q(x_t | x_0)), Algorithm 2, Sec. 4.3 and Fig. 7
             (samples of p_theta(x_0 | x_t) from one x_t share its high-level attributes when t is small).
    [SDEdit] Meng et al. 2021, arXiv 2108.01073: the same operation on a user's own rough image, Alg. 1.

An image x_0 is noised once to x_t ~ q(x_t | x_0) at each t, and n samples of p_theta(x_0 | x_t) are drawn from
that one x_t by the reverse process from t to 0: by default the ancestral chain on all t steps (Algorithm 2 started
at t), or any sampler on K <= t of its nodes. t is the paper's timestep, 1 .. T; at t = T the samples are
(almost) independent of the image: draws of the model's p(x_0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..samplers import model_device
from .common import as_model_input, check_t, head, seeded

PAPER_T = (100, 250, 500, 750, 1000)  # the default rows; scaled to T for a run of another length


@dataclass
class Reconstruction:
    """t (R,) the paper's timesteps; xt float32 (N, R, C, H, W), the one x_t of each image and t; samples float32
    (N, R, n, C, H, W) in [-1, 1]: the draws of p(x_0 | x_t) from it."""

    t: np.ndarray
    xt: np.ndarray
    samples: np.ndarray


def default_t(num_timesteps: int) -> list[int]:
    """Fig. 7's rows for T = 1000, the same fractions of T otherwise."""
    return sorted({max(1, round(t * num_timesteps / 1000)) for t in PAPER_T})


@torch.no_grad()
def sample_from_t(diffusion, model, xt: torch.Tensor, t: int, *, sampler: str = "ancestral", steps: int | None = None,
                  spacing: str | None = None, eta: float | None = None, generator=None, clip_denoised: bool = True,
                  progress: bool = False) -> torch.Tensor:
    """x_0 ~ p(x_0 | x_t): the reverse process from the paper's t to 0, started at x_t [DDPM Algorithm 2 from
    line 3 at t; SDEdit Alg. 1]. steps: nodes of the first t timesteps (default all t; at most t)."""
    t = check_t(t, diffusion.num_timesteps)
    steps = t if steps is None else min(int(steps), t)
    return head(diffusion, t).sample(model, xt.shape, x_T=xt, sampler=sampler, steps=steps, spacing=spacing,
                                     eta=eta, generator=generator, clip_denoised=clip_denoised, progress=progress)


@torch.no_grad()
def reconstruct(pipeline, images: np.ndarray, t=None, n: int = 4, *, seed: int | None = 0, batch_size: int = 256,
                sampler: str = "ancestral", steps: int | None = None, spacing: str | None = None,
                eta: float | None = None, progress: bool = False) -> Reconstruction:
    """Fig. 7 [DDPM Sec. 4.3] for uint8 images (N, H, W, C) of the model's size: for each image and each paper's t
    (default 100, 250, 500, 750, 1000 of T = 1000), one x_t ~ q(x_t | x_0) [Eq. 4] and n samples of p(x_0 | x_t)."""
    d, model = pipeline.diffusion, pipeline.model
    ts = [check_t(v, d.num_timesteps) for v in (default_t(d.num_timesteps) if t is None else t)]
    device = model_device(model)
    x0 = as_model_input(pipeline, images).to(device)  # (N, C, H, W)
    generator = seeded(seed, device)
    xts, outs = [], []
    for tt in ts:
        idx = torch.full((len(x0),), tt - 1, dtype=torch.int64, device=device)
        noise = torch.randn(x0.shape, generator=generator, device=device).to(x0)
        xt = d.q_sample(x0, idx, noise)  # (N, C, H, W): one x_t per image [Eq. 4]
        rows = xt.repeat_interleave(n, dim=0)  # (N n, C, H, W): n draws from each
        done = [sample_from_t(d, model, rows[i:i + batch_size], tt, sampler=sampler, steps=steps, spacing=spacing,
                              eta=eta, generator=generator, progress=progress).cpu()
                for i in range(0, len(rows), batch_size)]
        xts.append(xt.cpu())
        outs.append(torch.cat(done).reshape(len(x0), n, *x0.shape[1:]))
    return Reconstruction(np.asarray(ts), torch.stack(xts, 1).float().numpy(), torch.stack(outs, 1).float().numpy())
