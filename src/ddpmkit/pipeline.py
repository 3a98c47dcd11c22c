"""From a config to a network and a Diffusion, and from a run directory back to a model that samples.

    pipe = ddpmkit.load("runs/digits")          # a run directory or one checkpoint folder
    images = pipe.sample(16, steps=100)          # uint8 (16, H, W, C)
    images = pipe.sample(16, classes=[3] * 16, guidance=2.0)   # a conditional run, guided [CFG Eq. 6]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .data import from_model_range
from .diffusion import Diffusion
from .errors import CheckpointError
from .models import UNet
from .samplers import model_device


def build_diffusion(config: RunConfig) -> Diffusion:
    c = config.diffusion
    kwargs = {"beta_start": c.beta_start, "beta_end": c.beta_end} if c.schedule == "linear" else {}
    return Diffusion.from_name(c.schedule, c.timesteps, parameterization=c.parameterization,
                               variance=c.variance, **kwargs)


def build_model(config: RunConfig, image_size: int, channels: int) -> UNet:
    """The configured U-Net for (channels, image_size, image_size) data; 2C outputs for learned variances."""
    out_channels = 2 * channels if config.diffusion.variance == "learned_range" else channels
    options = config.model.overrides()
    if "attn_resolutions" in options:
        # resolutions the user names refer to this data's size; a preset's own refer to the preset's size, so
        # on other data attention stays at the same levels (the net is convolutional)
        options["image_size"] = image_size
    return UNet.from_preset(config.model.preset, in_channels=channels, out_channels=out_channels, **options)


@dataclass
class Pipeline:
    """A trained model with its diffusion: `.model` (EMA weights unless asked otherwise), `.diffusion`, `.config`."""

    model: UNet
    diffusion: Diffusion
    config: RunConfig
    image_size: int
    channels: int
    step: int
    checkpoint: Path
    classes: list[str] | None = None  # a conditional run's class names (label order); None: unconditional
    class_counts: list[int] | None = None  # images per class in its training data

    def labels(self, n: int, classes=None, seed: int | None = 0) -> np.ndarray:
        """The int64 (n,) labels that sample(n, classes=classes, seed=seed) uses: one class (index or name) or a
        list cycled over the samples; None draws them in the training data's proportions (seeded)."""
        from .classes import labels_for, unconditional_error

        if self.classes is None:
            raise unconditional_error("classes", self.checkpoint)
        return labels_for(n, classes, self.classes, self.class_counts, seed)

    def guided(self, classes, guidance: float = 0.0) -> "Pipeline":
        """This pipeline with `.model` = ClassifierFreeGuidance(model, labels, w) [CFG Eq. 6]: for the Diffusion
        methods and figures (trajectory, interpolate, the bound) that call pipe.model(x_t, t). `classes` holds the
        labels of a batch (B,) or one label for all (index, name, or NO_CLASS = -1)."""
        from .classes import class_index, unconditional_error
        from .guidance import ClassifierFreeGuidance

        if self.classes is None:
            raise unconditional_error("--class/--guidance", self.checkpoint)
        if isinstance(classes, (torch.Tensor, np.ndarray)):
            classes = classes.reshape(-1).tolist()
        seq = [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)
        labels = [class_index(c, self.classes) for c in seq]
        return replace(self, model=ClassifierFreeGuidance(self.model, labels, guidance))

    @torch.no_grad()
    def sample(self, n: int, *, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
               seed: int | None = 0, batch_size: int = 256, progress: bool = False,
               return_tensor: bool = False, classes=None, guidance: float | None = None) -> np.ndarray | torch.Tensor:
        """n samples as uint8 (n, H, W, C), or as a float tensor in [-1, 1] (n, C, H, W) with return_tensor.

        Sampler, steps and eta default to the run's [sample] config; a seed makes the draw reproducible.
        A conditional run: `classes` (one class, or a list cycled over the n samples; indices or names; None draws
        them in the training data's proportions, see `labels`) and `guidance` w >= 0 (0: the conditional model;
        diffusers' guidance_scale is 1 + w). An unconditional run refuses both.
        """
        labels = None
        if self.classes is not None:
            labels = torch.from_numpy(self.labels(n, classes, seed))
        elif classes is not None or guidance is not None:
            from .classes import unconditional_error

            raise unconditional_error("classes/guidance", self.checkpoint)
        s = self.config.sample
        sampler = sampler or s.sampler
        steps = steps if steps is not None else s.steps
        eta = s.eta if eta is None else eta
        device = model_device(self.model)
        generator = None if seed is None else torch.Generator(device).manual_seed(seed)
        chunks = []
        for start in range(0, n, batch_size):
            shape = (min(batch_size, n - start), self.channels, self.image_size, self.image_size)
            model = self.model if labels is None else self.guided(labels[start:start + shape[0]], guidance or 0).model
            chunks.append(self.diffusion.sample(model, shape, sampler=sampler, steps=steps, eta=eta,
                                                generator=generator, progress=progress).cpu())
        x = torch.cat(chunks) if chunks else torch.empty(0, self.channels, self.image_size, self.image_size)
        return x if return_tensor else from_model_range(x).numpy()


def load(path: str | Path, *, ema: bool = True, device: str | torch.device | None = None) -> Pipeline:
    """A Pipeline from a run directory (its newest valid checkpoint) or from one checkpoint folder."""
    from .train.checkpoint import check_weights_fit, latest_valid_checkpoint, load_checkpoint

    path = Path(path)
    if (path / "manifest.json").exists():
        ckpt = load_checkpoint(path)
    elif path.is_dir():
        ckpt, warnings = latest_valid_checkpoint(path / "checkpoints")
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if ckpt is None:
            raise CheckpointError(f"{path}: no valid checkpoint in {path / 'checkpoints'}; train first with ddpm train")
    else:
        raise CheckpointError(f"{path}: no such run directory or checkpoint folder")
    if ckpt.config is None or "run" not in ckpt.config:
        raise CheckpointError(f"{ckpt.path}: the checkpoint has no config.json with the run's config")
    config = RunConfig.from_dict(ckpt.config["run"], source=f"{ckpt.path}/config.json")
    image_size, channels = ckpt.config["image_size"], ckpt.config["channels"]
    model = build_model(config, image_size, channels)
    name = "ema" if ema and "ema" in ckpt.weights else "model"
    check_weights_fit(model, ckpt.weights[name], f"{ckpt.path}/{name}.safetensors")
    model.load_state_dict(ckpt.weights[name])
    from .train.distributed import pick_device

    device = pick_device(str(device) if device is not None else "auto")
    model = model.to(device).eval()
    classes = ckpt.config.get("classes") or {}
    return Pipeline(model, build_diffusion(config).to(device), config, image_size, channels, ckpt.step, ckpt.path,
                    classes.get("names"), classes.get("counts"))

