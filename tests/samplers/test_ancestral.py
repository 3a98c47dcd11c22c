"""Samplers with the analytic oracle: they must reproduce a known distribution with no training at all."""

import pytest
import torch

from ddpmkit import oracle
from ddpmkit.diffusion import Diffusion, timestep_subsequence
from ddpmkit.errors import ConfigError

MEANS = [[-0.6, -0.6], [0.6, -0.6], [0.0, 0.6]]
STD = 0.1
WEIGHTS = [0.5, 0.3, 0.2]
N = 4000  # 3 standard errors of a mass of 0.5 is 0.024 < 0.03


def mixture_stats(x):
    """Mass and mean per-axis spread of each component, assigning each sample to its nearest mean."""
    centres = torch.tensor(MEANS, dtype=x.dtype)
    k = ((x[:, None, :] - centres) ** 2).sum(-1).argmin(1)
    mass = [float((k == i).float().mean()) for i in range(3)]
    spread = [float(x[k == i].std(0).mean()) for i in range(3)]
    return mass, spread


def draw(variance, sampler="ancestral", steps=None, eta=0.0, parameterization="eps", seed=0):
    d = Diffusion.from_name("linear", 1000, variance=variance, parameterization=parameterization)
    model = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS)
    return d.sample(model, (N, 2), sampler=sampler, steps=steps, eta=eta,
                    generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ancestral_1000_steps_reproduces_the_mixture(variance):
    mass, spread = mixture_stats(draw(variance))
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03
    for s in spread:
        assert abs(s - STD) <= 0.1 * STD


# With fewer steps, each step of size k replaces k small steps, and a fixed sigma^2 can no longer be right:
# the true reverse step q(x_{t-k} | x_t) has variance beta~' + c^2 Var[x0 | x_t] (c the posterior coefficient of
# x0), which lies between beta~' and beta'. fixed_small drops the second term and under-disperses; fixed_large
# over-disperses; DDIM (eta = 0) adds no noise and lands in between. Measured with seed 0, N = 4000 (std 0.1):
#   fixed_small 50: 0.071-0.073, 100: 0.080-0.083; fixed_large 50: 0.130-0.133, 100: 0.114-0.115;
#   DDIM eta=0 50: 0.086-0.089, 100: 0.092-0.094; DDIM eta=1 equals fixed_small (tested below).
# The bands below are those figures with a margin of 0.006 (about two standard errors of a spread estimate).
@pytest.mark.parametrize(
    "variance, sampler, steps, eta, low, high",
    [
        ("fixed_small", "ancestral", 50, 0.0, 0.065, 0.079),
        ("fixed_small", "ancestral", 100, 0.0, 0.074, 0.089),
        ("fixed_large", "ancestral", 50, 0.0, 0.124, 0.139),
        ("fixed_large", "ancestral", 100, 0.0, 0.108, 0.121),
        ("fixed_small", "ddim", 50, 0.0, 0.080, 0.095),
        ("fixed_small", "ddim", 100, 0.0, 0.086, 0.100),
        ("fixed_small", "ddim", 50, 1.0, 0.065, 0.079),
        ("fixed_small", "ddim", 100, 1.0, 0.074, 0.089),
    ],
)
def test_fewer_steps_keep_the_mass_and_a_known_spread(variance, sampler, steps, eta, low, high):
    mass, spread = mixture_stats(draw(variance, sampler, steps, eta))
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03
    for s in spread:
        assert low <= s <= high


def draw_learned(v, steps, seed=0):
    """Respaced ancestral draws with learned_range and the oracle's variance channel fixed at v."""
    d = Diffusion.from_name("linear", 1000, variance="learned_range")
    model = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS, learned_value=v)
    return d.sample(model, (N, 2), steps=steps, generator=torch.Generator().manual_seed(seed))


# The v channel means the same fraction on any subsequence [IDDPM Eq. 15, Sec. 4]: v = +1 is sigma^2 = beta_t and
# v = -1 is beta~_t of the ORIGINAL process at T steps, and beta'_i and beta~'_i of the respaced one. So with
# respacing, learned_range at v = +-1 must draw exactly what fixed_large / fixed_small draw (the bands above);
# v = 0 (the geometric mean) measured 0.089-0.093 at 50 steps and 0.093-0.095 at 100 (seeds 0, 1), in between.
@pytest.mark.parametrize(
    "v, fixed, steps, low, high",
    [
        (1.0, "fixed_large", 50, 0.124, 0.139),
        (1.0, "fixed_large", 100, 0.108, 0.121),
        (-1.0, "fixed_small", 50, 0.065, 0.079),
        (-1.0, "fixed_small", 100, 0.074, 0.089),
        (0.0, None, 50, 0.083, 0.099),
        (0.0, None, 100, 0.087, 0.101),
    ],
)
def test_respaced_learned_variances_use_the_respaced_betas(v, fixed, steps, low, high):
    x = draw_learned(v, steps)
    mass, spread = mixture_stats(x)
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03
    for s in spread:
        assert low <= s <= high
    if fixed is not None:
        assert torch.allclose(x, draw(fixed, steps=steps), atol=1e-6)


