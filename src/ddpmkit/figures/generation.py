"""Progressive generation: the x0 the model predicts along a sampling chain [DDPM Sec. 4.3, Fig. 6].

References:
    [DDPM] Ho, Jain & Abbeel 2020, arXiv 2006.11239: Algorithm 2 (the chain), Eq. 15 (x0 from x_t and eps),
           Fig. 6 (x0 predictions over time, left to right).

Timesteps here are the paper's: t = T .. 1 are the latents and t = 0 is the sample x_0 itself. (In Diffusion's
index convention, the paper's t is index t - 1.) The chain is Algorithm 2 on all T steps, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import from_model_range
from ..errors import ConfigError
from ..samplers import model_device
from .grid import save_grid

SHOW = ("x0", "xt", "both")


@dataclass
class Trajectory:
    """Columns of a sampling chain: t (K,) from T down to 0, and for each of N samples the x_t and the x0
    predicted from it, float32 (N, K, C, H, W) in model range ([-1, 1] for x0; x_t is unbounded)."""

    t: np.ndarray
    x0_pred: np.ndarray
    xt: np.ndarray


def trajectory_timesteps(num_timesteps: int, columns: int) -> np.ndarray:
    """`columns` evenly spaced paper timesteps from T down to 0, both ends included."""
    if not 2 <= columns <= num_timesteps + 1:
        raise ConfigError(f"--columns {columns}: must be between 2 and T + 1 = {num_timesteps + 1}")
    return np.floor(np.linspace(num_timesteps, 0, columns) + 0.5).astype(np.int64)


@torch.no_grad()
def trajectory(pipeline, n: int = 8, columns: int = 10, *, seed: int | None = 0, batch_size: int = 16,
               progress: bool = False, sampler: str = "ancestral", steps: int | None = None,
               spacing: str | None = None, eta: float | None = None) -> Trajectory:
    """Run Algorithm 2 for n samples and keep x_t and x0_pred(x_t) at `columns` evenly spaced t [DDPM Fig. 6].

    With the same seed and batch size, the last column is `pipeline.sample(n, sampler="ancestral", steps=T)`.
    Another sampler or fewer steps: each column shows the step whose timestep is nearest to the column's t.
    The sampler keeps a batch's whole chain in CPU memory, (K + 1) * 2 images per sample: keep batch_size small.
    """
    if n < 1 or batch_size < 1:
        raise ConfigError("--n and --batch-size must be at least 1")
    d, model = pipeline.diffusion, pipeline.network  # under the pipeline's precision
    T = d.num_timesteps
    t = trajectory_timesteps(T, columns)
    device = model_device(model)
    generator = None if seed is None else torch.Generator(device).manual_seed(seed)
    x0_cols, xt_cols = [], []
    for start in range(0, n, batch_size):
        shape = (min(batch_size, n - start), pipeline.channels, pipeline.image_size, pipeline.image_size)
        x0, traj = d.sample(model, shape, sampler=sampler, steps=steps, spacing=spacing, eta=eta,
                            generator=generator, progress=progress, return_trajectory=True)
        # traj["xt"] (K + 1, B, ...) runs x_T .. x_0 and traj["x0_pred"] (K, B, ...) is predicted from the first K,
        # the j-th at the paper's timestep traj["t"][j] + 1 (T - j with all T steps); the last column, t = 0,
        # shows the (clipped) sample in both
        paper_t = np.asarray(traj["t"]) + 1
        pos, final = np.abs(paper_t[None, :] - t[:, None]).argmin(1), x0.cpu()[None]
        xt_cols.append(torch.cat([traj["xt"][pos[:-1]], final]).transpose(0, 1))  # (B, K, C, H, W)
        x0_cols.append(torch.cat([traj["x0_pred"][pos[:-1]], final]).transpose(0, 1))
        del traj  # all T + 1 steps of this batch; only K columns are kept
    return Trajectory(t=t, x0_pred=torch.cat(x0_cols).float().numpy(), xt=torch.cat(xt_cols).float().numpy())


def trajectory_rows(traj: Trajectory, show: str = "x0") -> np.ndarray:
    """uint8 cells (rows * K, H, W, C) in row order: one row per sample, or x_t over x0 for show="both"."""
    if show not in SHOW:
        raise ConfigError(f"--show {show!r}: choose one of {', '.join(SHOW)}")
    parts = {"x0": [traj.x0_pred], "xt": [traj.xt], "both": [traj.xt, traj.x0_pred]}[show]
    rows = np.stack(parts, axis=1)  # (N, P, K, C, H, W)
    cells = torch.from_numpy(rows.reshape(-1, *rows.shape[-3:]))  # (N * P * K, C, H, W)
    return from_model_range(cells).numpy()


def save_trajectory(traj: Trajectory, path, show: str = "x0") -> None:
    """A PNG grid: a row per sample (two with show="both"), a column per t from T (left) to 0 [DDPM Fig. 6]."""
    save_grid(trajectory_rows(traj, show), path, nrow=len(traj.t))
