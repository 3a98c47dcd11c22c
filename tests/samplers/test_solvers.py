"""The ODE solvers and the SDE solver with the Gaussian-mixture oracle, and their contracts.

The mixture is test_ancestral.py's (three components, std 0.1, weights 0.5 / 0.3 / 0.2, N = 4000, so three
standard errors of a mass are under 3 points). Each sampler runs with its default spacing (logsnr for dpm++*,
karras for heun).
"""

import pytest
import torch
from test_ancestral import MEANS, N, STD, WEIGHTS, mixture_stats

from ddpmkit import Diffusion, oracle
from ddpmkit.errors import ConfigError
from ddpmkit.samplers import DETERMINISTIC, SAMPLERS

NEW = ["dpm++2m", "dpm++3m", "dpm++2m-sde", "heun"]


def mixture_model(parameterization="eps", variance="fixed_large", T=1000):
    d = Diffusion.from_name("linear", T, parameterization=parameterization, variance=variance)
    return d, oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS)


@pytest.mark.parametrize("sampler", NEW)
def test_every_new_sampler_reproduces_the_masses_at_20_steps(sampler):
    d, model = mixture_model()
    mass, spread = mixture_stats(d.sample(model, (N, 2), sampler=sampler, steps=20,
                                          generator=torch.Generator().manual_seed(0)))
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03, (mass, spread)
    for s in spread:  # measured 0.101 .. 0.110 for all four
        assert 0.09 <= s <= 0.12, spread


def test_deterministic_solvers_converge_to_the_same_endpoints():
    # From one x_T the ODE has one answer; the solvers differ by their discretisation errors, which shrink with K.
    # Measured largest gap to dpm++3m over 256 points at K = 10 / 50 / 250 / 1000 (= all T nodes):
    #   ddim 0.62 / 8.2e-2 / 1.7e-2 / 4.1e-3, dpm++2m 0.74 / 7.6e-3 / 1.0e-3 / 8.7e-4, heun 0.24 / 4.7e-3 / 8.5e-4 /
    #   2.9e-4. Points near the boundary between two components move most; ddim, first order, converges slowest.
    d, model = mixture_model()
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gaps = {s: [] for s in DETERMINISTIC if s != "dpm++3m"}
    for k in (10, 50, 250, 1000):
        ref = d.sample(model, x_T.shape, sampler="dpm++3m", steps=k, x_T=x_T)
        for s in gaps:
            gaps[s].append(float((d.sample(model, x_T.shape, sampler=s, steps=k, x_T=x_T) - ref).abs().max()))
    for s, g in gaps.items():
        assert g[0] > g[1] > g[2] > g[3], (s, g)
        assert g[3] < 5e-3, (s, g)


def test_the_sde_solver_is_seeded_and_stochastic():
    d, model = mixture_model()
    draw = lambda seed: d.sample(model, (64, 2), sampler="dpm++2m-sde", steps=20,  # noqa: E731
                                 generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(0), draw(0))
    assert (draw(0) - draw(1)).abs().max() > 0.1


# The spreads of dpm++2m-sde (logsnr spacing), measured with seeds 0-3, N = 4000, true std 0.1:
#   20 steps: 0.106 - 0.110 (8% over-dispersed: the noise of a long step is exact only for a constant x0 estimate);
#   50 steps: 0.099 - 0.104. The bands add about two standard errors of a spread estimate (0.006).
@pytest.mark.parametrize("steps, low, high", [(20, 0.100, 0.116), (50, 0.093, 0.110)])
def test_the_sde_solver_spread(steps, low, high):
    d, model = mixture_model()
    mass, spread = mixture_stats(d.sample(model, (N, 2), sampler="dpm++2m-sde", steps=steps,
                                          generator=torch.Generator().manual_seed(0)))
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03
    for s in spread:
        assert low <= s <= high, spread


def test_first_order_steps_are_ddim_and_algorithm_2():
    # With two nodes the multistep solvers have no history: dpm++2m's step is DDIM's [DPM-Solver++ Sec. 4.1] and
    # dpm++2m-sde's is Algorithm 2's with sigma^2 = beta~ (the same noise draw), on the same nodes.
    d, model = mixture_model(variance="fixed_small")
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for a, b in (("dpm++2m", "ddim"), ("dpm++3m", "ddim"), ("dpm++2m-sde", "ancestral")):
        if SAMPLERS[a].order > 2:
            continue
        xa = d.sample(model, x_T.shape, sampler=a, steps=2, x_T=x_T, generator=torch.Generator().manual_seed(0))
        xb = d.sample(model, x_T.shape, sampler=b, steps=2, spacing="logsnr", x_T=x_T,
                      generator=torch.Generator().manual_seed(0))
        assert torch.allclose(xa, xb, atol=1e-12), (a, b)


