"""The pixel size of a make_grid PNG of 8x8 digits, shared by the CLI tests that draw grids (figures, edit)."""

import math

CELL = 8 * math.ceil(32 / 8)  # make_grid enlarges 8x8 digits to 32x32 cells, with 1 pixel of padding


def grid_size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) of a make_grid PNG."""
    return columns * (CELL + 1) + 1, rows * (CELL + 1) + 1
