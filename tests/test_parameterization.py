"""The modes of parameterization.py against exact answers: "xprev", "learned", the loss "kl", and fixed_large's
decoder variance; every mode gives the same bound and the same ODE solution for the same underlying denoiser."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddpmkit import oracle, parameterization
from ddpmkit.diffusion import Diffusion
from ddpmkit.errors import ConfigError

D64 = torch.float64


def points(n=5, shape=(1, 2, 2), seed=0):
    """n images on the 256 grey levels, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).to(D64) / 127.5 - 1


def bound(param, variance="fixed_large", T=40, learned_value=1.0, clip=False, data=None):
    d = Diffusion.from_name("linear", T, beta_end=0.2, parameterization=param, variance=variance)
    data = points() if data is None else data
    model = oracle.finite_set(d, data, learned_value=learned_value)
    return d.vlb_terms(model, data, clip_denoised=clip, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("param", ["x0", "v", "xprev"])
@pytest.mark.parametrize("clip", [False, True])
def test_every_parameterization_gives_the_same_bound_for_the_same_denoiser(param, clip):
    ref, got = bound("eps", clip=clip), bound(param, clip=clip)
    assert torch.allclose(got["terms_bpd"], ref["terms_bpd"], rtol=1e-7, atol=1e-9)
    assert float(ref["total_bpd"].mean()) < 8  # a real bound, not an overflow that happens to agree


@pytest.mark.parametrize("v", [-1.0, -0.3, 0.5, 1.0])
def test_learned_and_learned_range_give_the_same_bound_for_the_same_variance(v):
    # the oracle outputs log sigma^2 for "learned" and v for "learned_range", meaning the same sigma^2
    ref = bound("eps", "learned_range", learned_value=v)
    got = bound("xprev", "learned", learned_value=v)
    assert torch.allclose(got["terms_bpd"], ref["terms_bpd"], rtol=1e-7, atol=1e-9)
    if v == 1.0:  # sigma^2 = beta_t: fixed_large's, except at t = 1 where fixed_large takes beta~_2
        large = bound("eps", "fixed_large")
        assert torch.allclose(got["terms_bpd"][:, 1:], large["terms_bpd"][:, 1:], rtol=1e-7, atol=1e-9)


def test_xprev_oracle_outputs_the_posterior_mean_and_inverts_to_x0():
    d = Diffusion.from_name("cosine", 100, parameterization="xprev")
    x0 = points(4, (1, 3, 3), seed=1)
    t = torch.tensor([0, 1, 50, 99])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=D64)
    xt = d.q_sample(x0, t, noise)

    def true_mean(x, tt):  # mu~_t(x_t, x_0) written out [DDPM Eq. 7]
        ab, ab_prev, beta = d.alpha_bar[tt], d.alpha_bar_prev[tt], d.beta[tt]
        c0 = beta * ab_prev.sqrt() / (1 - ab)
        ct = (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)
        return c0.reshape(-1, 1, 1, 1) * x0 + ct.reshape(-1, 1, 1, 1) * x

    p = d.p_mean_variance(true_mean, xt, t, clip_denoised=False)
    assert torch.allclose(p["x0_pred"], x0, atol=1e-8) and torch.allclose(p["eps_pred"], noise, atol=1e-6)
    assert torch.allclose(p["mean"], true_mean(xt, t), atol=1e-12)
    # L_simple's target is mu~ itself: the true mean has zero loss, the zero model the mean square of mu~
    assert float(d.training_loss(true_mean, x0, t, noise).abs().max()) < 1e-20
    zero = d.training_loss(lambda x, tt: torch.zeros_like(x), x0, t, noise)
    assert torch.allclose(zero, (true_mean(xt, t) ** 2).mean(dim=(1, 2, 3)))


def respaced_solution(param, sampler, predict=None):
    d = Diffusion.from_name("linear", 1000, parameterization=param)
    model = oracle.gaussian_mixture(d, [[-0.5, 0.5], [0.6, -0.2]], [0.1, 0.1], [0.6, 0.4])
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=D64)
    return d.sample(model, x_T.shape, sampler=sampler, steps=12, x_T=x_T, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "dpm++3m", "heun", "ancestral"])
def test_xprev_gives_the_same_samples_as_eps_on_a_respaced_process(sampler):
    assert torch.allclose(respaced_solution("xprev", sampler), respaced_solution("eps", sampler), atol=1e-8)


def test_the_respaced_xprev_test_fails_with_the_respaced_posterior_coefficients(monkeypatch):
    # The wrong coefficient on purpose: invert mu~ with the respaced process's own posterior coefficients (those of
    # a jump of ~90 steps) instead of the one-step ones the network was trained on. The test above must catch it.
    def wrong(d, xt, t, out):
        x0 = (out - parameterization.extract(d.posterior_mean_coef_xt, t, xt) * xt) / parameterization.extract(
            d.posterior_mean_coef_x0, t, xt)
        return x0, d.eps_from_x0(xt, t, x0)

    monkeypatch.setitem(parameterization.PREDICT, "xprev", wrong)
    gap = (respaced_solution("xprev", "dpm++2m") - respaced_solution("eps", "dpm++2m")).abs().max()
    assert float(gap) > 1e-2


