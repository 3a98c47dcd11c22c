"""The learning rate at each step: linear warm-up, then constant (the paper's) or a decay to zero at the last step.

References:
    [DDPM]   Ho, Jain & Abbeel 2020, arXiv 2006.11239, App. B: Adam, linear warm-up over 5000 steps, then constant.
    [SGDR]   Loshchilov & Hutter 2017, arXiv 1608.03983, Eq. 5: the cosine decay lr * (1 + cos(pi s / S)) / 2.

`train.lr_decay` picks the part after the warm-up: "none" (constant, the paper's and the default), "cosine" or
"linear", both reaching 0 at step `train.steps`. A planned run (`ddpm train --minutes`) sets the warm-up as a
fraction of its steps and a decay to its end, so the last steps average down the noise of the updates.
"""

from __future__ import annotations

import math


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # [SGDR Eq. 5] with eta_min = 0


def _linear(progress: float) -> float:
    return 1.0 - progress


DECAYS = {"none": _constant, "cosine": _cosine, "linear": _linear}


def lr_at(step: int, train) -> float:
    """The learning rate of (0-based) `step` for a TrainConfig: lr * warm-up(step) * decay(progress after warm-up)."""
    lr, warmup, total = train.lr, train.warmup, train.steps
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return lr * DECAYS[train.lr_decay](progress)


def lr_integral(steps: int, train) -> float:
    """Sum of lr_at over the first `steps` steps divided by lr: the run's length in full-LR steps."""
    return sum(lr_at(k, train) for k in range(steps)) / train.lr
