"""Progressive coding: rate and distortion along the reverse process [DDPM Sec. 4.3, Algorithms 3-4, Fig. 5].

References:
    [DDPM] Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 5 (the bound, term by term), Algorithms 3-4 (sending
           x_T, x_{T-1}, .., x_1 and finally x_0), Fig. 5 and Table 2 (rate and distortion).

The curve reuses the per-t terms of the NLL evaluation (`evaluate.nll.bits_per_dim`, saved by
`ddpm eval --metrics nll` as nll_terms.npz): one pass over t gives both the bound terms and the x0 errors.

Timesteps are the paper's, t = T .. 0 (T + 1 rows; Diffusion's index i is the paper's t = i + 1):
    rate(t)       bits/dim sent once the receiver holds x_t: L_T + sum_{s=t}^{T-1} L_s for t >= 1 (Algorithm 3),
                  and rate(0) = the whole bound, the NLL, once x_0 itself is sent with the decoder L_0.
                  rate(1) = NLL - L_0 is the "rate" of the paper's Table 2.
    distortion(t) RMSE of x0_pred(x_t) against x_0 on the [0, 255] scale (Algorithm 4's estimate), the root of the
                  mean over images of the per-image mean squared error; 0 at t = 0 (x_0 is received exactly).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path
from ..samplers import model_device

PIXEL_SCALE = 127.5  # [-1, 1] -> [0, 255]
FIGSIZE, DPI = (12.0, 3.5), 100  # the PNG is FIGSIZE * DPI pixels: 1200 x 350
CSV_HEADER = "t,rate_bpd,distortion_rmse"


def rate_distortion_from_terms(terms_bpd: np.ndarray, x0_mse: np.ndarray, prior_bpd: float) -> dict:
    """The curve from per-t terms (T,), x0 errors (T,) and L_T (all means over images), index i = paper t - 1."""
    terms_bpd, x0_mse = np.asarray(terms_bpd, np.float64), np.asarray(x0_mse, np.float64)
    steps = len(terms_bpd)
    t = np.arange(steps, -1, -1)  # paper t = T .. 0
    tail = np.append(np.cumsum(terms_bpd[::-1])[::-1], 0.0)  # tail[s] = sum of the terms at index >= s
    rate = float(prior_bpd) + tail[t]  # the terms at index >= t are L_t .. L_{T-1} in the paper's numbering
    distortion = np.append(0.0, np.sqrt(x0_mse) * PIXEL_SCALE)[t]  # index t - 1 holds x0_pred(x_t)
    return {"t": t, "rate_bpd": rate, "distortion_rmse": distortion}


def rate_distortion(pipeline, images: np.ndarray, *, batch_size: int = 256, seed: int = 0,
                    progress: bool = False) -> dict:
    """Rate and distortion at t = T .. 0 for uint8 images (N, H, W, C) [DDPM Fig. 5]; also nll_bpd, the bound.

    With the same images, batch size and seed, rate_bpd at t = 0 is the nll_bpd of `ddpm eval --metrics nll`.
    """
    from ..evaluate.nll import bits_per_dim

    out = bits_per_dim(pipeline.diffusion, pipeline.network, images, batch_size=batch_size, seed=seed,
                       progress=progress, device=model_device(pipeline.model))
    return {**rate_distortion_from_terms(out["terms_bpd"], out["x0_mse"], out["prior_bpd"]), "nll_bpd": out["nll_bpd"]}


def load_terms(path: str | Path, num_timesteps: int) -> dict:
    """The curve from an nll_terms.npz of `ddpm eval --metrics nll`, checked against the model's T."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise DataError(f"--terms {str(path)!r}: not a readable .npz; write one with ddpm eval --metrics nll") from None
    missing = [k for k in ("terms_bpd", "x0_mse", "prior_bpd") if k not in arrays]
    if missing:
        raise DataError(f"--terms {str(path)!r}: has no {', '.join(missing)}; write it with ddpm eval --metrics nll")
    if arrays["terms_bpd"].shape != (num_timesteps,) or arrays["x0_mse"].shape != (num_timesteps,):
        raise DataError(f"--terms {str(path)!r}: terms of shape {arrays['terms_bpd'].shape}, the model has "
                        f"T = {num_timesteps}: use the terms of this run")
    out = rate_distortion_from_terms(arrays["terms_bpd"], arrays["x0_mse"], float(arrays["prior_bpd"]))
    if "per_image_bpd" in arrays:
        out["nll_bpd"] = float(np.mean(arrays["per_image_bpd"]))
    return out


def save_csv(curve: dict, path: str | Path) -> None:
    """t,rate_bpd,distortion_rmse, one row per t from T down to 0."""
    table = np.column_stack([curve["t"], curve["rate_bpd"], curve["distortion_rmse"]])
    with atomic_path(path) as tmp:
        np.savetxt(tmp, table, delimiter=",", header=CSV_HEADER, comments="", fmt=["%d", "%.10g", "%.10g"])


def read_csv(path: str | Path) -> dict:
    """The columns of a CSV written by save_csv."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {"t": table[:, 0].astype(np.int64), "rate_bpd": table[:, 1], "distortion_rmse": table[:, 2]}


def plot_rate_distortion(curve: dict, path: str | Path) -> None:
    """Three panels as in [DDPM Fig. 5]: distortion and rate against reverse steps T - t, distortion against rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = curve["t"][0] - curve["t"]  # reverse process steps T - t
    fig, axes = plt.subplots(1, 3, figsize=FIGSIZE, dpi=DPI)
    panels = [(steps, curve["distortion_rmse"], "reverse process steps (T - t)", "distortion (RMSE, [0, 255])"),
              (steps, curve["rate_bpd"], "reverse process steps (T - t)", "rate (bits/dim)"),
              (curve["rate_bpd"], curve["distortion_rmse"], "rate (bits/dim)", "distortion (RMSE, [0, 255])")]
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels):
        ax.plot(x, y)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
