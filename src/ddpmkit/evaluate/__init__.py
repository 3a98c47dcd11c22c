"""Evaluation: likelihood in bits/dim, FID and IS, precision/recall, memorisation."""
