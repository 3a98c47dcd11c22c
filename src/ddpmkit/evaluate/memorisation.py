"""Memorisation check: are generated images closer to the training set than new real images are?

For each generated image, the distance to its nearest training image; for each held-out real image (never trained
on), the same. A model that generalises makes images about as far from the training set as fresh real images are
(ratio of medians near 1); a model that copies its training set makes images much closer (ratio near 0). [DDPM]
argues from the small gap between train and test NLL (0.03 bits/dim on CIFAR-10) that the model does not overfit;
this module looks at the samples themselves, and saves the closest pairs as a picture to look at.

Distance: the root-mean-square pixel difference in the model's [-1, 1] range (uint8 scaled as `to_model_range`
does), i.e. ||a - b||_2 / sqrt(H * W * C). It lies in [0, 2] whatever the image size, so 0.05 means "about 6 grey
levels off per pixel" on any data set; the ratio is the same as with the plain L2 distance.

A median over images does not depend on how many there are, so the generated and held-out sets may differ in
size; each needs enough images (a few hundred) for its median to be stable. Pixel distance finds exact and
near-exact copies; a copy that is shifted or mirrored looks far away to it.

References:
    [DDPM] Ho, Jain & Abbeel 2020, arXiv 2006.11239.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import to_model_range
from ..errors import DataError, UserError
from ..figures.grid import make_grid, save_image

PAIRS_PER_ROW = 4


def _flat(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C*H*W) in [-1, 1] (exact: 255 levels over 2.0)."""
    return to_model_range(torch.from_numpy(np.ascontiguousarray(images))).flatten(1)


def nearest_neighbours(queries: np.ndarray, train: np.ndarray, *,
                       batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each query image its nearest training image: index int64 (N,) and RMS distance float64 (N,).

    The search uses float32 |q|^2 + |t|^2 - 2 q.t in blocks of batch_size x batch_size (bounded memory for 60k
    training images); the winner's distance is then recomputed exactly in float64, so a copy reads 0.
    """
    q = _flat(queries)  # (N, D)
    q_sq = (q * q).sum(1)
    best_d2 = torch.full((len(q),), float("inf"))
    best_idx = torch.zeros(len(q), dtype=torch.int64)
    for t_start in range(0, len(train), batch_size):
        t = _flat(train[t_start:t_start + batch_size])  # converted once per chunk, not once per query batch
        t_sq = (t * t).sum(1)
        for q_start in range(0, len(q), batch_size):
            rows = slice(q_start, q_start + batch_size)
            d2 = q_sq[rows, None] + t_sq[None, :] - 2.0 * (q[rows] @ t.T)  # (b, t)
            d2_min, arg = d2.min(dim=1)
            better = d2_min < best_d2[rows]
            best_d2[rows] = torch.where(better, d2_min, best_d2[rows])
            best_idx[rows] = torch.where(better, arg + t_start, best_idx[rows])
    idx = best_idx.numpy()
    distance = np.empty(len(q))
    for start in range(0, len(q), batch_size):
        a = q[start:start + batch_size].double()
        b = _flat(train[idx[start:start + batch_size]]).double()
        distance[start:start + batch_size] = ((a - b) ** 2).mean(1).sqrt().numpy()
    return idx, distance


def _check(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> None:
    arrays = {"generated": generated, "train": train, "heldout": heldout}
    for name, x in arrays.items():
        if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4):
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise UserError(f"memorisation: {name} images must be uint8 (N, H, W, C), got {got}")
        if len(x) == 0:
            raise DataError(f"memorisation: no {name} images: pass at least one (a few hundred for a stable median)")
    shapes = {name: x.shape[1:] for name, x in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {'x'.join(map(str, s))}" for name, s in shapes.items())
        raise DataError(f"memorisation: image shapes differ ({listed}): load all three at the same size and channels")


def memorisation(generated: np.ndarray, train: np.ndarray, heldout: np.ndarray, *, batch_size: int = 2048) -> dict:
    """Nearest-training-image distances of generated vs held-out real images, and the ratio of their medians.

    Returns gen_to_train_median, heldout_to_train_median (RMS in [-1, 1] pixels), ratio = gen / held-out median
    (near 0: the model copies training images; near 1: as far from them as new real images), nearest_index (N,)
    and nearest_distance (N,) of each generated image, heldout_nearest_distance (K,), and metric ("rms").
    """
    _check(generated, train, heldout)
    gen_idx, gen_dist = nearest_neighbours(generated, train, batch_size=batch_size)
    _, held_dist = nearest_neighbours(heldout, train, batch_size=batch_size)
    gen_median, held_median = float(np.median(gen_dist)), float(np.median(held_dist))
    if held_median == 0.0:
        raise DataError("memorisation: most held-out images are exact copies of training images: use a held-out "
                        "split that does not overlap the training split")
    return {"gen_to_train_median": gen_median, "heldout_to_train_median": held_median,
            "ratio": gen_median / held_median, "nearest_index": gen_idx, "nearest_distance": gen_dist,
            "heldout_nearest_distance": held_dist, "metric": "rms"}


def save_closest_pairs(generated: np.ndarray, train: np.ndarray, result: dict, path: Path, n: int = 16) -> np.ndarray:
    """PNG of the n generated images closest to the training set, each left of its nearest training image.

    Pairs run left to right, closest first, PAIRS_PER_ROW pairs per row, a blank cell between pairs so that
    they read as pairs. Returns the generated indices shown.
    """
    order = np.argsort(result["nearest_distance"], kind="stable")[:max(1, n)]
    nearest = result["nearest_index"][order]
    per_row = min(PAIRS_PER_ROW, len(order))
    blank = np.full(generated.shape[1:], 255, dtype=np.uint8)
    tiles = []
    for i, (g, t) in enumerate(zip(order, nearest)):
        tiles += ([blank] if i % per_row else []) + [generated[g], train[t]]
    save_image(make_grid(np.stack(tiles), nrow=3 * per_row - 1), Path(path))
    return order
