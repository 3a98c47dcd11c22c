"""Noise schedules: beta_t for t = 1 .. T as float64 NumPy arrays, and nothing else.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239, Sec. 4: beta linear from 1e-4 to 0.02, T = 1000.
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672, Sec. 3.2, Eq. 17: the cosine schedule.

Every schedule goes through `validate`, so a Diffusion only ever sees a 1-D float64 array with 0 < beta < 1 whose
alpha_bar falls at every step and stays above the smallest normal float32 (every coefficient finite in float32).
Element i of the array is the paper's beta_{i+1} (index 0 is the paper's t = 1).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .errors import ConfigError

_MIN_ALPHA_BAR = float(np.finfo(np.float32).tiny)  # about 1.2e-38: the smallest normal float32


def validate(beta) -> np.ndarray:
    """Check a user-given schedule and return it as a 1-D float64 array with every beta in (0, 1)."""
    try:
        arr = np.asarray(beta, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"schedule: betas must be numbers ({exc})") from None
    if arr.ndim != 1:
        raise ConfigError(f"schedule: betas must be a 1-D array, got shape {arr.shape}")
    if arr.size < 1:
        raise ConfigError("schedule: need at least one timestep (T >= 1), got an empty array")
    bad = ~np.isfinite(arr) | (arr <= 0.0) | (arr >= 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"schedule: every beta must lie in the open interval (0, 1); beta[{i}] = {arr[i]!r} "
            f"(t = {i + 1} in the paper's numbering)"
        )
    _check_alpha_bar(arr)
    return arr


def _check_alpha_bar(beta: np.ndarray) -> None:
    """alpha_bar must fall at every step (in float64) and stay a normal float32, so every coefficient is finite."""
    alpha_bar = np.cumprod(1.0 - beta)
    flat = np.flatnonzero(alpha_bar >= np.append(1.0, alpha_bar[:-1]))
    if flat.size:
        i = int(flat[0])
        raise ConfigError(f"schedule: beta[{i}] = {beta[i]!r} is too small to change alpha_bar in float64 "
                          "(use betas above 1e-15)")
    if alpha_bar[-1] < _MIN_ALPHA_BAR:
        raise ConfigError(f"schedule: alpha_bar_T = {alpha_bar[-1]:.3g} is below {_MIN_ALPHA_BAR:.3g}, so "
                          "1/sqrt(alpha_bar) and its kin overflow float32; use fewer timesteps or smaller betas")


def _check_timesteps(timesteps: int) -> int:
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise ConfigError(f"schedule: timesteps must be an integer >= 1, got {timesteps!r}")
    return int(timesteps)


def linear(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """beta_t evenly spaced from beta_start to beta_end [DDPM Sec. 4]."""
    timesteps = _check_timesteps(timesteps)
    return validate(np.linspace(beta_start, beta_end, timesteps, dtype=np.float64))


def cosine(timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - alpha_bar(t) / alpha_bar(t-1), alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2) [IDDPM Eq. 17].

    beta is clipped at max_beta = 0.999 to avoid the singularity at t = T [IDDPM Sec. 3.2].
    """
    timesteps = _check_timesteps(timesteps)

    def f(t: np.ndarray) -> np.ndarray:
        return np.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    t = np.arange(timesteps + 1, dtype=np.float64)
    alpha_bar = f(t) / f(np.zeros(1))  # alpha_bar(0) = 1 exactly
    beta = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return validate(np.clip(beta, 0.0, max_beta))


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {"linear": linear, "cosine": cosine}


def get(name: str, timesteps: int = 1000, **kwargs) -> np.ndarray:
    """The named schedule ("linear" or "cosine") with T = timesteps."""
    if name not in SCHEDULES:
        raise ConfigError(f"schedule: unknown name {name!r}; choose one of {sorted(SCHEDULES)} or give betas")
    return SCHEDULES[name](timesteps, **kwargs)
