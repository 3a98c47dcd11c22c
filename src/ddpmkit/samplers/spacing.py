"""Which timesteps a K-step sampler visits: `uniform`, `logsnr` or `karras` spacing, always integer nodes.

References:
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672, Sec. 4: evenly spaced t, both ends included.
    [DPMS]  Lu et al. 2022, arXiv 2206.00927, Sec. 3.3: evenly spaced in log-SNR for discrete-time models.
    [EDM]   Karras et al. 2022, arXiv 2206.00364, Eq. 5: sigma_i = (s_max^(1/rho) + i/(K-1) (s_min^(1/rho) -
            s_max^(1/rho)))^rho with rho = 7.

The network was trained only at the integer timesteps of its schedule, so every node is one of them. A spacing
first places K targets on its own axis (t, lambda = log(alpha_bar / (1 - alpha_bar)), or
sigma = sqrt((1 - alpha_bar) / alpha_bar)) between the first and the last timestep, maps each target to the
timestep whose value on that axis is nearest (ties to the smaller t), and then makes the nodes strictly
increasing: bottom-up t_j = max(t_j, t_{j-1} + 1), top-down t_j = min(t_j, t_{j+1} - 1). So K <= T always gives
exactly K distinct nodes with 0 and T - 1 among them: where the axis crowds several targets onto one timestep
(log-SNR spacing near t = 0 on the linear schedule) the neighbours move to the next free timesteps.
Every solver then uses the schedule's exact alpha_bar (and so lambda and sigma) at its integer nodes, never the
un-rounded targets: each step is exact for the step it takes.
"""

from __future__ import annotations

import numpy as np

from ..diffusion import timestep_subsequence
from ..errors import ConfigError

SPACINGS = ("uniform", "logsnr", "karras")
KARRAS_RHO = 7.0


def _nearest(axis: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the entry of the monotone `axis` nearest to each target."""
    order = np.argsort(axis, kind="stable")
    sorted_axis = axis[order]
    pos = np.clip(np.searchsorted(sorted_axis, targets), 1, len(axis) - 1)
    left, right = sorted_axis[pos - 1], sorted_axis[pos]
    pick = np.where(np.abs(targets - left) <= np.abs(right - targets), pos - 1, pos)
    return order[pick]


def _strictly_increasing(nodes: np.ndarray, num_timesteps: int) -> np.ndarray:
    """Sorted nodes pushed apart to distinct integers in 0 .. T-1 (bottom-up, then top-down)."""
    t = np.sort(nodes.astype(np.int64))
    t[0], t[-1] = 0, num_timesteps - 1
    for j in range(1, len(t)):
        t[j] = max(t[j], t[j - 1] + 1)
    t[-1] = num_timesteps - 1
    for j in range(len(t) - 2, -1, -1):
        t[j] = min(t[j], t[j + 1] - 1)
    return t


def timestep_nodes(alpha_bar: np.ndarray, steps: int, spacing: str = "uniform") -> np.ndarray:
    """`steps` distinct integer timesteps, increasing, from 0 to T-1, placed by `spacing` (see the module)."""
    T = len(alpha_bar)
    if spacing not in SPACINGS:
        raise ConfigError(f"spacing {spacing!r} is not one of {list(SPACINGS)}")
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ConfigError(f"sampling steps must be between 1 and T = {T}, got {steps}")
    if steps == 1 or spacing == "uniform":  # [IDDPM Sec. 4]; rounding evenly spaced t gives distinct nodes
        return timestep_subsequence(T, steps)
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    if spacing == "logsnr":  # lambda = log(alpha_bar / (1 - alpha_bar)), evenly spaced [DPMS Sec. 3.3]
        axis = np.log(alpha_bar) - np.log1p(-alpha_bar)
        targets = np.linspace(axis[-1], axis[0], steps)
    else:  # sigma^(1/rho) evenly spaced [EDM Eq. 5]; on the axis sigma^(1/rho) itself
        axis = np.exp(0.5 * (np.log1p(-alpha_bar) - np.log(alpha_bar)) / KARRAS_RHO)
        targets = np.linspace(axis[-1], axis[0], steps)
    return _strictly_increasing(_nearest(axis, targets), T)


__all__ = ["SPACINGS", "timestep_nodes"]
