"""ddpmkit: Denoising Diffusion Probabilistic Models (Ho, Jain & Abbeel 2020), equation by equation.

The public API, re-exported:
    Diffusion       the math: q_sample, q_posterior, p_mean_variance, training_loss, vlb_terms, sample
    UNet            the paper's network (UNet.from_preset("cifar10") is the 35.7M CIFAR-10 model)
    oracle          analytic optimal denoisers for tests and baselines (gaussian_mixture(..., classes=...))
    ClassifierFreeGuidance   a conditional net guided [CFG Eq. 6], presented as model(x_t, t) (guidance.py)
    load            a trained run -> Pipeline with .model, .diffusion, .sample(n)
    trajectory, interpolate, rate_distortion   the arrays behind the paper's Figs. 6, 8 and 5 (see figures/)
    reconstruct, inpaint, encode, decode   image editing: Fig. 7 and SDEdit, RePaint, ODE inversion (see edit/)
    RunConfig, load_config, Trainer, load_dataset
"""

__version__ = "0.1.0"

from . import guidance, oracle, samplers, schedules
from .config import RunConfig, load_config
from .data import load_dataset
from .diffusion import Diffusion
from .edit import decode, encode, inpaint, reconstruct
from .errors import UserError
from .figures import interpolate, rate_distortion, trajectory
from .guidance import NO_CLASS, ClassifierFreeGuidance
from .models import UNet
from .pipeline import Pipeline, load


def __getattr__(name):
    if name == "Trainer":  # imported on first use: it pulls in tqdm, matplotlib and torch.distributed
        from .train.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'ddpmkit' has no attribute {name!r}")


__all__ = ["Diffusion", "UNet", "oracle", "schedules", "guidance", "ClassifierFreeGuidance", "NO_CLASS", "load", "Pipeline", "RunConfig", "load_config",
           "load_dataset", "Trainer", "UserError", "trajectory", "interpolate", "rate_distortion", "reconstruct", "inpaint", "encode", "decode",
           "__version__"]
