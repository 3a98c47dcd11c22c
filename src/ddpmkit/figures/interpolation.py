"""Interpolation in the latent space of the forward process [DDPM Sec. 4.3, Fig. 8, App. D].

References:
    [DDPM] Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 4 (q(x_t | x_0), the stochastic encoder), Algorithm 2
           (the decoder: the reverse process from t down to 0), Sec. 4.3 and Figs. 8-9 (interpolation).

x_t, x'_t ~ q(x_t | x_0) encode the two images, x̄_t = (1 - λ) x_t + λ x'_t mixes them, and the reverse process
decodes x̄_t to x̄_0 ~ p(x_0 | x̄_t). As in the paper, the noise is fixed across λ: the two encodings are drawn once,
and every λ is decoded with the same reverse-process noise, so the row changes only through λ.
t is the paper's timestep, 1 .. T (Diffusion index t - 1); the paper's Fig. 8 uses t = 500 of T = 1000.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import from_model_range, to_model_range
from ..errors import ConfigError
from ..samplers import model_device
from .grid import save_grid
from .inputs import check_fits


def interpolation_lambdas(lambdas) -> np.ndarray:
    """An int L >= 2 -> L evenly spaced λ from 0 to 1; a sequence of floats -> as given."""
    if isinstance(lambdas, (int, np.integer)):
        if lambdas < 2:
            raise ConfigError(f"--lambdas {lambdas}: need at least 2 (0 and 1)")
        return np.linspace(0.0, 1.0, int(lambdas))
    values = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if len(values) == 0 or not np.isfinite(values).all():
        raise ConfigError("lambdas: give at least one finite value")
    return values


@torch.no_grad()
def interpolate(pipeline, a: np.ndarray, b: np.ndarray, t: int | None = None, lambdas=11, *, seed: int = 0,
                progress: bool = False, **sampler) -> np.ndarray:
    """Decode (1 - λ) x_t + λ x'_t for each λ [DDPM Sec. 4.3]: float32 (L, C, H, W) in [-1, 1].

    a, b: uint8 (H, W, C) images of the model's size. t: the paper's timestep of the latents, 1 .. T; by default
    T // 2 (500 of 1000, as the paper's Fig. 8). lambdas: a count L (evenly spaced from 0 to 1) or the values.
    `sampler`: sampler, steps (at most t), spacing and eta of the decoding, as Diffusion.sample takes them
    (default: ancestral, all t steps).
    """
    d, model = pipeline.diffusion, pipeline.network  # under the pipeline's precision
    t = d.num_timesteps // 2 if t is None else t
    if isinstance(t, bool) or not 1 <= int(t) <= d.num_timesteps:
        raise ConfigError(f"--t {t}: must be between 1 and T = {d.num_timesteps}")
    t = int(t)
    lam = interpolation_lambdas(lambdas)
    device = model_device(model)
    pair = np.stack([check_fits(a, pipeline, "image a"), check_fits(b, pipeline, "image b")])
    x0 = to_model_range(torch.from_numpy(pair)).to(device)  # (2, C, H, W)
    # 1. encode both with q(x_t | x_0) [DDPM Eq. 4]; index t - 1 is the paper's t
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator, device=device).to(x0)
    xt = d.q_sample(x0, torch.full((2,), t - 1, dtype=torch.int64, device=device), noise)
    # 2. mix linearly in latent space
    weight = torch.as_tensor(lam, dtype=x0.dtype, device=device).reshape(-1, 1, 1, 1)  # (L, 1, 1, 1)
    x_bar = (1.0 - weight) * xt[0:1] + weight * xt[1:2]  # (L, C, H, W)
    # 3. decode with the reverse process from t to 0: the first t steps of the chain are a Diffusion of their own
    head = d if t == d.num_timesteps else d.respaced(range(t))
    decode_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    out = []
    for i in tqdm(range(len(lam)), disable=not progress, desc="interpolating", leave=False):
        same_noise = torch.Generator(device).manual_seed(decode_seed)  # one reverse-process noise for every λ
        out.append(head.sample(model, x_bar[i:i + 1].shape, x_T=x_bar[i:i + 1], generator=same_noise,
                               **sampler).cpu())
    return torch.cat(out).float().numpy()


def save_interpolation(a: np.ndarray, b: np.ndarray, decoded: np.ndarray, path) -> None:
    """One row: image a, the decoded images for λ from 0 to 1, image b [DDPM Fig. 8]."""
    middle = from_model_range(torch.from_numpy(decoded)).numpy()  # (L, H, W, C)
    save_grid(np.concatenate([a[None], middle, b[None]]), path, nrow=len(decoded) + 2)
