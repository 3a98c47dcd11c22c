"""`ddpm sample --per-class K`: a grid with one row per class, K samples each, each row labelled with its class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .grid import make_grid, save_image


def class_grid(images: np.ndarray, row_names: list[str], per_row: int) -> np.ndarray:
    """uint8 (rows * per_row, H, W, C) -> one RGB image: the grid, with each row's name in a left margin."""
    grid = make_grid(images, nrow=per_row)
    rgb = np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid
    font = ImageFont.load_default()
    width = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=font)) for n in row_names)
    canvas = Image.new("RGB", (rgb.shape[1] + width, rgb.shape[0]), "white")
    canvas.paste(Image.fromarray(rgb), (width, 0))
    draw, row_h = ImageDraw.Draw(canvas), rgb.shape[0] / len(row_names)
    for r, name in enumerate(row_names):
        draw.text((4, int((r + 0.5) * row_h) - 6), name, fill="black", font=font)
    return np.asarray(canvas)


def save_class_grid(images: np.ndarray, row_names: list[str], per_row: int, path: Path) -> None:
    save_image(class_grid(images, row_names, per_row), Path(path))
