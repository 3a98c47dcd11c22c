"""Classifier-free guidance [CFG Eq. 6] against the exact conditional oracle of a Gaussian mixture.

The oracle with classes denoises exactly under p(x_0 | c); its guided score has a closed form,
(1 + w) grad log p(x_t | c) - w grad log p(x_t), computed here directly from the mixture density with autograd.
"""

import math

import pytest
import torch

from ddpmkit import oracle
from ddpmkit.diffusion import Diffusion
from ddpmkit.errors import ConfigError
from ddpmkit.guidance import NO_CLASS, ClassifierFreeGuidance, check_guidance, drop_labels
from ddpmkit.models import UNet
from ddpmkit.samplers import SAMPLERS

# two classes, two well separated components each
MEANS = [[-0.6, -0.6], [-0.6, 0.6], [0.6, -0.6], [0.6, 0.6]]
CLASSES = [0, 0, 1, 1]
WEIGHTS = [0.1, 0.2, 0.3, 0.4]
STD = 0.1


def mixture(parameterization="eps", variance="fixed_large", means=MEANS, std=STD, weights=WEIGHTS,
            classes=CLASSES, T=1000):
    d = Diffusion.from_name("linear", T, parameterization=parameterization, variance=variance)
    return d, oracle.gaussian_mixture(d, means, [std] * len(means), weights, classes=classes)


def nearest_class(x, means=MEANS, classes=CLASSES):
    k = ((x[:, None, :] - torch.tensor(means, dtype=x.dtype)) ** 2).sum(-1).argmin(1)
    return torch.tensor(classes)[k]


def log_density(xt, alpha_bar, members):
    """log p(x_t | components `members`) of the mixture, from its definition: a logsumexp of Gaussians."""
    w = torch.tensor(WEIGHTS, dtype=torch.float64)[members]
    mu = math.sqrt(alpha_bar) * torch.tensor(MEANS, dtype=torch.float64)[members]  # (k, D)
    var = alpha_bar * STD**2 + 1 - alpha_bar
    log_n = -0.5 * ((xt[:, None, :] - mu) ** 2).sum(-1) / var - 0.5 * xt.shape[1] * math.log(2 * math.pi * var)
    return torch.logsumexp(torch.log(w / w.sum()) + log_n, dim=1)


def guided_eps_closed_form(xt, alpha_bar, c, w):
    """-sqrt(1 - ab) ((1 + w) grad log p(x_t | c) - w grad log p(x_t)): eps = -sqrt(1 - ab) score [DDPM Eq. 12]."""
    xt = xt.clone().requires_grad_(True)
    cond = [k for k, ck in enumerate(CLASSES) if ck == c]
    score_c = torch.autograd.grad(log_density(xt, alpha_bar, cond).sum(), xt)[0]
    score = torch.autograd.grad(log_density(xt, alpha_bar, list(range(len(MEANS)))).sum(), xt)[0]
    return -math.sqrt(1 - alpha_bar) * ((1 + w) * score_c - w * score)


def eps_of(d, out, xt, t):
    """The eps that an x0, v or mu~ (xprev) output stands for, at fixed x_t and t."""
    ab = d.alpha_bar[t].double().unsqueeze(1)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if d.parameterization == "xprev":  # mu~ = c0 x0 + ct x_t [DDPM Eq. 7], solved for x0
        ab_prev, beta = d.alpha_bar_prev[t].double().unsqueeze(1), d.beta[t].double().unsqueeze(1)
        c0, ct = beta * ab_prev.sqrt() / (1 - ab), (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)
        return (xt - a * (out - ct * xt) / c0) / s
    return {"eps": out, "x0": (xt - a * out) / s, "v": a * out + s * xt}[d.parameterization]


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_conditional_samples_land_in_the_requested_class(sampler):
    d, model = mixture()
    n = 500
    for c in (0, 1):
        guided = ClassifierFreeGuidance(model, classes=[c] * n, guidance=0.0)
        x = d.sample(guided, (n, 2), sampler=sampler, steps=50, generator=torch.Generator().manual_seed(c))
        share = float((nearest_class(x) == c).double().mean())
        assert share >= 0.97, f"{sampler}: {share:.3f} of the samples in class {c}"


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "xprev"])
@pytest.mark.parametrize("w", [0.5, 1.0, 3.0])
def test_guided_oracle_matches_the_closed_form_of_the_guided_score(parameterization, w):
    d, model = mixture(parameterization)
    xt = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.2
    for t_index in (10, 200, 500, 900):
        t = torch.full((64,), t_index)
        for c in (0, 1):
            out = ClassifierFreeGuidance(model, classes=c, guidance=w)(xt, t)
            expected = guided_eps_closed_form(xt, float(d.alpha_bar[t_index]), c, w)
            assert torch.allclose(eps_of(d, out, xt, t), expected, atol=1e-9, rtol=1e-7), (t_index, c)


