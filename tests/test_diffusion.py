"""The identities of the seed derivations, checked numerically, and Diffusion's contracts."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddpmkit import oracle
from ddpmkit.diffusion import Diffusion
from ddpmkit.errors import ConfigError

D64 = torch.float64


def reference_coefficients(beta):
    """The coefficients of [DDPM Eqs. 4, 6, 7] with a plain Python loop, for comparison."""
    alpha_bar, prod = [], 1.0
    for b in beta:
        prod *= 1.0 - b
        alpha_bar.append(prod)
    prev = [1.0] + alpha_bar[:-1]
    post_var = [b * (1 - p) / (1 - a) for b, p, a in zip(beta, prev, alpha_bar)]
    coef_x0 = [b * math.sqrt(p) / (1 - a) for b, p, a in zip(beta, prev, alpha_bar)]
    coef_xt = [(1 - p) * math.sqrt(1 - b) / (1 - a) for b, p, a in zip(beta, prev, alpha_bar)]
    return alpha_bar, prev, post_var, coef_x0, coef_xt


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_coefficients_against_float64_reference(name):
    d = Diffusion.from_name(name, 1000)
    alpha_bar, prev, post_var, coef_x0, coef_xt = reference_coefficients(d.beta.tolist())
    for attr in ("beta", "alpha", "alpha_bar", "alpha_bar_prev", "posterior_variance"):
        assert getattr(d, attr).dtype == D64
    assert np.allclose(d.alpha_bar.numpy(), alpha_bar, rtol=1e-12)
    assert np.allclose(d.alpha_bar_prev.numpy(), prev, rtol=1e-12)
    assert np.allclose(d.posterior_variance.numpy(), post_var, rtol=1e-12, atol=0)
    assert np.allclose(d.posterior_mean_coef_x0.numpy(), coef_x0, rtol=1e-12)
    assert np.allclose(d.posterior_mean_coef_xt.numpy(), coef_xt, rtol=1e-12)
    assert d.num_timesteps == 1000 and d.alpha_bar_prev[0] == 1.0


def test_golden_linear_values():
    # alpha_bar_T of the paper's schedule and beta~ at t = 2 (index 1), computed once in float64
    d = Diffusion.from_name("linear", 1000)
    assert float(d.alpha_bar[-1]) == pytest.approx(4.035829e-05, rel=1e-6)
    assert float(d.posterior_variance[1]) == pytest.approx(1.0e-4 * 1.1992e-4 / (1.0 - 0.9999 * 0.99988), rel=1e-3)


def test_posterior_log_variance_is_finite_at_t0():
    for T in (1, 2, 1000):
        d = Diffusion.from_name("linear", T)
        assert torch.isfinite(d.posterior_log_variance_clipped).all()
        assert d.posterior_variance[0] == 0.0


def test_iterating_the_forward_step_matches_the_closed_form():
    # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z, t times, against q(x_t | x_0) [DDPM Eqs. 2, 4]
    d = Diffusion.from_name("linear", 1000)
    g = torch.Generator().manual_seed(0)
    n, x0 = 40_000, 0.7
    x = torch.full((n,), x0, dtype=D64)
    checks = {9, 99, 299}
    for i in range(300):
        x = torch.sqrt(d.alpha[i]) * x + torch.sqrt(d.beta[i]) * torch.randn(n, generator=g, dtype=D64)
        if i in checks:
            mean, var, _ = d.q_mean_variance(torch.full((1, 1), x0, dtype=D64), torch.tensor([i]))
            se = math.sqrt(float(var) / n)
            assert float(x.mean()) == pytest.approx(float(mean), abs=5 * se)
            assert float(x.var()) == pytest.approx(float(var), rel=5 * math.sqrt(2 / n))


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_posterior_matches_bayes_rule_by_quadrature(t):
    # q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0) [DDPM Eqs. 6-7]
    d = Diffusion.from_name("linear", 1000)
    ab_prev, beta = float(d.alpha_bar_prev[t]), float(d.beta[t])
    x0, xt = 0.3, math.sqrt(float(d.alpha_bar[t])) * 0.3 - 0.8 * math.sqrt(1 - float(d.alpha_bar[t]))
    sd_prior = math.sqrt(1 - ab_prev)
    grid = np.linspace(math.sqrt(ab_prev) * x0 - 12 * sd_prior, math.sqrt(ab_prev) * x0 + 12 * sd_prior, 400_001)
    log_dens = stats.norm.logpdf(xt, math.sqrt(1 - beta) * grid, math.sqrt(beta)) + stats.norm.logpdf(
        grid, math.sqrt(ab_prev) * x0, sd_prior)
    dens = np.exp(log_dens - log_dens.max())
    dens /= np.trapezoid(dens, grid)
    mean_q = np.trapezoid(grid * dens, grid)
    var_q = np.trapezoid((grid - mean_q) ** 2 * dens, grid)
    mean, var, _ = d.q_posterior(torch.full((1, 1), x0, dtype=D64), torch.full((1, 1), xt, dtype=D64),
                                 torch.tensor([t]))
    assert float(mean) == pytest.approx(mean_q, rel=1e-6, abs=1e-9)
    assert float(var) == pytest.approx(var_q, rel=1e-4)


class TrueNoise(torch.nn.Module):
    """A 'model' that returns the true target, for checking that the math inverts itself."""

    def __init__(self, d, x0, noise):
        super().__init__()
        self.d, self.x0, self.noise = d, x0, noise

    def forward(self, xt, t):
        a = self.d.sqrt_alpha_bar[t].reshape(-1, 1, 1, 1)
        s = self.d.sqrt_one_minus_alpha_bar[t].reshape(-1, 1, 1, 1)
        p = self.d.parameterization
        return {"eps": self.noise, "x0": self.x0, "v": a * self.noise - s * self.x0}[p]


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_true_prediction_gives_posterior_mean_and_inverts_q_sample(parameterization):
    d = Diffusion.from_name("cosine", 1000, parameterization=parameterization)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 5, 5, generator=g, dtype=D64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=D64)
    t = torch.tensor([0, 10, 500, 999])
    xt = d.q_sample(x0, t, noise)
    p = d.p_mean_variance(TrueNoise(d, x0, noise), xt, t, clip_denoised=False)
    assert torch.allclose(p["x0_pred"], x0, atol=1e-6)  # x0 from (x_t, eps) inverts q_sample
    assert torch.allclose(p["eps_pred"], noise, atol=1e-6)
    mean_q, _, _ = d.q_posterior(x0, xt, t)
    assert torch.allclose(p["mean"], mean_q, atol=1e-9)  # mu_theta from the true eps equals mu~_t
    # and the mean is the paper's Eq. 11: (x_t - beta / sqrt(1 - alpha_bar) eps) / sqrt(alpha)
    shape = (-1, 1, 1, 1)
    eq11 = (xt - (d.beta[t] / d.sqrt_one_minus_alpha_bar[t]).reshape(shape) * noise) / d.alpha[t].sqrt().reshape(shape)
    assert torch.allclose(p["mean"], eq11, atol=1e-9)


def test_clipping_re_derives_eps_from_the_clipped_x0():
    d = Diffusion.from_name("linear", 1000)
    xt = torch.full((2, 1, 2, 2), 3.0)
    t = torch.tensor([999, 5])
    p = d.p_mean_variance(lambda x, t: torch.full_like(x, -5.0), xt, t, clip_denoised=True)
    assert p["x0_pred"].abs().max() <= 1.0
    assert torch.allclose(d.q_sample(p["x0_pred"], t, p["eps_pred"]), xt, atol=1e-4)
    mean_q, _, _ = d.q_posterior(p["x0_pred"], xt, t)
    assert torch.allclose(p["mean"], mean_q)


def test_variance_types():
    small = Diffusion.from_name("linear", 100, variance="fixed_small")
    large = Diffusion.from_name("linear", 100, variance="fixed_large")
    x = torch.zeros(3, 1, 2, 2)
    t = torch.tensor([0, 50, 99])
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert torch.allclose(small.p_mean_variance(zero, x, t)["variance"].flatten(), small.posterior_variance[t].float())
    # sigma^2 = beta_t, but beta~_2 = beta_2 (1 - alpha_bar_1) / (1 - alpha_bar_2) at t = 1, as the authors' code
    b1, b2 = float(large.beta[0]), float(large.beta[1])
    expect = large.beta[t].clone()
    expect[0] = b2 * b1 / (1 - (1 - b1) * (1 - b2))
    assert torch.allclose(large.p_mean_variance(zero, x, t)["variance"].flatten(), expect.float())
    learned = Diffusion.from_name("linear", 100, variance="learned_range")
    for v, ref in ((1.0, large.beta[t]), (-1.0, small.posterior_variance[t].clamp(min=small.posterior_variance[1]))):
        out = lambda x, t, v=v: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)  # noqa: E731
        got = learned.p_mean_variance(out, x, t)["variance"][:, 0, 0, 0]
        assert torch.allclose(got, ref.float(), rtol=1e-5)


def test_prior_term_is_about_1e5_bits_per_dim():
    # [DDPM Sec. 4]: L_T = KL(q(x_T | x_0) || N(0, I)) is about 1e-5 bits/dim for the linear schedule, T = 1000
    d = Diffusion.from_name("linear", 1000)
    x0 = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=D64) * 2 - 1
    prior = d.prior_bpd(x0)
    assert prior.shape == (64,)
    assert 3e-6 < float(prior.mean()) < 3e-5


def direct_bound_for_eps_zero(d, x0, noise, t):
    """The bound term at t for a model that predicts eps = 0, written out with SciPy (fixed_large variance: beta_t,
    and at t = 1 beta~_2, as log(append(posterior_variance[1], betas[1:])) in the authors' diffusion_utils_2.py)."""
    ab, ab_prev = float(d.alpha_bar[t]), float(d.alpha_bar_prev[t])
    beta, alpha = float(d.beta[t]), float(d.alpha[t])
    x0, noise = x0.numpy(), noise.numpy()
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
    x0_pred = np.clip(xt / math.sqrt(ab), -1, 1)
    c0, ct = beta * math.sqrt(ab_prev) / (1 - ab), (1 - ab_prev) * math.sqrt(alpha) / (1 - ab)
    mean_p = c0 * x0_pred + ct * xt
    if t == 0:  # decoder: the mass of x0's bin under N(mean_p, sigma_1^2) with the authors' sigma_1^2 = beta~_2
        b1, b2 = float(d.beta[0]), float(d.beta[1])
        sigma = math.sqrt(b2 * (1 - (1 - b1)) / (1 - (1 - b1) * (1 - b2)))  # beta_2 (1 - ab_1) / (1 - ab_2)
        lo = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
        hi = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
        mass = stats.norm.cdf(hi, mean_p, sigma) - stats.norm.cdf(lo, mean_p, sigma)
        return -np.log(mass).reshape(len(x0), -1).mean(1) / math.log(2)
    mean_q = c0 * x0 + ct * xt
    var_q = beta * (1 - ab_prev) / (1 - ab)
    kl = 0.5 * (np.log(beta / var_q) + var_q / beta + (mean_q - mean_p) ** 2 / beta - 1)
    return kl.reshape(len(x0), -1).mean(1) / math.log(2)


@pytest.mark.parametrize("t", [0, 1, 300, 999])
def test_bound_term_of_an_eps_zero_model_matches_a_direct_computation(t):
    d = Diffusion.from_name("linear", 1000)
    g = torch.Generator().manual_seed(t)
    x0 = (torch.randint(0, 256, (3, 1, 4, 4), generator=g).double() / 127.5) - 1
    noise = torch.randn(x0.shape, generator=g, dtype=D64)
    tt = torch.full((3,), t)
    xt = d.q_sample(x0, tt, noise)
    p = d.p_mean_variance(lambda x, t: torch.zeros_like(x), xt, tt, clip_denoised=True)
    got = d.vlb_term_bpd(x0, xt, tt, p)
    assert np.allclose(got.numpy(), direct_bound_for_eps_zero(d, x0, noise, t), rtol=1e-6)


def test_vlb_loss_is_an_unbiased_estimate_of_the_whole_bound():
    d = Diffusion.from_name("cosine", 50, variance="fixed_small")
    points = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model = oracle.finite_set(d, points)
    x0 = points[:2]
    noise = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    per_t = torch.stack([d.training_loss(model, x0, torch.full((2,), i), noise, loss="vlb") for i in range(50)])
    # vlb_terms with the same noise at every t: mean over uniform t of L_T + T L_t is L_T + sum_t L_t
    terms = torch.stack([
        d.vlb_term_bpd(x0, d.q_sample(x0, torch.full((2,), i), noise),
                       torch.full((2,), i),
                       d.p_mean_variance(model, d.q_sample(x0, torch.full((2,), i), noise), torch.full((2,), i),
                                         clip_denoised=False))
        for i in range(50)])
    assert torch.allclose(per_t.mean(0), d.prior_bpd(x0) + terms.sum(0), rtol=1e-5)


def test_vlb_terms_of_the_oracle_beat_a_wrong_model():
    d = Diffusion.from_name("linear", 200, beta_end=0.1, variance="fixed_small")
    points = (torch.randint(0, 256, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5) - 1
    right = d.vlb_terms(oracle.finite_set(d, points), points, generator=torch.Generator().manual_seed(0))
    wrong = d.vlb_terms(oracle.finite_set(d, -points), points, generator=torch.Generator().manual_seed(0))
    zero = d.vlb_terms(lambda x, t: torch.zeros_like(x), points, generator=torch.Generator().manual_seed(0))
    assert right["terms_bpd"].shape == (6, 200) and right["prior_bpd"].shape == (6,)
    assert torch.allclose(right["total_bpd"], right["prior_bpd"] + right["terms_bpd"].sum(1))
    assert float(right["total_bpd"].mean()) < float(wrong["total_bpd"].mean())
    assert float(right["total_bpd"].mean()) < float(zero["total_bpd"].mean())
    # With the exact posterior mean, the diffusion terms L_1..L_{T-1} together pay for telling the 6 points
    # apart: log2(6) bits over 16 dimensions. (The decoder L_0 then pays for sigma_1 being fixed.)
    diffusion_terms = float(right["terms_bpd"][:, 1:].sum(1).mean())
    assert diffusion_terms == pytest.approx(math.log2(6) / 16, rel=0.15)


@pytest.mark.parametrize("loss", ["simple", "vlb", "hybrid"])
@pytest.mark.parametrize("variance", ["fixed_large", "learned_range"])
def test_training_loss_shapes_and_gradients(loss, variance):
    d = Diffusion.from_name("linear", 100, variance=variance)
    channels = 2 if variance == "learned_range" else 1
    net = torch.nn.Conv2d(1, channels, 3, padding=1)
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    value = d.training_loss(lambda x, t: net(x), x0, loss=loss)
    assert value.shape == (4,) and torch.isfinite(value).all()
    value.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_hybrid_bound_term_sends_no_gradient_into_the_mean():
    d = Diffusion.from_name("linear", 100, variance="learned_range")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 4, 4, generator=g) * 2 - 1
    mean_part = torch.randn(4, 1, 4, 4, generator=g).requires_grad_()  # a wrong eps, so L_vlb pulls on it
    var_part = torch.zeros(4, 1, 4, 4, requires_grad=True)
    model = lambda x, t: torch.cat([mean_part * 1.0, var_part * 1.0], 1)  # noqa: E731
    t, noise = torch.tensor([0, 3, 50, 99]), torch.randn(4, 1, 4, 4, generator=g)
    # lambda = 1, so a leak of the bound's gradient into the mean could not hide below a tolerance
    hybrid = d.training_loss(model, x0, t, noise, loss="hybrid", hybrid_lambda=1.0)
    simple = d.training_loss(model, x0, t, noise, loss="simple")
    vlb = d.training_loss(model, x0, t, noise, loss="vlb")
    (g_mean_h, g_var_h) = torch.autograd.grad(hybrid.sum(), [mean_part, var_part])
    (g_mean_s,) = torch.autograd.grad(simple.sum(), [mean_part])
    (g_mean_v,) = torch.autograd.grad(vlb.sum(), [mean_part])
    assert torch.equal(g_mean_h, g_mean_s)  # the mean is trained by L_simple only, bit for bit
    assert g_mean_v.abs().max() > 1e-2 * g_mean_s.abs().max()  # while L_vlb alone does pull on the mean
    assert g_var_h.abs().sum() > 0  # the variance is trained by the bound term


@pytest.mark.parametrize("loss", ["simple", "vlb", "hybrid"])
def test_training_loss_returns_its_per_example_terms(loss):
    d = Diffusion.from_name("linear", 100, variance="learned_range")
    x0 = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    t, noise, w = torch.tensor([0, 3, 50, 99]), torch.randn(4, 1, 4, 4), torch.tensor([0.5, 1.0, 2.0, 4.0])
    plain = d.training_loss(lambda x, t: net(x), x0, t, noise, loss=loss, t_weight=w)
    out = d.training_loss(lambda x, t: net(x), x0, t, noise, loss=loss, t_weight=w, return_terms=True)
    assert torch.equal(out["loss"], plain) and torch.equal(out["t"], t)
    assert set(out) == {"loss", "t"} | {"simple": {"mse"}, "vlb": {"vb"}, "hybrid": {"mse", "vb"}}[loss]
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    if loss == "vlb":  # the terms are unweighted: the weight multiplies T L_{t-1} only, never the prior
        assert torch.allclose(out["loss"], w * out["vb"] + d.prior_bpd(x0))
    if loss == "hybrid":
        assert torch.allclose(out["loss"], out["mse"] + 1e-3 * w * out["vb"])


@pytest.mark.parametrize("name, T", [("linear", 1000), ("cosine", 4000), ("linear", 20)])
def test_learned_range_variance_stays_between_beta_tilde_and_beta_for_any_output(name, T):
    # [IDDPM Eq. 15] interpolates log beta~_t and log beta_t; whatever the network says, Sigma stays in between
    d = Diffusion.from_name(name, T, variance="learned_range")
    for diffusion in (d, d.respaced(range(0, T, 7))):
        n = diffusion.num_timesteps
        t = torch.arange(n)
        x = torch.zeros(n, 1, 1, 1, dtype=D64)
        low = diffusion.posterior_log_variance_clipped.exp()  # beta~_t; at t = 0 the clipped beta~_2
        high = diffusion.beta
        assert (low <= high).all()
        for v in (-1e4, -1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.5, 1e4):
            out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)
            p = diffusion.p_mean_variance(None, x, t, clip_denoised=False, model_output=out)
            var = p["variance"].flatten()
            assert var.dtype == D64 and torch.isfinite(p["log_variance"]).all()
            assert (var >= low * (1 - 1e-12)).all() and (var <= high * (1 + 1e-12)).all()
            if v <= -1.0:
                assert torch.allclose(var, low, rtol=1e-12)
            if v >= 1.0:
                assert torch.allclose(var, high, rtol=1e-12)


def test_contracts_and_errors():
    with pytest.raises(ConfigError, match="parameterization"):
        Diffusion.from_name("linear", 10, parameterization="score")
    with pytest.raises(ConfigError, match="variance"):
        Diffusion.from_name("linear", 10, variance="learnt")
    d = Diffusion.from_name("linear", 10)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(TypeError, match="integer"):
        d.q_sample(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ConfigError, match="model output has shape"):
        d.p_mean_variance(lambda x, t: torch.zeros(2, 2, 4, 4), x, torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="loss"):
        d.training_loss(lambda x, t: x, x, loss="l1")
    assert d.q_sample(x, 3).shape == x.shape  # a python int t broadcasts to the batch
    assert d.q_sample(x.to(torch.bfloat16), torch.tensor([1, 2])).dtype == torch.bfloat16


def test_respaced_process_keeps_alpha_bar_on_the_subsequence():
    d = Diffusion.from_name("linear", 1000)
    tau = [0, 249, 499, 749, 999]
    r = d.respaced(tau)
    assert r.num_timesteps == 5
    assert torch.allclose(r.alpha_bar, d.alpha_bar[tau])
    assert r.timestep_map.tolist() == tau
