"""`ddpm train` without --config: the preset made for the data set where one exists, else a net sized to the images.

    digits -> digits preset     fashion-mnist -> fashion_mnist preset     a CIFAR folder -> cifar10 (the paper's)
    any other data: the digits preset's training settings with a U-Net sized to the images (see `sized_model`).

And the lines every run prints: at its start which config and which network (its parameters) it uses, and after
the first steps how long the rest will take at the measured rate.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import RunConfig, load_config
from ..data import ImageDataset, load_dataset

DATA_PRESETS = {"digits": "digits", "fashion-mnist": "fashion_mnist", "fashion_mnist": "fashion_mnist"}


def sized_model(image_size: int) -> dict:
    """model.* for images of this size: levels halve the size while it stays even and >= 4 (at most 4 levels);
    attention at the largest level resolution below the input's and <= 16 (the paper's 16 of 32; 14 of 28 and 4 of
    8 as the mnist28 and digits presets); ch 32 up to 16 pixels, else 64."""
    levels = 1
    while levels < 4 and image_size % 2**levels == 0 and image_size // 2**levels >= 4:
        levels += 1
    resolutions = [image_size // 2**i for i in range(levels)]
    attn = max((r for r in resolutions[1:] if r <= 16), default=resolutions[-1])
    return {"model.ch": 32 if image_size <= 16 else 64, "model.ch_mult": [1] + [2] * (levels - 1),
            "model.attn_resolutions": [attn]}


def choose_config(spec: str | None, *, image_size: int | None, channels: int | None,
                  skip_bad: bool = False, cache=None) -> tuple[RunConfig, str, ImageDataset | None]:
    """(config, what was chosen and why, the data set if it had to be read to size the net)."""
    spec = spec or "digits"
    name = DATA_PRESETS.get(spec.strip().lower())
    if name is None:
        from ..data import cifar

        path = Path(spec).expanduser()
        if path.is_dir() and cifar.cifar_folder(path) is not None and image_size in (None, 32):
            name = "cifar10"
    if name is not None:
        return load_config(name), f"preset {name} (made for --data {spec}; pass --config to choose another)", None
    data = load_dataset(spec, image_size=image_size, channels=channels, skip_bad=skip_bad, cache=cache)
    size = data.image_size
    config = load_config("digits").with_values(sized_model(size), source="sized to the data")
    m = config.model
    why = (f"preset digits with a U-Net sized to the {size}x{size} images (ch={m.ch}, ch_mult={m.ch_mult}, "
           f"attention at {m.attn_resolutions}); pass --config to choose")
    return config, why, data


def describe_network(model, config: RunConfig, data: ImageDataset) -> str:
    """'network: UNet preset P[ with its options changed: ...] at HxWxC, N parameters[, conditional on K classes]':
    the options that differ from the preset (the budget plan's or --set's), so the line names the network that runs."""
    n = sum(p.numel() for p in model.parameters())
    k = config.model.num_classes
    cls = f", conditional on {k} classes (label dropout {config.train.label_dropout:g})" if k else ""
    changed = {name: value for name, value in config.model.overrides().items() if name != "num_classes"}
    shape = (" with " + ", ".join(f"{name}={list(v) if isinstance(v, tuple) else v}" for name, v in changed.items())
             if changed else "")
    return (f"network: UNet preset {config.model.preset}{shape} at {data.image_size}x{data.image_size}x"
            f"{data.channels}, {n:,} parameters{cls}")


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


class RunTimeEstimate:
    """After the first few steps, one line: the measured time per step and what the remaining steps will take."""

    STEPS = 5  # measured after the first step (warm-up, allocation) of this process

    def __init__(self, start: int, total: int, say):
        self.start, self.total, self.say, self.t0, self.paused = start, total, say, None, 0.0

    def after_step(self, step: int, paused: float) -> None:
        if step == self.start + 1:
            self.t0, self.paused = time.perf_counter(), 0.0
            return
        self.paused += paused  # the time this step spent on grids and checkpoints
        if self.t0 is not None and step == self.start + 1 + self.STEPS:
            rate = (time.perf_counter() - self.t0 - self.paused) / self.STEPS
            left = self.total - step
            hint = ("; to stop sooner with the best model that time allows, plan the run instead: ddpm train "
                    "--minutes M (or --hours H)") if rate * left > 3600 else ""
            self.say(f"{rate:.3f} s/step over steps {self.start + 2}-{step}: about {format_duration(rate * left)} "
                     f"for the remaining {left} steps (sample grids and checkpoints come on top){hint}")
            self.t0 = None