def test_no_class_is_the_whole_mixture():
    d, model = mixture()
    plain = oracle.gaussian_mixture(d, MEANS, [STD] * 4, WEIGHTS)
    xt, t = torch.randn(32, 2, dtype=torch.float64), torch.full((32,), 300)
    assert torch.allclose(model(xt, t, torch.full((32,), NO_CLASS)), plain(xt, t), atol=1e-12, rtol=0)
    assert torch.equal(model(xt, t), plain(xt, t))  # no labels: the unconditional oracle itself


def test_w_zero_is_the_conditional_oracle_exactly():
    d, model = mixture()
    xt, t = torch.randn(32, 2, dtype=torch.float64), torch.full((32,), 300)
    for c in (0, 1):
        members = [k for k, ck in enumerate(CLASSES) if ck == c]
        only_c = oracle.gaussian_mixture(d, [MEANS[k] for k in members], [STD] * len(members),
                                         [WEIGHTS[k] for k in members])
        guided = ClassifierFreeGuidance(model, classes=c, guidance=0.0)
        assert torch.equal(guided(xt, t), model(xt, t, torch.full((32,), c)))
        assert torch.allclose(guided(xt, t), only_c(xt, t), atol=1e-12, rtol=0)
        for sampler in sorted(SAMPLERS):
            a = d.sample(guided, (16, 2), sampler=sampler, steps=20, generator=torch.Generator().manual_seed(0))
            b = d.sample(only_c, (16, 2), sampler=sampler, steps=20, generator=torch.Generator().manual_seed(0))
            assert torch.allclose(a, b, atol=1e-10, rtol=0), sampler


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_share_in_the_requested_class_rises_with_w_when_classes_overlap(sampler):
    # two classes of one wide component each, overlapping: p(c = 0 | x_0) > 1/2 exactly where x < 0
    means, classes = [[-0.15, 0.0], [0.15, 0.0]], [0, 1]
    d, model = mixture(means=means, std=0.3, weights=[0.5, 0.5], classes=classes)
    n, shares = 2000, []
    for w in (0.0, 0.5, 1.0, 2.0):
        guided = ClassifierFreeGuidance(model, classes=0, guidance=w)
        x = d.sample(guided, (n, 2), sampler=sampler, steps=50, generator=torch.Generator().manual_seed(0))
        shares.append(float((x[:, 0] < 0).double().mean()))
    # the standard error of a share is < 0.012 at n = 2000
    assert all(lo < hi - 0.03 for lo, hi in zip(shares, shares[1:])), shares
    assert 0.6 < shares[0] < 0.8, shares  # unguided: about Phi(0.15 / 0.3) = 0.69


class _Counting(torch.nn.Module):
    """A conditional 'network' that records its calls: out = x * (1 + y) plus a variance half for learned_range."""

    def __init__(self, learned=False):
        super().__init__()
        self.calls, self.learned = [], learned

    def forward(self, x, t, y):
        self.calls.append((x.shape[0], y.clone()))
        mean = x * (1.0 + y.to(x.dtype)).reshape(-1, 1)
        return torch.cat([mean, mean * 0 + y.to(x.dtype).reshape(-1, 1)], 1) if self.learned else mean


