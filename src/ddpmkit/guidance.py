"""Classifier-free guidance as a model wrapper: a conditional net model(x_t, t, y) presented as model(x_t, t).

References:
    [CFG]  Ho & Salimans 2022, arXiv 2207.12598: Eq. 6, eps~ = (1 + w) eps(x_t, c) - w eps(x_t, no class);
           Sec. 3.2, one network for both, trained with the label dropped to a "no class" token.
    [DDPM] Ho, Jain & Abbeel 2020: Eq. 11-12 (the eps-parameterization), [PD] Salimans & Ho 2022 (v).

    guided = ClassifierFreeGuidance(pipe.model, classes=[3] * 16, guidance=2.0)
    x = pipe.diffusion.sample(guided, (16, 1, 8, 8), sampler="ddim", steps=50)

`ClassifierFreeGuidance` is an nn.Module with the network's signature, so `Diffusion` (p_mean_variance, the bound,
training_loss), every sampler and every figure take it as they take an unconditional network, and need nothing
that knows about classes. The wrapper holds the labels of the batch, one per sample (or one for all).

Which quantity is guided. The wrapper mixes the network's output, whatever it parameterizes: eps, x0, v or mu~
(xprev). This is one and the same guidance for all four. At fixed x_t and t each output is an affine function of
eps with a coefficient that depends only on t (x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) [DDPM Eq. 15]; v = sqrt(ab) eps -
sqrt(1 - ab) x0 = (eps - sqrt(1 - ab) x_t) / sqrt(ab)), and the weights (1 + w) and -w sum to 1, so mixing x0 or v
gives exactly the x0 or v of the guided eps of Eq. 6. Clipping x0 to [-1, 1] happens after the mix, in Diffusion.
The same holds for "xprev": mu~_t = c_x0 x0 + c_xt x_t [DDPM Eq. 7] is affine in x0 with coefficients fixed by t,
so mixing mu~ is mixing x0. Learned variances (2C output channels: log sigma^2 for "learned", the interpolation v
for "learned_range" [IDDPM Eq. 15]): the first C channels (the mean's output) are guided, the last C are the
conditional model's: guidance moves the mean, not the variance.

w and diffusers: diffusers' pipelines write noise_uncond + s (noise_cond - noise_uncond) with `guidance_scale` s;
that is Eq. 6 with s = 1 + w. So w = 0 (s = 1) is the plain conditional model, w = 2 here is guidance_scale 3.

Both evaluations of a step, eps(x_t, c) and eps(x_t, no class), run as ONE forward pass on a batch of 2B
(the cost of guidance is a batch twice as large, not a second call); w = 0 skips the unconditional half.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError
from .models.unet import NO_CLASS

__all__ = ["ClassifierFreeGuidance", "LabelledModel", "NO_CLASS", "check_guidance", "drop_labels"]


def check_guidance(w: float, flag: str = "guidance") -> float:
    """w as a float, or ConfigError: the guidance weight must be a finite number >= 0."""
    try:
        value = float(w)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {w!r}: must be a number >= 0 (0 is the plain conditional model)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{flag} {w!r}: must be a finite number >= 0 (0 is the plain conditional model; "
                          "diffusers' guidance_scale s is w = s - 1)")
    return value


def _labels(classes, batch: int, device) -> torch.Tensor:
    """The labels as int64 (batch,): a (B,) sequence as is, one number for the whole batch."""
    y = torch.as_tensor(classes, dtype=torch.int64, device=device).reshape(-1)
    if y.numel() == 1:
        return y.expand(batch)
    if y.numel() != batch:
        raise ConfigError(f"classifier-free guidance: {y.numel()} labels for a batch of {batch}; give one label per "
                          "sample, or one for all")
    return y


class ClassifierFreeGuidance(nn.Module):
    """model(x_t, t) = (1 + w) model(x_t, t, c) - w model(x_t, t, NO_CLASS) [CFG Eq. 6], in one batched call.

    model: a conditional network (or oracle) called as model(x_t, t, y). classes: the labels, (B,) or one for all;
    NO_CLASS (-1) asks for the unconditional model. guidance: w >= 0. With learned variances (output channels
    twice the input's) the variance half is the conditional model's, unguided.
    """

    def __init__(self, model: nn.Module, classes, guidance: float = 0.0):
        super().__init__()
        self.model = model
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.int64).reshape(-1), persistent=False)
        self.guidance = check_guidance(guidance)

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The guided output for x_t (B, C, ...) at t (B,) or a scalar."""
        b = xt.shape[0]
        y = _labels(self.classes, b, xt.device)
        if self.guidance == 0:
            return self.model(xt, t, y)  # the conditional model itself, exactly
        t = torch.as_tensor(t, device=xt.device)
        t2 = torch.cat([t, t]) if t.dim() else t  # a scalar t is broadcast by the model
        null = torch.full_like(y, NO_CLASS)
        out = self.model(torch.cat([xt, xt]), t2, torch.cat([y, null]))  # (2B, C', ...): one forward pass
        cond, uncond = out[:b], out[b:]
        c = xt.shape[1]
        w = self.guidance
        guided = (1 + w) * cond[:, :c] - w * uncond[:, :c]  # Eq. 6 on the mean's output
        if cond.shape[1] == 2 * c:  # learned, learned_range: keep the conditional variance channels
            guided = torch.cat([guided, cond[:, c:]], dim=1)
        return guided


class LabelledModel(nn.Module):
    """model(x_t, t) = net(x_t, t, y) for fixed labels y (B,): a conditional net where Diffusion calls model(x, t).

    The trainer uses it to hand the (dropped) labels of a batch to Diffusion.training_loss; `net` may be the
    DistributedDataParallel or compiled wrapper, so gradients flow as usual.
    """

    def __init__(self, net: nn.Module, y: torch.Tensor):
        super().__init__()
        self.net, self.y = net, y

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(xt, t, self.y)


def drop_labels(y: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each label replaced by NO_CLASS with probability `rate` (train.label_dropout) [CFG Sec. 3.2, Algorithm 1]."""
    if rate <= 0:
        return y
    dropped = torch.rand(y.shape, generator=generator) < rate
    return torch.where(dropped.to(y.device), torch.full_like(y, NO_CLASS), y)
