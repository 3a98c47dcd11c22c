"""Class-conditional training: the classes of a run, their checks, and the (dropped) labels of each step.

References: [CFG] Ho & Salimans 2022, arXiv 2207.12598, Sec. 3.2 and Algorithm 1: train one network on labels that
are replaced by a "no class" token with probability p_uncond (here train.label_dropout, default 0.1 [Sec. 4]), so
it is the conditional and the unconditional model at once.

The labels of a step are drawn, like everything else in a step, from (config seed, step): the batch's images give
the labels, and a generator seeded by (seed, step, 4) decides which are dropped, for the global batch; each rank
takes its slice. So a resumed run and a torchrun run see exactly the labels of a single uninterrupted process.
The run directory gets classes.json: the class names (index order) and their counts in the training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..data import ImageDataset, class_names_of
from ..errors import ConfigError, DataError
from ..fileio import atomic_path
from ..guidance import LabelledModel, drop_labels

LABEL_SOURCES = ("digits, fashion-mnist, an IDX folder with its labels file beside the images, CIFAR-10/100, an .npz "
                 "with 'labels'/'y'/'y_train'/'y_test' (or arr_1 beside arr_0), or a folder with one subfolder per "
                 "class")


@dataclass
class Classes:
    """The classes of a conditional run: names in label order and the count of each in the training data."""

    names: list[str]
    counts: list[int]

    def to_dict(self) -> dict:
        return {"names": self.names, "counts": self.counts}


def prepare(config: RunConfig, data: ImageDataset, conditional: bool) -> tuple[RunConfig, Classes | None]:
    """The config with model.num_classes set from the labels (with --conditional), and the run's classes.

    A user's mistake is a one-line error: no labels, labels out of range, a class without images.
    """
    if not conditional and config.model.num_classes is None:
        return config, None
    flag = "--conditional" if conditional else f"model.num_classes = {config.model.num_classes}"
    if data.labels is None:
        raise DataError(f"{flag}: the data {data.name} has no labels; labels come from {LABEL_SOURCES}")
    names = class_names_of(data)
    k = config.model.num_classes or len(names)
    if config.model.num_classes is None:
        config = config.replace("model.num_classes", k)
    bad = data.labels[(data.labels < 0) | (data.labels >= k)]
    if len(bad):
        raise DataError(f"{flag}: the data {data.name} has label {int(bad[0])}, outside 0 .. {k - 1}: fix the "
                        f"labels, or set model.num_classes to the number of classes")
    names = (names + [str(i) for i in range(len(names), k)])[:k]
    counts = np.bincount(data.labels, minlength=k).tolist()
    empty = [names[i] for i, c in enumerate(counts) if c == 0]
    if empty:
        raise DataError(f"{flag}: class {empty[0]!r} of {data.name} has no images (an empty class subfolder?): add "
                        f"images to it or remove it")
    return config, Classes(names, counts)


def check_resume(saved: dict, classes: Classes | None, where: Path) -> None:
    """Refuse to resume a run on another set of classes (names in label order)."""
    old = (saved.get("classes") or {}).get("names")
    new = classes.names if classes is not None else None
    if old != new:
        show = lambda names: "none (unconditional)" if names is None else ", ".join(names[:12])  # noqa: E731
        raise ConfigError(f"--resume: {where} was trained on classes [{show(old)}], this data has [{show(new)}]: "
                          "resume with the run's data set, or train a new run with another --out")


def write_classes(run_dir: Path, classes: Classes) -> None:
    with atomic_path(run_dir / "classes.json") as tmp:
        tmp.write_text(json.dumps(classes.to_dict(), indent=1) + "\n")


def step_labels(labels: torch.Tensor, indices: torch.Tensor, rate: float, seed: int, part: slice,
                device) -> torch.Tensor:
    """This rank's labels (b,) of the step's global batch, each dropped to NO_CLASS with probability `rate`."""
    g = torch.Generator().manual_seed(seed)
    y = drop_labels(labels[indices], rate, g)  # (B,): drawn for the global batch, then sliced
    return y[part].to(device)


def labelled(net, y: torch.Tensor) -> LabelledModel:
    """The model Diffusion.training_loss calls, model(x_t, t) = net(x_t, t, y)."""
    return LabelledModel(net, y)
