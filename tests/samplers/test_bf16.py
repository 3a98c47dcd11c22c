"""Every sampler with the network under bf16 autocast: its arithmetic stays fp32, the answer stays right and finite.

1. Exact answer: the Gaussian-mixture oracle of test_ancestral.py with its output rounded to bf16 (what a network
   under autocast hands the sampler, ~3 significant digits) and returned through precision.Autocast: every
   sampler still reproduces the mixture's masses at 20 steps, and the spread of its fp32 run within 5%.
2. A U-Net under bf16 (Pipeline.precision): finite, its convolutions ran in bf16, and close to the fp32 samples.
"""

import pytest
import torch
from test_ancestral import MEANS, N, STD, WEIGHTS, mixture_stats

from ddpmkit import Diffusion, oracle
from ddpmkit.models import UNet
from ddpmkit.pipeline import Pipeline
from ddpmkit.precision import Autocast, decide
from ddpmkit.samplers import SAMPLERS

BF16 = decide("bf16", "cpu")


class Bf16Output(torch.nn.Module):
    """The oracle's output rounded to bf16, as a network under autocast returns it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, xt, t):
        return self.model(xt, t).bfloat16()


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_with_a_bf16_network_output_reproduces_the_mixture(sampler):
    d = Diffusion.from_name("linear", 1000)
    exact = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS)
    runs = [d.sample(model, (N, 2), sampler=sampler, steps=20, generator=torch.Generator().manual_seed(0))
            for model in (exact, Autocast(Bf16Output(exact), BF16))]
    assert runs[1].dtype == torch.float32 and torch.isfinite(runs[1]).all()
    (_, spread32), (mass, spread) = mixture_stats(runs[0]), mixture_stats(runs[1])
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03, (mass, spread)
    for s, s32 in zip(spread, spread32):  # 20 steps: 0.09 .. 0.11, ancestral's 0.20 (its own discretisation)
        assert abs(s - s32) <= 0.05 * s32, (spread, spread32)


def tiny_pipeline(precision) -> Pipeline:
    from ddpmkit.config import RunConfig

    torch.manual_seed(0)
    net = UNet.from_preset("tiny").eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)  # zero-initialised: the net would output 0 exactly
    config = RunConfig().with_values({"model.preset": "tiny", "diffusion.timesteps": 50})
    d = Diffusion.from_name("linear", 50)
    return Pipeline(net, d, config, 8, 1, 0, None, precision=precision)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_a_unet_in_bf16_finite_and_near_fp32(sampler):
    seen = []
    fp32, bf16 = tiny_pipeline(None), tiny_pipeline(BF16)
    hook = bf16.model.conv_in.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    a = fp32.sample(4, sampler=sampler, steps=10, seed=1, return_tensor=True)
    b = bf16.sample(4, sampler=sampler, steps=10, seed=1, return_tensor=True)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).abs().max() < 0.03  # on [-1, 1]; measured 0.004 (ddim) .. 0.0075 (dpm++2m-sde) for this net
