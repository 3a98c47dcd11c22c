"""Figures drawn from data: sample grids, loss curves (and later the paper's figures)."""
