"""From a config to a network and a Diffusion, and from a run directory back to a model that samples.

    pipe = ddpmkit.load("runs/digits")          # a run directory or one checkpoint folder
    images = pipe.sample(16, steps=100)          # uint8 (16, H, W, C)
    images = pipe.sample(16, classes=[3] * 16, guidance=2.0)   # a conditional run, guided [CFG Eq. 6]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .data import from_model_range
from .diffusion import Diffusion
from .errors import ConfigError
from .models import UNet
from .models.build import build_model  # noqa: F401  (re-exported: it lives below store/ now)
from .precision import Precision, decide, under
from .samplers import SAMPLERS, check_sampler, model_device
from .store import check_weights_fit, open_run, pick_device


def build_diffusion(config: RunConfig) -> Diffusion:
    c = config.diffusion
    kwargs = {"beta_start": c.beta_start, "beta_end": c.beta_end} if c.schedule == "linear" else {}
    return Diffusion.from_name(c.schedule, c.timesteps, parameterization=c.parameterization,
                               variance=c.variance, **kwargs)


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
    precision: Precision | None = None  # the network's arithmetic while sampling (ddpmkit.precision); None: fp32

    @property
    def network(self):
        """`.model` under this pipeline's precision: autocast around the network alone, its output fp32."""
        return under(self.model, self.precision)

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
               spacing: str | None = None, seed: int | None = 0, batch_size: int = 256, progress: bool = False,
               return_tensor: bool = False, classes=None, guidance: float | None = None) -> np.ndarray | torch.Tensor:
        """n samples as uint8 (n, H, W, C), or as a float tensor in [-1, 1] (n, C, H, W) with return_tensor.

        Sampler, steps, eta and spacing default to the run's [sample] config; a seed makes the draw reproducible.
        An eta given for a sampler other than ddim is refused.
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
        sampler, steps, eta, spacing = self.sampler_settings(sampler, steps, eta, spacing)
        device = model_device(self.model)
        generator = None if seed is None else torch.Generator(device).manual_seed(seed)
        chunks = []
        for start in range(0, n, batch_size):
            shape = (min(batch_size, n - start), self.channels, self.image_size, self.image_size)
            part = None if labels is None else self.guided(labels[start:start + shape[0]], guidance or 0)
            model = self.network if part is None else part.network
            chunks.append(self.diffusion.sample(model, shape, sampler=sampler, steps=steps, eta=eta,
                                                spacing=spacing, generator=generator, progress=progress).cpu())
        x = torch.cat(chunks) if chunks else torch.empty(0, self.channels, self.image_size, self.image_size)
        return x if return_tensor else from_model_range(x).numpy()

    def sampler_settings(self, sampler=None, steps=None, eta=None, spacing=None) -> tuple:
        """(sampler, steps, eta, spacing): what is given, else the run's [sample] config, else the sampler's
        default spacing; checked (one line)."""
        s = self.config.sample
        sampler = sampler or s.sampler
        spacing = spacing or (s.spacing if sampler == s.sampler else None)
        if eta is not None and sampler in SAMPLERS and not SAMPLERS[sampler].uses_eta:
            raise ConfigError(f"--eta is for the ddim sampler only; {sampler!r} has no eta: leave it out")
        steps = steps if steps is not None else s.steps
        eta = (s.eta if sampler == s.sampler else 0.0) if eta is None else eta
        spec = check_sampler(sampler, steps, self.diffusion.num_timesteps, eta=eta, spacing=spacing)
        return sampler, steps, eta, spacing or spec.default_spacing

    def nfe(self, sampler=None, steps=None) -> int:
        """Network evaluations per sample of `sampler` at `steps` (default: the run's [sample] config)."""
        sampler, steps, _, _ = self.sampler_settings(sampler, steps)
        return SAMPLERS[sampler].nfe(steps or self.diffusion.num_timesteps)


def load(path: str | Path, *, ema: bool = True, device: str | torch.device | None = None,
         precision: str | None = None) -> Pipeline:
    """A Pipeline from a run directory (its newest valid checkpoint) or from one checkpoint folder.

    precision: the network's while sampling, auto | fp32 | bf16 | fp16; None: the run's [sample] precision."""
    run = open_run(path)
    model = build_model(run.config, run.image_size, run.channels)
    name, weights = run.weights(ema)
    check_weights_fit(model, weights, f"{run.path}/{name}.safetensors")
    model.load_state_dict(weights)
    device = pick_device(str(device) if device is not None else "auto")
    model = model.to(device).eval()
    classes = run.checkpoint.config.get("classes") or {}
    return Pipeline(model, build_diffusion(run.config).to(device), run.config, run.image_size, run.channels,
                    run.step, run.path, classes.get("names"), classes.get("counts"),
                    decide(precision or run.config.sample.precision, device))
