"""Helpers of the eval tests: a tiny run written through store/ alone (no training) and a tiny classifier.

Imported by the eval tests' conftest.py (fixture tiny_eval) and by tests that need a run on disk."""

from __future__ import annotations

from pathlib import Path

import torch

from ddpmkit.config import RunConfig
from ddpmkit.models.build import build_model
from ddpmkit.store import write_run


def write_tiny_run(path: Path, classes: list[str] | None = None) -> Path:
    """A run directory with one checkpoint of the tiny preset for 8x8 grey digits, T = 8."""
    values = {"model.preset": "tiny", "diffusion.timesteps": 8, "sample.steps": 4}
    if classes is not None:
        values["model.num_classes"] = len(classes)
    config = RunConfig().with_values(values)
    torch.manual_seed(0)
    net = build_model(config, 8, 1)
    meta = {"image_size": 8, "channels": 1, "data": {"name": "digits"}}
    if classes is not None:
        meta["classes"] = {"names": classes, "counts": [1] * len(classes)}
    write_run(path, config, meta, {"model": net.state_dict(), "ema": net.state_dict()})
    return path


def make_tiny_eval(root: Path) -> dict:
    """{"run": an unconditional tiny run, "classifier": a 20-step digits classifier (.safetensors)}."""
    from ddpmkit.data import load_dataset
    from ddpmkit.evaluate.classifier import train_classifier

    clf = root / "clf.safetensors"
    train_classifier(load_dataset("digits", split="train"), clf, steps=20, width=8, feature_dim=16, progress=False)
    return {"run": write_tiny_run(root / "run"), "classifier": clf, "root": root}
