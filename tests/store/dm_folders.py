"""diffusers folders for the import/export tests (helpers; conftest.py holds the fixtures): google/ddpm-cifar10-32's config, a shrunken 256x256 layout and a
tiny net, saved by diffusers itself in the flat and the pipeline layout (random weights, dropout off)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# google/ddpm-cifar10-32's config.json and scheduler_config.json, as the repository holds them
CIFAR10_UNET = {
    "_class_name": "UNet2DModel", "_diffusers_version": "0.1.1", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"], "downsample_padding": 0,
    "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}  # fmt: skip
CIFAR10_SCHEDULER = {
    "_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02, "beta_schedule": "linear",
    "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None,
    "variance_type": "fixed_large",
}  # fmt: skip
# the google/ddpm-*-256 layout (attention at level 4 of 6: 16x16 for 256x256 inputs), with 8x fewer channels
SHRUNK256_UNET = {
    **CIFAR10_UNET, "block_out_channels": [16, 16, 32, 32, 64, 64], "norm_num_groups": 8, "sample_size": 32,
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
}
# 8x8 grey, two levels: what the CLI tests run (with the digits data set)
TINY_UNET = {
    **CIFAR10_UNET, "block_out_channels": [16, 32], "norm_num_groups": 8, "sample_size": 8, "in_channels": 1,
    "out_channels": 1, "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}
TINY_SCHEDULER = {**CIFAR10_SCHEDULER, "num_train_timesteps": 20}


def diffusers_unet(config: dict, seed: int = 0):
    """diffusers' UNet2DModel from a config.json dict, random weights (all of them: biases and norms too)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    net = UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")}).eval()
    with torch.no_grad():
        for p in net.parameters():  # the default init leaves norms at 1 and 0: perturb them, so that every
            if p.dim() == 1:  # tensor differs from the others and a wrong mapping shows
                p.add_(0.05 * torch.randn_like(p))
    return net


def save_diffusers(folder: Path, unet_config: dict, scheduler_config: dict, layout: str = "flat", seed: int = 0):
    """Save a random UNet2DModel and a DDPMScheduler with diffusers' own save_pretrained; returns the net."""
    from diffusers import DDPMPipeline, DDPMScheduler

    net = diffusers_unet(unet_config, seed)
    scheduler = DDPMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    if layout == "flat":
        net.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    else:
        DDPMPipeline(unet=net, scheduler=scheduler).save_pretrained(folder)
    return net


def edit_json(path: Path, **changes) -> None:
    """Set (or, with the value ..., delete) keys of a JSON file."""
    obj = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    path.write_text(json.dumps(obj))