@pytest.mark.parametrize("parameterization", ["x0", "v", "xprev"])
@pytest.mark.parametrize("sampler", ["dpm++2m", "dpm++3m", "heun"])
def test_the_parameterizations_give_the_same_ode_solution(parameterization, sampler):
    # The oracle answers each parameterization with the same x0, so the solvers must agree to rounding.
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    results = []
    for p in ("eps", parameterization):
        d, model = mixture_model(parameterization=p)
        results.append(d.sample(model, x_T.shape, sampler=sampler, steps=15, x_T=x_T))
    assert torch.allclose(*results, atol=1e-9)


@pytest.mark.parametrize("sampler", ["dpm++2m", "heun", "dpm++2m-sde"])
def test_a_learned_variance_model_uses_only_its_mean_in_the_solvers(sampler):
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = []
    for variance, kwargs in (("fixed_large", {}), ("learned_range", {"learned_value": -0.3}),
                             ("learned", {"learned_value": 0.4})):
        d = Diffusion.from_name("linear", 1000, variance=variance)
        model = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS, **kwargs)
        out.append(d.sample(model, x_T.shape, sampler=sampler, steps=12, x_T=x_T,
                            generator=torch.Generator().manual_seed(0)))
    assert all(torch.allclose(out[0], o, atol=1e-12) for o in out[1:])


class CountingModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, xt, t):
        self.calls += 1
        return self.inner(xt, t)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 7, 30])
def test_nfe_is_what_each_sampler_says(sampler, steps):
    d, model = mixture_model(T=100)
    if steps < SAMPLERS[sampler].order:
        return
    counting = CountingModel(model)
    d.sample(counting, (4, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert counting.calls == SAMPLERS[sampler].nfe(steps) == (2 * steps - 1 if sampler == "heun" else steps)


def test_clip_denoised_clips_the_data_prediction_of_the_solvers():
    # Data far outside [-1, 1]: with clipping every x0 prediction, and so the sample, stays inside
    d = Diffusion.from_name("linear", 200)
    model = oracle.gaussian_mixture(d, [[3.0, -3.0]], [0.1], [1.0])
    for sampler in NEW:
        free = d.sample(model, (8, 2), sampler=sampler, steps=10, clip_denoised=False, return_trajectory=True,
                        generator=torch.Generator().manual_seed(0))[1]["x0_pred"]
        clipped = d.sample(model, (8, 2), sampler=sampler, steps=10, return_trajectory=True,
                           generator=torch.Generator().manual_seed(0))[1]["x0_pred"]
        assert free.abs().max() > 2.5 and clipped.abs().max() <= 1.0, sampler


# Golden values: the first sample of a fixed-seed run (T = 100, beta to 0.2, 10 steps, default spacing), recorded
# once with this code (torch 2.13 on the CPU).
GOLDEN = {
    "dpm++2m": [[0.751268, -0.62855], [-0.814038, -0.543733], [-0.706104, -0.737225]],
    "dpm++3m": [[0.737044, -0.628059], [-0.795923, -0.540815], [-0.679558, -0.722364]],
    "dpm++2m-sde": [[-0.645531, -0.757549], [-0.789782, -0.826562], [-0.565451, -0.380817]],
    "heun": [[0.867203, -0.659122], [-0.944488, -0.530472], [-0.784194, -0.816529]],
}


@pytest.mark.parametrize("sampler", list(GOLDEN))
def test_fixed_seed_golden_values(sampler):
    d = Diffusion.from_name("linear", 100, beta_end=0.2)
    model = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS)
    x = d.sample(model, (3, 2), sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, torch.tensor(GOLDEN[sampler]), atol=1e-5)


@pytest.mark.parametrize("kwargs, words", [
    ({"sampler": "euler"}, "sampler 'euler' is not one of"),
    ({"sampler": "dpm++2m", "spacing": "cosine"}, "spacing 'cosine' is not one of"),
    ({"sampler": "dpm++2m", "steps": 0}, "between 1 and T = 100"),
    ({"sampler": "heun", "steps": 101}, "between 1 and T = 100"),
    ({"sampler": "dpm++2m", "eta": 0.5}, "ddim sampler only"),
    ({"sampler": "dpm++3m", "steps": 2}, "at least 3 steps"),
    ({"sampler": "ddim", "eta": -1.0}, "eta must be >= 0"),
])
def test_bad_options_are_one_line_errors(kwargs, words):
    d, model = mixture_model(T=100)
    with pytest.raises(ConfigError) as info:
        d.sample(model, (2, 2), **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)
