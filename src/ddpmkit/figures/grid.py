"""Sample grids and loss curves as PNG files: pictures from data, no math."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_path


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1, min_cell: int = 32) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows, cols) image; small images are enlarged (nearest)."""
    n, h, w, c = images.shape
    scale = max(1, math.ceil(min_cell / max(h, w)))
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return grid


def save_image(array: np.ndarray, path: Path) -> None:
    """Write a uint8 (H, W, C) array as PNG, atomically (temp file, then rename)."""
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_grid(images: np.ndarray, path: Path, nrow: int | None = None) -> None:
    save_image(make_grid(images, nrow), path)


def plot_loss(metrics_file: Path, out: Path) -> None:
    """loss.png: the training loss of each log line of metrics.jsonl against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    for line in Path(metrics_file).read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            steps.append(row["step"])
            losses.append(row["loss"])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
