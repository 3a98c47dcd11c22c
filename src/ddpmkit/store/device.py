"""Which device a stored model is read onto: the one choice that reading a model and training share."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": this process's GPU when CUDA is there, else the CPU; or an explicit "cpu", "cuda", "cuda:1"."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device