EXTREMES = [-math.inf, -1e30, -1e4, -100.0, 0.0, 100.0, 1e4, 1e30, math.inf]


@pytest.mark.parametrize("param", ["eps", "xprev"])
def test_learned_variance_stays_finite_for_any_output(param):
    d = Diffusion.from_name("linear", 50, parameterization=param, variance="learned")
    x0 = points(len(EXTREMES), (1, 2, 2))
    value = torch.tensor(EXTREMES, dtype=D64).reshape(-1, 1, 1, 1).expand(x0.shape)

    def model(x, t):
        return torch.cat([torch.zeros_like(x), value.to(x.dtype)], dim=1)

    for t in (0, 1, 49):
        tt = torch.full((len(x0),), t)
        xt = d.q_sample(x0, tt)
        p = d.p_mean_variance(model, xt, tt)
        assert torch.isfinite(p["variance"]).all() and (p["variance"] > 0).all()
        assert torch.isfinite(d.vlb_term_bpd(x0, xt, tt, p)).all()
    for x in (x0, x0.float()):
        v = torch.zeros(len(EXTREMES), 2, 2, 2, dtype=x.dtype, requires_grad=True)
        loss = d.training_loss(lambda xx, t: v + model(xx, t).to(x.dtype), x, loss="kl")
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(v.grad).all()
    for sampler in ("ancestral", "ddim", "dpm++2m"):
        assert torch.isfinite(d.sample(model, x0.shape, sampler=sampler, steps=10)).all()


def test_kl_loss_is_the_bound_term_vlb_is_T_times_it_plus_the_prior():
    d = Diffusion.from_name("cosine", 30, variance="learned")
    data = points(3)
    model = oracle.finite_set(d, data, learned_value=0.2)
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(5), dtype=D64)
    kl = torch.stack([d.training_loss(model, data, torch.full((3,), i), noise, loss="kl") for i in range(30)])
    vlb = torch.stack([d.training_loss(model, data, torch.full((3,), i), noise, loss="vlb") for i in range(30)])
    assert torch.allclose(vlb, 30 * kl + d.prior_bpd(data), rtol=1e-12)
    for i in (0, 7, 29):  # each is the bound's term at its t, the decoder at t = 1 (index 0) included
        t = torch.full((3,), i)
        xt = d.q_sample(data, t, noise)
        term = d.vlb_term_bpd(data, xt, t, d.p_mean_variance(model, xt, t, clip_denoised=False))
        assert torch.allclose(kl[i], term, rtol=1e-12)
    # the gradient of "vlb" is T times that of "kl" for the same t and noise: clipping the global norm at 1 binds
    # T times sooner for "vlb"
    w = torch.ones((), dtype=D64, requires_grad=True)
    grads = []
    for loss in ("kl", "vlb"):
        w.grad = None
        d.training_loss(lambda x, t: w * model(x, t), data, torch.tensor([3, 9, 20]), noise, loss=loss).sum().backward()
        grads.append(float(w.grad))
    assert grads[1] == pytest.approx(30 * grads[0], rel=1e-9)


def direct_decoder_bpd(images_uint8, x0_const, beta, authors=True):
    """L_0 in bits/dim with SciPy for a model whose x0 is the constant c: mean c, sigma_1^2 = beta~_2 (or beta_1)."""
    b1, b2 = beta[0], beta[1]
    sigma = math.sqrt(b2 * b1 / (1 - (1 - b1) * (1 - b2)) if authors else b1)  # beta~_2 = beta_2 (1-ab_1)/(1-ab_2)
    x = images_uint8.astype(np.float64) / 127.5 - 1
    lo = np.where(x < -0.999, -np.inf, x - 1 / 255)
    hi = np.where(x > 0.999, np.inf, x + 1 / 255)
    mass = stats.norm.cdf(hi, x0_const, sigma) - stats.norm.cdf(lo, x0_const, sigma)
    return float((-np.log2(mass)).reshape(len(x), -1).mean(1).mean())


@pytest.mark.parametrize("c", [0.0051, -0.99, 0.995])  # the last two put pixels in the outer bins
def test_the_nll_of_a_fixed_large_run_uses_beta_tilde_2_at_t_1(c):
    # `ddpm eval --metrics nll` runs evaluate.nll.bits_per_dim. With an x0 model the mean at t = 1 is x0_pred
    # itself (the posterior's coefficient of x_t is 0 there), so its decoder term needs no noise to compute.
    from ddpmkit.evaluate.nll import bits_per_dim

    d = Diffusion.from_name("linear", 1000, parameterization="x0", variance="fixed_large")
    level = round((c + 1) * 127.5)  # grey levels within 3 of c: further out the bin's mass underflows in SciPy
    images = np.clip(level + np.random.default_rng(0).integers(-3, 4, (6, 3, 3, 1)), 0, 255).astype(np.uint8)
    out = bits_per_dim(d, lambda x, t: torch.full_like(x, c), images, batch_size=4)
    assert out["decoder_bpd"] == pytest.approx(direct_decoder_bpd(images, c, d.beta.numpy()), rel=1e-5)  # float32
    assert out["decoder_bpd"] != pytest.approx(direct_decoder_bpd(images, c, d.beta.numpy(), False), rel=1e-2)


