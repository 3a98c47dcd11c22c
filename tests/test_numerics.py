"""Numbers that must never go bad: every schedule, T from 1 to 4000, every sampler and variance type, extreme outputs.

The models here are fakes that answer every call with extreme constants (one per batch row), so one sampling run
covers all the extremes; a UNet would add nothing but seconds.
"""

import numpy as np
import pytest
import torch

from ddpmkit import schedules
from ddpmkit.diffusion import Diffusion
from ddpmkit.errors import ConfigError

EXTREMES = [0.0, 1.0, -1e4, 1e4, -1e30, 1e30]  # one per batch row: the model's whole output for that row
VARIANCES = ["fixed_small", "fixed_large", "learned", "learned_range"]
LEARNED = ("learned", "learned_range")


def given(T: int) -> np.ndarray:
    """A user-given schedule: random betas from tiny to large (alpha_bar_T about 1e-9), the last one close to 1."""
    beta = np.random.default_rng(T).uniform(1e-8, min(0.3, 40 / T), T)
    beta[-1] = 0.999
    return beta


SCHEDULES = [(name, T) for name in ("linear", "cosine", "given") for T in (1, 2, 3, 10, 1000, 4000)]


def beta_of(name: str, T: int) -> np.ndarray:
    return given(T) if name == "given" else schedules.get(name, T)


class ExtremeModel:
    """output[i] = EXTREMES[i] everywhere (mean and variance channels); records the timesteps' dtypes."""

    def __init__(self, learned: bool):
        self.learned, self.t_dtypes = learned, set()

    def __call__(self, xt, t):
        self.t_dtypes.add(t.dtype)
        value = torch.tensor(EXTREMES, dtype=xt.dtype).reshape(-1, 1, 1)
        out = value.expand(xt.shape[0], xt.shape[1], xt.shape[2]).clone()  # (B, C, D)
        return torch.cat([out, out], dim=1) if self.learned else out


@pytest.mark.parametrize("name, T", SCHEDULES)
def test_coefficients_are_finite_and_alpha_bar_strictly_decreases(name, T):
    for variance in VARIANCES:
        d = Diffusion(beta_of(name, T), variance=variance)
        for table in ("beta", "alpha", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar",
                      "sqrt_recip_alpha_bar", "sqrt_recipm1_alpha_bar", "posterior_variance",
                      "posterior_log_variance_clipped", "posterior_mean_coef_x0", "posterior_mean_coef_xt",
                      "log_beta"):
            values = getattr(d, table)
            assert torch.isfinite(values).all() and torch.isfinite(values.float()).all(), (table, variance)
        assert (torch.diff(torch.cat([torch.ones(1, dtype=torch.float64), d.alpha_bar])) < 0).all()
        assert (d.alpha_bar > 0).all() and (d.alpha_bar.float() > 0).all()
        # the log-variance of p(x_0 | x_1), at index t = 0, for the extreme variance outputs too
        x = torch.zeros(len(EXTREMES), 1, 2)
        t0 = torch.zeros(len(EXTREMES), dtype=torch.long)
        p = d.p_mean_variance(ExtremeModel(variance in LEARNED), x, t0)
        assert torch.isfinite(p["log_variance"]).all() and torch.isfinite(p["mean"]).all(), variance


# (sampler, steps, eta): the full chain of Algorithm 2, the respaced chain (3 steps and a single jump), DDIM
RUNS = [("ancestral", None, 0.0), ("ancestral", 3, 0.0), ("ancestral", 1, 0.0), ("ddim", 3, 0.0), ("ddim", 2, 1.0)]


