"""Figures drawn from data: sample grids, loss curves, and the paper's figures; re-exports only.

    trajectory       x0 predictions along a sampling chain [DDPM Fig. 6]        -> Trajectory of arrays
    interpolate      decode mixed latents of two images [DDPM Sec. 4.3, Fig. 8]   -> (L, C, H, W) array
    rate_distortion  rate and distortion against t [DDPM Sec. 4.3, Fig. 5]       -> dict of (T + 1,) arrays
Each has a save_* / plot_* function that writes the PNG the `ddpm` command writes.
"""

from .coding import load_terms, plot_rate_distortion, rate_distortion, rate_distortion_from_terms, save_csv
from .generation import Trajectory, save_trajectory, trajectory, trajectory_timesteps
from .grid import make_grid, save_grid, save_image
from .interpolation import interpolate, interpolation_lambdas, save_interpolation

__all__ = ["make_grid", "save_grid", "save_image", "interpolate", "interpolation_lambdas", "save_interpolation",
           "load_terms", "plot_rate_distortion", "rate_distortion", "rate_distortion_from_terms", "save_csv",
           "Trajectory", "save_trajectory", "trajectory", "trajectory_timesteps"]