def test_conditional_and_unconditional_run_as_one_batched_pass():
    net = _Counting()
    x = torch.ones(4, 3)
    out = ClassifierFreeGuidance(net, classes=[0, 1, 2, 1], guidance=2.0)(x, torch.zeros(4, dtype=torch.long))
    assert len(net.calls) == 1 and net.calls[0][0] == 8
    assert net.calls[0][1].tolist() == [0, 1, 2, 1, NO_CLASS] * 1 + [NO_CLASS] * 3
    # (1 + w) x (1 + c) - w x (1 - 1): the no-class half has 1 + y = 0
    assert torch.equal(out[:, 0], torch.tensor([3.0, 6.0, 9.0, 6.0]))


def test_learned_variances_guide_the_mean_and_keep_the_conditional_variance():
    net = _Counting(learned=True)
    x = torch.ones(2, 3)
    out = ClassifierFreeGuidance(net, classes=[1, 2], guidance=1.5)(x, torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 6)
    assert torch.equal(out[:, 3:], torch.tensor([[1.0] * 3, [2.0] * 3]))  # the conditional variance half
    assert torch.equal(out[:, :3], torch.tensor([[5.0] * 3, [7.5] * 3]))  # 2.5 x (1 + c)


def test_label_dropout_drops_at_the_rate_and_is_seeded():
    y = torch.arange(200_000) % 10
    a = drop_labels(y, 0.1, torch.Generator().manual_seed(0))
    b = drop_labels(y, 0.1, torch.Generator().manual_seed(0))
    c = drop_labels(y, 0.1, torch.Generator().manual_seed(1))
    rate = float((a == NO_CLASS).double().mean())
    assert abs(rate - 0.1) < 0.002  # 3 standard errors: 0.002
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[a != NO_CLASS], y[a != NO_CLASS])  # the others are kept
    assert torch.equal(drop_labels(y, 0.0), y)


def test_a_random_conditional_net_differs_per_class():
    torch.manual_seed(0)
    net = UNet.from_preset("tiny", num_classes=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape) * 0.05)
    x, t = torch.randn(1, 1, 8, 8).expand(4, 1, 8, 8), torch.full((4,), 500)
    out = net(x, t, torch.tensor([0, 1, 2, NO_CLASS]))
    for i in range(4):
        for j in range(i):
            assert (out[i] - out[j]).abs().max() > 1e-4, (i, j)
    assert torch.equal(net(x[:1], t[:1]), net(x[:1], t[:1], torch.tensor([NO_CLASS])))  # None is "no class"


def test_unconditional_net_is_unchanged_and_refuses_labels():
    uncond = UNet.from_preset("cifar10")
    assert sum(p.numel() for p in uncond.parameters()) == 35_746_307
    assert "num_classes" not in uncond.config and not any("class_emb" in k for k in uncond.state_dict())
    cond = UNet.from_preset("cifar10", num_classes=10)
    assert sum(p.numel() for p in cond.parameters()) == 35_746_307 + 11 * 512  # (K + 1) rows of 4 ch
    with pytest.raises(ConfigError, match="unconditional"):
        UNet.from_preset("tiny")(torch.zeros(1, 1, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_takes_a_guided_net(sampler):
    torch.manual_seed(0)
    net = UNet.from_preset("tiny", num_classes=2).eval()
    d = Diffusion.from_name("linear", 20)
    x = d.sample(ClassifierFreeGuidance(net, classes=[0, 1], guidance=1.0), (2, 1, 8, 8), sampler=sampler, steps=5)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "x"])
def test_bad_guidance_is_refused(bad):
    with pytest.raises(ConfigError, match="guidance"):
        check_guidance(bad)


def test_labels_that_do_not_fit_the_batch_are_refused():
    with pytest.raises(ConfigError, match="labels for a batch"):
        ClassifierFreeGuidance(_Counting(), classes=[0, 1, 2], guidance=1.0)(torch.ones(2, 3), torch.zeros(2))
    d, model = mixture()
    with pytest.raises(ConfigError, match="no component"):
        model(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.long), torch.tensor([0, 5]))