@pytest.mark.parametrize("name, T", SCHEDULES)
@pytest.mark.parametrize("variance", VARIANCES)
def test_every_sampler_gives_finite_samples_from_extreme_outputs(name, T, variance):
    d = Diffusion(beta_of(name, T), variance=variance)
    for sampler, steps, eta in RUNS:
        if steps is None and T > 10:
            continue  # long full chains: once, below; the respaced runs visit t = T-1, the middle and 0
        model = ExtremeModel(variance in LEARNED)
        steps = None if steps is None else min(steps, T)
        x = d.sample(model, (len(EXTREMES), 1, 2), sampler=sampler, steps=steps, eta=eta,
                     generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(x).all(), (sampler, steps, eta, x)
        assert model.t_dtypes == {torch.int64}


@pytest.mark.parametrize("variance", LEARNED)
def test_the_full_1000_step_chain_of_the_harshest_schedule_stays_finite(variance):
    d = Diffusion(beta_of("cosine", 1000), variance=variance)  # beta up to 0.999, sigma learned
    x = d.sample(ExtremeModel(True), (len(EXTREMES), 1, 2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("parameterization", ["x0", "v", "xprev"])
def test_other_parameterizations_stay_finite_too(parameterization):
    for name, T in [("linear", 1), ("cosine", 1000), ("given", 10)]:
        for variance in VARIANCES:
            d = Diffusion(beta_of(name, T), parameterization=parameterization, variance=variance)
            for sampler, steps, eta in RUNS[1:]:
                x = d.sample(ExtremeModel(variance in LEARNED), (len(EXTREMES), 1, 2), sampler=sampler,
                             steps=min(steps, T), eta=eta, generator=torch.Generator().manual_seed(0))
                assert torch.isfinite(x).all(), (name, T, variance, sampler)


@pytest.mark.parametrize("beta, words", [
    ([1e-20, 0.1], "beta[0]"),  # 1 - 1e-20 == 1 in float64: alpha_bar would not decrease
    ([0.5] * 200, "alpha_bar"),  # alpha_bar_T = 6e-61: 1 / sqrt(alpha_bar) overflows float32
])
def test_schedules_whose_coefficients_cannot_be_finite_are_refused(beta, words):
    with pytest.raises(ConfigError) as info:
        schedules.validate(beta)
    assert words in str(info.value) and "\n" not in str(info.value)


def solver_runs(T: int):
    """(sampler, spacing, steps) for every sampler and spacing: the fewest steps its order allows, 3, and all T
    (all T only for short schedules; long ones get 50 instead, which still visits t = T-1, the middle and 0)."""
    from ddpmkit.samplers import SAMPLERS, SPACINGS

    for sampler, spec in SAMPLERS.items():
        for spacing in SPACINGS:
            for k in sorted({spec.order, 3, T if T <= 10 else 50}):
                if spec.order <= k <= T:
                    yield sampler, spacing, k


@pytest.mark.parametrize("name, T", SCHEDULES)
def test_every_solver_and_spacing_gives_finite_samples_from_extreme_outputs(name, T):
    for variance in VARIANCES:
        d = Diffusion(beta_of(name, T), variance=variance)
        for sampler, spacing, k in solver_runs(T):
            model = ExtremeModel(variance in LEARNED)
            x = d.sample(model, (len(EXTREMES), 1, 2), sampler=sampler, steps=k, spacing=spacing,
                         generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(x).all(), (variance, sampler, spacing, k, x)
            assert model.t_dtypes == {torch.int64}


@pytest.mark.parametrize("parameterization", ["x0", "v", "xprev"])
def test_every_solver_stays_finite_with_the_other_parameterizations(parameterization):
    for name, T in [("linear", 2), ("cosine", 4000), ("given", 10)]:
        for variance in VARIANCES:
            d = Diffusion(beta_of(name, T), parameterization=parameterization, variance=variance)
            for sampler, spacing, k in solver_runs(T):
                x = d.sample(ExtremeModel(variance in LEARNED), (len(EXTREMES), 1, 2), sampler=sampler,
                             steps=k, spacing=spacing, generator=torch.Generator().manual_seed(0))
                assert torch.isfinite(x).all(), (name, T, variance, sampler, spacing, k)
