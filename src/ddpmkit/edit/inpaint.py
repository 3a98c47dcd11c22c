"""Inpainting with an unconditional model: RePaint's resampling schedule.

References:
    [DDPM]    Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 4 (q(x_t | x_0)), Algorithm 2 (the reverse step).
    [RePaint] Lugmayr et al. 2022, arXiv 2201.09865: Alg. 1 (known pixels from q(x_{t-1} | x_0), unknown ones from
              the reverse step, merged by the mask; resampled U times), Sec. 4.2 and App. (jumps of length j).

Levels l = K .. 0 of a K-node chain (all T by default): level 0 is x_0, level l >= 1 is x at node l - 1 of the
(respaced) Diffusion, alpha_bar(0) = 1. A reverse step goes from level l to l - 1 [Algorithm 2], then the known
pixels are replaced by a fresh draw of q(x_{l-1} | x_0) [Eq. 4] (x_0 itself at level 0). A jump goes from level l
up to l + J in one draw of q(x_{l+J} | x_l) = N(sqrt(ab_{l+J} / ab_l) x_l, (1 - ab_{l+J} / ab_l) I) [RePaint Eq. 8
for J = 1]. At levels 1, J + 1, 2J + 1, ... (with room for J above them) the chain jumps up J and comes back down
R - 1 times: R is RePaint's number of resamplings (its U, or jump_n_sample), J its jump length; R = 1 is plain
replacement at every step. A chain makes about K R reverse steps (network evaluations).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..samplers import SamplerState, model_device, timestep_nodes
from ..samplers.ancestral import ancestral_step
from .common import as_model_input, seeded

MASKS = ("top", "bottom", "left", "right", "center")  # the named holes: the part of the image to fill in


def named_mask(name: str, size: int) -> np.ndarray:
    """bool (size, size), True where pixels are kept: `top` fills in the top half (keeps the bottom), and so on;
    `center` fills in the central square of half the side."""
    keep = np.ones((size, size), dtype=bool)
    half, quarter = size // 2, size // 4
    holes = {"top": np.s_[:half, :], "bottom": np.s_[size - half:, :], "left": np.s_[:, :half],
             "right": np.s_[:, size - half:], "center": np.s_[quarter:quarter + half, quarter:quarter + half]}
    if name not in holes:
        raise ConfigError(f"--mask {name!r}: not a mask file or one of {list(MASKS)}")
    keep[holes[name]] = False
    return keep


def repaint_levels(num_levels: int, resample: int = 1, jump: int = 1) -> np.ndarray:
    """The levels a RePaint chain visits, from K down to 0 (see the module): jumps of J up, R - 1 times each, at
    levels 1, J + 1, 2J + 1, ... <= K - J."""
    if resample < 1 or jump < 1:
        raise ConfigError(f"--resample {resample} and --jump {jump}: both must be at least 1")
    levels, level = [num_levels], num_levels
    while level > 0:
        level -= 1
        levels.append(level)
        if level >= 1 and (level - 1) % jump == 0 and level + jump <= num_levels:
            for _ in range(resample - 1):
                levels.extend(range(level + jump, level - 1, -1))  # up J in one draw, then J reverse steps
    return np.asarray(levels, dtype=np.int64)


@torch.no_grad()
def repaint(diffusion, model, x0: torch.Tensor, keep: torch.Tensor, *, resample: int = 1, jump: int = 1,
            steps: int | None = None, generator=None, clip_denoised: bool = True, progress: bool = False):
    """x_0 ~ p(x_0 | the kept pixels of x0) by RePaint [RePaint Alg. 1]: x0 (B, ...) in model range, keep a bool
    mask broadcastable to it (True: known). The known pixels of the result are exactly x0's; steps: K nodes of
    the chain, uniformly spaced (default all T)."""
    total = diffusion.num_timesteps
    d = diffusion if steps is None or steps == total else diffusion.respaced(timestep_nodes(
        diffusion.alpha_bar.cpu().double().numpy(), int(steps), "uniform"))
    keep = keep.to(x0.device).expand_as(x0)
    ab = torch.cat([torch.ones(1, dtype=torch.float64), d.alpha_bar.cpu().double()]).tolist()  # by level
    state = SamplerState(num_steps=d.num_timesteps, generator=generator, clip_denoised=clip_denoised)

    def noise():
        return torch.randn(x0.shape, generator=generator, device=x0.device if generator is None
                           else generator.device).to(x0)

    def known(level):  # q(x_level | x_0) [DDPM Eq. 4]; x_0 itself at level 0
        return x0 if level == 0 else ab[level] ** 0.5 * x0 + (1 - ab[level]) ** 0.5 * noise()

    levels = repaint_levels(d.num_timesteps, resample, jump)
    x = torch.where(keep, known(int(levels[0])), noise())
    for here, there in tqdm(zip(levels[:-1].tolist(), levels[1:].tolist()), total=len(levels) - 1,
                            disable=not progress, desc=f"RePaint (R = {resample}, J = {jump})"):
        if there > here:  # 1. jump up: q(x_there | x_here) in one draw [RePaint Eq. 8]
            ratio = ab[there] / ab[here]
            x = ratio ** 0.5 * x + (1 - ratio) ** 0.5 * noise()
            continue
        t = torch.full((len(x),), here - 1, dtype=torch.int64, device=x.device)
        x, _ = ancestral_step(d, model, x, t, state)  # 2. the reverse step for the unknown pixels [Algorithm 2]
        x = torch.where(keep, known(there), x)  # 3. the known pixels from q(x_there | x_0) [RePaint Alg. 1]
    return torch.where(keep, x0, x.clamp(-1.0, 1.0))


@torch.no_grad()
def inpaint(pipeline, images: np.ndarray, mask, n: int = 4, *, resample: int = 1, jump: int = 1,
            steps: int | None = None, seed: int | None = 0, batch_size: int = 256, progress: bool = False):
    """n inpaintings of each uint8 image (N, H, W, C) [RePaint]: float32 (N, n, C, H, W) in [-1, 1], the kept
    pixels exactly the image's. mask: bool (H, W) or (N, H, W), True (white) where pixels are kept, or a name in
    MASKS (the half to fill in)."""
    model = pipeline.model
    device = model_device(model)
    x0 = as_model_input(pipeline, images).to(device)  # (N, C, H, W)
    keep = torch.from_numpy(np.asarray(named_mask(mask, pipeline.image_size) if isinstance(mask, str) else mask,
                                       dtype=bool))
    keep = keep.reshape(-1, 1, *keep.shape[-2:]).expand(len(x0), 1, *keep.shape[-2:]).to(device)  # (N, 1, H, W)
    rows, keep_rows = x0.repeat_interleave(n, dim=0), keep.repeat_interleave(n, dim=0)
    generator = seeded(seed, device)
    out = [repaint(pipeline.diffusion, model, rows[i:i + batch_size], keep_rows[i:i + batch_size],
                   resample=resample, jump=jump, steps=steps, generator=generator, progress=progress).cpu()
           for i in range(0, len(rows), batch_size)]
    return torch.cat(out).reshape(len(x0), n, *x0.shape[1:]).float().numpy()
