"""What the three edits share: images in and out of the model's range, the paper's t checked, batching."""

from __future__ import annotations

import numpy as np
import torch

from ..data import to_model_range
from ..errors import ConfigError
from ..figures.inputs import check_fits


def as_model_input(pipeline, images: np.ndarray, what: str = "images") -> torch.Tensor:
    """uint8 (N, H, W, C) of the model's size -> float32 (N, C, H, W) in [-1, 1] [DDPM Sec. 3.3]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    return to_model_range(torch.from_numpy(np.ascontiguousarray(check_fits(images, pipeline, what))))


def check_t(t, num_timesteps: int, flag: str = "--t") -> int:
    """The paper's timestep t, 1 .. T (Diffusion index t - 1), or a one-line ConfigError."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= int(t) <= num_timesteps:
        raise ConfigError(f"{flag} {t}: must be a timestep between 1 and T = {num_timesteps}")
    return int(t)


def head(diffusion, t: int):
    """The first t steps of the chain as a Diffusion of their own: the reverse process from the paper's t to 0."""
    return diffusion if t == diffusion.num_timesteps else diffusion.respaced(range(t))


def seeded(seed: int | None, device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device).manual_seed(seed)