def test_every_public_method_takes_t_the_same_ways():
    d = Diffusion.from_name("linear", 10, parameterization="xprev", variance="learned")
    x = torch.rand(3, 1, 2, 2) * 2 - 1
    out = lambda xx, t: torch.zeros(xx.shape[0], 2, *xx.shape[2:])  # noqa: E731
    p = d.p_mean_variance(out, x, torch.full((3,), 5))
    calls = {
        "q_mean_variance": lambda t: d.q_mean_variance(x, t)[0],
        "q_sample": lambda t: d.q_sample(x, t, torch.zeros_like(x)),
        "q_posterior": lambda t: d.q_posterior(x, x, t)[0],
        "eps_from_x0": lambda t: d.eps_from_x0(x, t, x * 0.5),
        "p_mean_variance": lambda t: d.p_mean_variance(out, x, t)["mean"],
        "vlb_term_bpd": lambda t: d.vlb_term_bpd(x, x, t, p),
        "training_loss": lambda t: d.training_loss(out, x, t, torch.zeros_like(x), loss="kl"),
    }
    for name, call in calls.items():
        ref = call(torch.full((3,), 5))
        for t in (5, torch.tensor(5), np.int64(5), [5, 5, 5]):
            assert torch.equal(call(t), ref), (name, t)
        with pytest.raises(TypeError, match="integer"):
            call(5.0)


@pytest.mark.parametrize("variance, loss, ok", [
    ("learned", "simple", False), ("learned_range", "simple", False), ("learned", "kl", True),
    ("learned", "hybrid", True), ("learned_range", "vlb", True), ("fixed_large", "kl", True),
])
def test_a_learned_variance_needs_a_loss_that_trains_it(variance, loss, ok):
    from ddpmkit.config import RunConfig

    values = {"diffusion.variance": variance, "train.loss": loss, "diffusion.parameterization": "xprev"}
    if ok:
        RunConfig().with_values(values)
        return
    with pytest.raises(ConfigError, match=f"diffusion.variance = '{variance}' with train.loss = 'simple'"):
        RunConfig().with_values(values)


def test_output_channels():
    assert [parameterization.output_channels(v, 3) for v in parameterization.VARIANCE] == [3, 3, 6, 6]


TINY = ["--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=20", "--set", "sample.steps=5",
        "--set", "train.num_samples=4", "--batch-size", "8", "--no-progress"]


def test_the_new_modes_train_sample_evaluate_and_draw_from_the_command_line(tmp_path):
    # one run has all three: the network predicts mu~, outputs log sigma^2, and trains on the bound's term
    from ddpmkit.cli import main

    run = tmp_path / "run"
    modes = ["--set", 'diffusion.parameterization="xprev"', "--set", 'diffusion.variance="learned"', "--set",
             'train.loss="kl"']
    assert main(["train", "--out", str(run), "--steps", "2", "--checkpoint-every", "2", "--sample-every", "2",
                 *modes, *TINY]) == 0
    for sampler in ("ancestral", "dpm++2m"):
        assert main(["sample", str(run), "--n", "2", "--sampler", sampler, "--steps", "4", "--out",
                     str(tmp_path / f"{sampler}.png"), "--no-progress"]) == 0
    assert main(["eval", str(run), "--metrics", "nll", "--nll-n", "2", "--json", str(tmp_path / "e.json"),
                 "--no-progress"]) == 0
    import json

    assert np.isfinite(json.loads((tmp_path / "e.json").read_text())["nll_bpd"])
    assert main(["trajectory", str(run), "--n", "1", "--columns", "3", "--out", str(tmp_path / "traj.png")]) == 0
    assert main(["rate-distortion", str(run), "--n", "2", "--out", str(tmp_path / "rd.png")]) == 0


@pytest.mark.parametrize("variance", ["learned", "learned_range"])
def test_a_learned_variance_with_l_simple_is_one_line_and_exit_2(tmp_path, capsys, variance):
    from ddpmkit.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), "--steps", "1", "--set",
                 f'diffusion.variance="{variance}"', *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"diffusion.variance = '{variance}'" in err and "train.loss = 'simple'" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_min_snr_on_an_xprev_network_is_one_line_and_exit_2(tmp_path, capsys):
    from ddpmkit.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), "--steps", "1", "--set", 'train.loss_weighting="min_snr"',
                 "--set", 'diffusion.parameterization="xprev"', *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "train.loss_weighting = 'min_snr'" in err and "'xprev'" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