def test_respaced_learned_range_interpolates_the_respaced_beta_and_beta_tilde():
    d = Diffusion.from_name("linear", 1000, variance="learned_range")
    r = d.respaced(timestep_subsequence(1000, 50))
    t = torch.arange(r.num_timesteps)
    x = torch.zeros(len(t), 1, dtype=torch.float64)
    for v, expected in ((1.0, r.beta), (-1.0, r.posterior_log_variance_clipped.exp())):
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)
        var = r.p_mean_variance(None, x, t, model_output=out)["variance"].flatten()
        assert torch.allclose(var, expected, rtol=1e-12)
    # and those are not the original process's values at the same timesteps: beta'_i is ~20x beta_{tau_i} here
    assert (r.beta[1:] > 10 * d.beta[r.timestep_map[1:]]).all()


def test_ddim_with_eta_one_is_ancestral_sampling_with_beta_tilde():
    # sigma of [DDIM Eq. 16] at eta = 1 is sqrt(beta~'), and the means agree: the same draws, step for step
    a = draw("fixed_small", "ancestral", 50)
    b = draw("fixed_small", "ddim", 50, eta=1.0)
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("parameterization", ["x0", "v", "xprev"])
def test_other_parameterizations_sample_the_same_mixture(parameterization):
    mass, spread = mixture_stats(draw("fixed_large", "ddim", 50, parameterization=parameterization))
    for m, w in zip(mass, WEIGHTS):
        assert abs(m - w) <= 0.03
    for s in spread:
        assert 0.080 <= s <= 0.095


@pytest.mark.parametrize("sampler, steps, eta", [("ancestral", None, 0.0), ("ancestral", 50, 0.0),
                                                 ("ddim", 50, 0.0), ("ddim", 20, 1.0)])
def test_samplers_land_on_the_points_of_a_finite_data_set(sampler, steps, eta):
    d = Diffusion.from_name("linear", 1000, variance="fixed_small")
    points = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x = d.sample(oracle.finite_set(d, points), (64, 1, 4, 4), sampler=sampler, steps=steps, eta=eta,
                 generator=torch.Generator().manual_seed(0))
    dist = torch.cdist(x.reshape(64, -1), points.reshape(5, -1)).min(1).values
    assert float(dist.max()) < 0.05
    nearest = torch.cdist(x.reshape(64, -1), points.reshape(5, -1)).argmin(1)
    assert len(set(nearest.tolist())) == 5  # every point is reached, not just one


# Golden values: the first sample of a fixed-seed run, recorded once with this code (torch 2.13 on the CPU).
GOLDEN = {
    ("ancestral", None, 0.0): [[-0.841136, -0.719577], [0.612055, -0.682198], [-0.541964, -0.407084]],
    ("ancestral", 10, 0.0): [[0.671381, -0.944667], [-1.0, -0.865644], [0.482389, 0.65208]],
    ("ddim", 10, 0.0): [[0.618606, -0.596615], [-0.659006, -0.56446], [-0.618211, -0.642403]],
    ("ddim", 10, 1.0): [[0.408179, -0.619933], [-0.601033, -0.623706], [0.003083, 0.558165]],
}


@pytest.mark.parametrize("key", list(GOLDEN))
def test_fixed_seed_golden_values(key):
    sampler, steps, eta = key
    d = Diffusion.from_name("linear", 100, beta_end=0.2)
    model = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS)
    x = d.sample(model, (3, 2), sampler=sampler, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, torch.tensor(GOLDEN[key]), atol=1e-5)


def test_trajectory_and_contracts():
    d = Diffusion.from_name("linear", 100)
    model = oracle.gaussian_mixture(d, MEANS, [STD] * 3, WEIGHTS)
    x, traj = d.sample(model, (8, 2), steps=10, return_trajectory=True, generator=torch.Generator().manual_seed(0))
    assert traj["xt"].shape == (11, 8, 2) and traj["x0_pred"].shape == (10, 8, 2)
    assert traj["t"] == sorted(timestep_subsequence(100, 10).tolist(), reverse=True)
    assert torch.allclose(traj["xt"][-1].clamp(-1, 1), x)
    assert x.abs().max() <= 1.0
    with pytest.raises(ConfigError, match="sampler"):
        d.sample(model, (2, 2), sampler="euler")
    with pytest.raises(ConfigError, match="steps"):
        d.sample(model, (2, 2), steps=0)
    with pytest.raises(ConfigError, match="steps"):
        d.sample(model, (2, 2), steps=101)


def test_timestep_subsequence_is_even_and_keeps_both_ends():
    for T, steps in [(1000, 50), (1000, 1000), (1000, 999), (10, 3), (7, 7)]:
        tau = timestep_subsequence(T, steps)
        assert len(tau) == steps and tau[0] == 0 and tau[-1] == T - 1
        assert (tau[1:] > tau[:-1]).all()
