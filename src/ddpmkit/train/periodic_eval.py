"""Evaluation during training: KID / FID / precision-recall of the EMA model every `train.eval_every` steps.

So that a user can see when quality stops improving, not only the loss (which keeps falling long after samples stop
getting better). At each step that is a multiple of train.eval_every, and at the last step, the main process draws
`train.eval_n` samples from the EMA weights with the run's [sample] sampler, always from the same seed (so two
evaluations differ by the weights alone), and measures `train.eval_metrics` against `train.eval_n` training images
(a fixed seeded subset; [DDPM] Table 1 also computes FID against the training set) in the feature space of
`train.eval_features`:

    "inception"         the FID Inception-v3, weights from $DDPMKIT_INCEPTION
    "inception:PATH"    the same with the weights file PATH
    PATH                a classifier from `ddpm train-classifier` (fast on CPU; only comparable within that space)

The real features are computed once per process. Each evaluation appends one line to metrics.jsonl,
{"step", "eval": {"kid", "kid_std", "fid", "precision", "recall"}, "eval_n", "eval_features", "eval_seconds"}, and
the same numbers to TensorBoard under eval/. Its time is not counted in the training images/s. A conditional run
samples its classes in the training data's proportions, unguided. SIGINT/SIGTERM stop the sampling at once; that
evaluation is then skipped.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from ..data import from_model_range
from ..errors import ConfigError

EVAL_SEED_OFFSET = 7919  # the samples' seed is train.seed + this: other draws of the run never share it


def load_features(spec: str):
    """The feature network train.eval_features names (module docstring); one line naming the key if it is missing."""
    import os
    from pathlib import Path

    from ..evaluate.classifier import load_classifier
    from ..evaluate.inception import load_inception

    spec = spec.strip()
    hint = ("set $DDPMKIT_INCEPTION, or train.eval_features = 'inception:PATH' or the path of a classifier from "
            "ddpm train-classifier")
    if spec == "inception" or spec.startswith("inception:"):
        path = spec.partition(":")[2] or os.environ.get("DDPMKIT_INCEPTION")
        if not path or not Path(path).expanduser().is_file():
            where = f"{path} is not a file" if path else "$DDPMKIT_INCEPTION is not set"
            raise ConfigError(f"train.eval_features = {spec!r} needs the Inception weights, but {where}: {hint}")
        return load_inception(path)
    if not Path(spec).expanduser().is_file():
        raise ConfigError(f"train.eval_features = {spec!r}: no such file; {hint}")
    return load_classifier(Path(spec).expanduser())


class PeriodicEval:
    """Measures the EMA model of a Trainer every train.eval_every steps; see the module docstring."""

    def __init__(self, trainer):
        c = trainer.config.train
        self.trainer, self.every, self.n, self.metrics = trainer, c.eval_every, c.eval_n, list(c.eval_metrics)
        self.features = load_features(c.eval_features) if trainer.dist.is_main else None  # fails before training
        self._real = None

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.trainer.config.train.steps

    def real_features(self) -> np.ndarray:
        if self._real is None:
            data, seed = self.trainer.data, self.trainer.config.train.seed
            pick = np.sort(np.random.default_rng(seed).permutation(len(data))[: self.n])
            self._real = self.features(np.asarray(data.images[pick]))["features"]
        return self._real

    @torch.no_grad()
    def samples(self) -> np.ndarray | None:
        """eval_n uint8 samples of the EMA model from a fixed seed; None if a signal stopped the sampling."""
        from ..guidance import ClassifierFreeGuidance
        from ..samplers import SamplingStopped

        t, s = self.trainer, self.trainer.config.sample
        gen = torch.Generator().manual_seed(t.config.train.seed + EVAL_SEED_OFFSET)
        labels = None
        if t.classes is not None:
            from ..classes import labels_for

            labels = torch.from_numpy(labels_for(self.n, None, t.classes.names, t.classes.counts,
                                                 t.config.train.seed + EVAL_SEED_OFFSET))
        batch, chunks = min(self.n, t.config.train.batch_size), []
        for start in range(0, self.n, batch):
            shape = (min(batch, self.n - start), t.data.channels, t.data.image_size, t.data.image_size)
            model = t.ema.model if labels is None else ClassifierFreeGuidance(t.ema.model,
                                                                              labels[start:start + shape[0]])
            try:
                x = t.diffusion.sample(model, shape, sampler=s.sampler, steps=s.steps, eta=s.eta, spacing=s.spacing,
                                       generator=gen, progress=False, stop=lambda: t.stop_signal is not None)
            except SamplingStopped:
                return None
            chunks.append(from_model_range(x.cpu()).numpy())
        return np.concatenate(chunks)

    def measure(self, images: np.ndarray) -> dict:
        """{kid, kid_std, fid, precision, recall} (those asked for) of `images` against the real subset."""
        from ..evaluate.fid import feature_stats, frechet_distance
        from ..evaluate.kid import SUBSET_SIZE, kid
        from ..evaluate.precision_recall import precision_recall

        real, fake = self.real_features(), self.features(images)["features"]
        # subsets of half the samples, so kid_std shows the spread (subsets of all n would all be the same set);
        # MMD^2_u is unbiased at any subset size, so the mean is comparable with subsets of 1000
        size = max(2, min(SUBSET_SIZE, self.n // 2))
        runners = {"kid": lambda: kid(real, fake, subset_size=size),
                   "fid": lambda: {"fid": frechet_distance(*feature_stats(fake), *feature_stats(real))},
                   "pr": lambda: precision_recall(real, fake)}
        keep = {"kid": ("kid", "kid_std"), "fid": ("fid",), "pr": ("precision", "recall")}
        out = {}
        for name in self.metrics:
            result = runners[name]()
            out.update({k: float(result[k]) for k in keep[name]})
        return out

    def __call__(self, step: int, logger) -> dict | None:
        """Evaluate at `step` if due: one metrics.jsonl line and TensorBoard scalars; returns the row (main only)."""
        from . import distributed

        if not self.due(step):
            return None
        row = None
        if self.trainer.dist.is_main:
            start = time.perf_counter()
            images = self.samples()
            if images is not None:
                row = {"step": step, "eval": self.measure(images), "eval_n": self.n,
                       "eval_features": self.features.name, "eval_seconds": time.perf_counter() - start,
                       "time": time.time()}
                _log(row, logger)
                self.trainer.say(f"eval at step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in row["eval"].items()))
        distributed.barrier(self.trainer.dist)
        return row


def _log(row: dict, logger) -> None:
    if logger.file is not None:
        logger.file.write(json.dumps(row) + "\n")
        logger.file.flush()
    if logger.tb is not None:
        for key, value in row["eval"].items():
            logger.tb.add_scalar(f"eval/{key}", value, row["step"])


def periodic_eval(trainer) -> PeriodicEval | None:
    """The trainer's hook: None when train.eval_every = 0 (the default), else a PeriodicEval, checked now."""
    return PeriodicEval(trainer) if trainer.config.train.eval_every else None
