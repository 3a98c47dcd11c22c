"""oracle.gaussian_mixture_full: with diagonal covariances it is the diagonal oracle; its conditional and flow are
the closed forms (checked against a direct computation and against the ODE's defining property)."""

import torch

from ddpmkit import Diffusion, oracle

MEANS = torch.tensor([[0.3, -0.2, 0.1], [-0.4, 0.5, 0.0]], dtype=torch.float64)
STDS = torch.tensor([[0.2, 0.3, 0.25], [0.4, 0.1, 0.3]], dtype=torch.float64)


def test_diagonal_covariances_give_the_diagonal_oracle():
    d = Diffusion.from_name("linear", 100, beta_start=1e-3, beta_end=0.2)
    diag = oracle.gaussian_mixture(d, MEANS, STDS, [0.3, 0.7])
    full = oracle.gaussian_mixture_full(d, MEANS, torch.diag_embed(STDS**2), [0.3, 0.7])
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.arange(16) * 6
    assert torch.allclose(diag(x, t), full(x, t), atol=1e-12)


def test_conditional_of_a_correlated_gaussian_is_the_schur_complement():
    cov = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.0, 0.5], [0.2, 0.5, 1.0]], dtype=torch.float64) * 0.1
    mu = torch.tensor([[0.1, 0.2, -0.3]], dtype=torch.float64)
    d = Diffusion.from_name("linear", 10)
    model = oracle.gaussian_mixture_full(d, mu, cov[None], [1.0])
    weights, means, covs = model.conditional(torch.tensor([[0.5]], dtype=torch.float64), [True, False, False])
    assert torch.allclose(weights, torch.ones(1, 1, dtype=torch.float64))
    assert torch.allclose(means[0, 0], mu[0, 1:] + cov[1:, 0] / cov[0, 0] * (0.5 - mu[0, 0]))
    assert torch.allclose(covs[0], cov[1:, 1:] - torch.outer(cov[1:, 0], cov[0, 1:]) / cov[0, 0])


def test_flow_composes_and_keeps_the_marginal():
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    model = oracle.gaussian_mixture_full(Diffusion.from_name("linear", 10), torch.zeros(1, 2, dtype=torch.float64),
                                         cov[None], [1.0])
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = z @ torch.linalg.cholesky(cov).T  # x_0 ~ N(0, cov)
    assert torch.allclose(model.flow(model.flow(x, 1.0, 0.5), 0.5, 0.1), model.flow(x, 1.0, 0.1), atol=1e-12)
    moved = model.flow(x, 1.0, 0.1)  # x_t ~ N(0, 0.1 cov + 0.9 I): the flow carries the data to the marginal
    assert torch.allclose(torch.cov(moved.T), 0.1 * cov + 0.9 * torch.eye(2, dtype=torch.float64), atol=0.05)
