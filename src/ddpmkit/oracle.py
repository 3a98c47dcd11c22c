"""Analytic optimal denoisers: E[x_0 | x_t] under q, for data whose distribution is known exactly.

References:
    [DDPM] Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 4 (q(x_t | x_0)), Eq. 12 (eps from x_0).
    [PD]   Salimans & Ho 2022, arXiv 2202.00512: the v-parameterization.

Under q(x_t | x_0) = N(sqrt(ab) x_0, (1 - ab) I) the minimiser of every training loss is a function of
E[x_0 | x_t]: the best eps is (x_t - sqrt(ab) E[x_0 | x_t]) / sqrt(1 - ab). For a finite data set this expectation
is a softmax over the points; for a Gaussian mixture it is the responsibility-weighted sum of each component's
linear-Gaussian posterior mean. The oracles are nn.Modules with the signature of the network, model(x_t, t), and
output what `diffusion.parameterization` asks for, so they stand in for a trained network in every Diffusion
method: the ideal baseline, and a way to test samplers and the bound with no training at all.

Class-conditional: `gaussian_mixture(..., classes=[c_1, .., c_K])` gives each component a class. The oracle then
takes labels, model(x_t, t, y), as a conditional network does, and denoises exactly under p(x_0 | c), the mixture of
class c's components with their weights renormalised; the label NO_CLASS (-1), or y = None, means the whole
mixture p(x_0). Wrapped in `guidance.ClassifierFreeGuidance` it is the exact guided model [CFG Eq. 6].

Full covariance: `gaussian_mixture_full(diffusion, means, covs, weights)` has correlated components (K, D, D), and
with them the exact answers that image editing is measured against: the component masses p(k | x_t)
(`responsibilities`), the conditional of some coordinates given the others (`conditional`, for inpainting) and,
for one component, the probability-flow ODE in closed form (`flow`, for encoding).
"""

from __future__ import annotations

import torch
from torch import nn

from .diffusion import Diffusion
from .errors import ConfigError
from .models.unet import NO_CLASS


class _Oracle(nn.Module):
    """Shared part: alpha_bar by the model's timestep, and the conversion of E[x0 | x_t] to the model's output."""

    def __init__(self, diffusion: Diffusion, learned_value: float = 1.0):
        super().__init__()
        tmap = diffusion.timestep_map.cpu()
        size = int(tmap.max()) + 1
        # every table indexed by the timestep the model is called with
        for name, table in (("alpha_bar", "alpha_bar"), ("coef_x0", "xprev_coef_x0"), ("coef_xt", "xprev_coef_xt"),
                            ("log_beta", "log_beta"), ("log_beta_tilde", "posterior_log_variance_clipped")):
            values = torch.ones(size, dtype=torch.float64)
            values[tmap] = getattr(diffusion, table).cpu().double()
            self.register_buffer(name, values)
        self.parameterization = diffusion.parameterization
        self.variance = diffusion.variance
        # the variance channel: v for learned_range (+1 is sigma^2 = beta, -1 is beta~); for "learned" the same
        # sigma^2 as its log (log of beta^((1 + v) / 2) beta~^((1 - v) / 2)), so both modes give one variance
        self.learned_value = learned_value

    def posterior_mean(self, xt: torch.Tensor, alpha_bar: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """E[x_0 | x_t] (or E[x_0 | x_t, c] for labels y) for flattened float64 x_t (B, D) and alpha_bar (B, 1)."""
        raise NotImplementedError

    def forward(self, xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=xt.device).long().expand(xt.shape[0])
        alpha_bar = self.alpha_bar[t].unsqueeze(1)  # (B, 1)
        flat = xt.reshape(xt.shape[0], -1).double()  # (B, D)
        x0 = self.posterior_mean(flat, alpha_bar, y)
        a, s = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
        eps = (flat - a * x0) / s  # inverts Eq. 4
        if self.parameterization == "xprev":  # mu~_t(x_t, x0) of the one-step posterior [DDPM Eq. 7]
            out = self.coef_x0[t].unsqueeze(1) * x0 + self.coef_xt[t].unsqueeze(1) * flat
        else:
            out = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.parameterization]
        out = out.reshape(xt.shape)
        if self.variance == "learned_range":
            out = torch.cat([out, torch.full_like(out, self.learned_value)], dim=1)
        elif self.variance == "learned":
            frac = (self.learned_value + 1.0) / 2.0
            log_var = frac * self.log_beta[t] + (1.0 - frac) * self.log_beta_tilde[t]  # (B,)
            out = torch.cat([out, log_var.reshape(-1, *([1] * (xt.dim() - 1))).expand_as(out)], dim=1)
        return out.to(xt.dtype)


class FiniteSetOracle(_Oracle):
    """E[x_0 | x_t] when q(x_0) is uniform on N points: a softmax over the points."""

    def __init__(self, diffusion: Diffusion, points: torch.Tensor, **kwargs):
        super().__init__(diffusion, **kwargs)
        self.register_buffer("points", torch.as_tensor(points).reshape(len(points), -1).double())  # (N, D)

    def posterior_mean(self, xt, alpha_bar, y):
        if y is not None:
            raise ConfigError("finite_set oracle: it has no classes; use oracle.gaussian_mixture(..., classes=...)")
        # log q(x_t | x_i) up to terms constant in i: (sqrt(ab) <x_t, x_i> - ab |x_i|^2 / 2) / (1 - ab)
        logits = (alpha_bar.sqrt() * xt @ self.points.T - 0.5 * alpha_bar * (self.points**2).sum(1)) / (1 - alpha_bar)
        return torch.softmax(logits, dim=1) @ self.points  # (B, D)


class GaussianMixtureOracle(_Oracle):
    """E[x_0 | x_t] when q(x_0) = sum_k w_k N(mu_k, diag(s_k^2)): closed form."""

    def __init__(self, diffusion: Diffusion, means, stds, weights, classes=None, **kwargs):
        super().__init__(diffusion, **kwargs)
        means = torch.as_tensor(means, dtype=torch.float64)
        means = means.reshape(len(means), -1)  # (K, D)
        stds = torch.as_tensor(stds, dtype=torch.float64)
        stds = stds.reshape(len(means), -1).expand_as(means)  # isotropic (K,) or diagonal (K, D)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        self.register_buffer("means", means)
        self.register_buffer("var0", (stds**2).contiguous())
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))
        self.classes = None if classes is None else torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
        if self.classes is not None and (len(self.classes) != len(means) or bool((self.classes < 0).any())):
            raise ConfigError(f"gaussian_mixture classes: need one class >= 0 per component ({len(means)}), got "
                              f"{self.classes.tolist()}")
        self.num_classes = None if self.classes is None else int(self.classes.max()) + 1

    def component_log_weights(self, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """log p(k | c) (B, K): the weights of class c's components renormalised, -inf elsewhere; all for NO_CLASS."""
        log_w = self.log_weights.expand(batch, -1)
        if y is None:
            return log_w
        if self.classes is None:
            raise ConfigError("gaussian_mixture oracle: labels given but no classes; pass classes=[...] per component")
        y = torch.as_tensor(y, device=log_w.device).long().expand(batch).unsqueeze(1)  # (B, 1)
        member = (self.classes.to(log_w.device) == y) | (y == NO_CLASS)  # (B, K)
        if not bool(member.any(1).all()):
            raise ConfigError(f"gaussian_mixture oracle: a label has no component; classes are "
                              f"{sorted(set(self.classes.tolist()))} or {NO_CLASS} (no class)")
        log_w = torch.where(member, log_w, torch.tensor(float("-inf"), dtype=log_w.dtype, device=log_w.device))
        return log_w - torch.logsumexp(log_w, dim=1, keepdim=True)

    def posterior_mean(self, xt, alpha_bar, y):
        a = alpha_bar.sqrt().unsqueeze(2)  # (B, 1, 1)
        var_t = alpha_bar.unsqueeze(2) * self.var0 + (1 - alpha_bar).unsqueeze(2)  # (B, K, D): marginal of x_t
        resid = xt.unsqueeze(1) - a * self.means  # (B, K, D)
        log_lik = -0.5 * ((resid**2) / var_t + torch.log(var_t)).sum(2)  # (B, K), 2 pi dropped
        resp = torch.softmax(self.component_log_weights(y, len(xt)) + log_lik, dim=1)  # p(k | x_t[, c])
        x0_k = self.means + a * self.var0 / var_t * resid  # E[x_0 | x_t, k]: Gaussian conditioning
        return (resp.unsqueeze(2) * x0_k).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws of x_0 (float64) and their component labels."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.var0[k].sqrt() * z, k


class FullCovarianceMixtureOracle(_Oracle):
    """E[x_0 | x_t] when q(x_0) = sum_k w_k N(mu_k, Sigma_k) with full covariances: closed form.

    Under q(x_t | x_0) [DDPM Eq. 4] component k gives x_t ~ N(a mu_k, a^2 Sigma_k + (1 - a^2) I), a = sqrt(ab), and
    E[x_0 | x_t, k] = mu_k + a Sigma_k (a^2 Sigma_k + (1 - a^2) I)^-1 (x_t - a mu_k) (Gaussian conditioning).
    """

    def __init__(self, diffusion: Diffusion, means, covs, weights, **kwargs):
        super().__init__(diffusion, **kwargs)
        means = torch.as_tensor(means, dtype=torch.float64)
        means = means.reshape(len(means), -1)  # (K, D)
        covs = torch.as_tensor(covs, dtype=torch.float64).reshape(len(means), means.shape[1], means.shape[1])
        if not bool(torch.allclose(covs, covs.transpose(1, 2))) or bool((torch.linalg.eigvalsh(covs) <= 0).any()):
            raise ConfigError("gaussian_mixture_full: every covariance must be symmetric positive definite")
        weights = torch.as_tensor(weights, dtype=torch.float64)
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)  # (K, D, D)
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))

    def _components(self, flat, alpha_bar):
        """(log p(k | x_t) (B, K), E[x_0 | x_t, k] (B, K, D)) for flat x_t (B, D) and alpha_bar (B, 1)."""
        if bool((alpha_bar == alpha_bar[0]).all()):  # one timestep for the batch: one factorisation
            alpha_bar = alpha_bar[:1]
        a = alpha_bar.sqrt().reshape(-1, 1, 1, 1)  # (B or 1, 1, 1, 1)
        eye = torch.eye(self.means.shape[1], dtype=flat.dtype, device=flat.device)
        cov_t = a**2 * self.covs + (1 - a**2) * eye  # (B, K, D, D): marginal covariance of x_t given k
        resid = flat.unsqueeze(1) - a[..., 0] * self.means  # (B, K, D)
        chol = torch.linalg.cholesky(cov_t)
        solved = torch.cholesky_solve(resid.unsqueeze(-1), chol)  # (B, K, D, 1): cov_t^-1 resid
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B, K)
        log_lik = -0.5 * ((resid.unsqueeze(-1) * solved).sum((-2, -1)) + logdet)  # 2 pi dropped
        log_resp = torch.log_softmax(self.log_weights + log_lik, dim=1)
        x0_k = self.means + a[..., 0] * (self.covs @ solved).squeeze(-1)  # (B, K, D)
        return log_resp, x0_k

    def posterior_mean(self, xt, alpha_bar, y):
        if y is not None:
            raise ConfigError("gaussian_mixture_full oracle: it has no classes")
        log_resp, x0_k = self._components(xt, alpha_bar)
        return (log_resp.exp().unsqueeze(2) * x0_k).sum(1)

    def responsibilities(self, x: torch.Tensor, alpha_bar: float | torch.Tensor = 1.0) -> torch.Tensor:
        """p(k | x_t) (B, K) for x_t (B, ...) at alpha_bar (a float or (B,)); alpha_bar = 1 gives p(k | x_0)."""
        flat = x.reshape(len(x), -1).double()
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1, 1).expand(len(x), 1)
        return self._components(flat, ab)[0].exp()

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws of x_0 (float64, (n, D)) and their component labels."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], 1, generator=generator, dtype=torch.float64)
        return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z).squeeze(-1), k

    def conditional(self, x_obs: torch.Tensor, observed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exact p(x_u | x_o) of the unobserved coordinates u given the observed ones o (a bool (D,) mask):
        a mixture with weights (B, K), means (B, K, U) and covariances (K, U, U) [Gaussian conditioning:
        mu_u + S_uo S_oo^-1 (x_o - mu_o), S_uu - S_uo S_oo^-1 S_ou; weights w_k N(x_o; mu_o, S_oo) renormalised]."""
        o = torch.as_tensor(observed, dtype=torch.bool).reshape(-1)
        u = ~o
        x_obs = torch.as_tensor(x_obs, dtype=torch.float64).reshape(-1, int(o.sum()))  # (B, O)
        s_oo, s_uo = self.covs[:, o][:, :, o], self.covs[:, u][:, :, o]  # (K, O, O), (K, U, O)
        s_uu = self.covs[:, u][:, :, u]
        resid = x_obs.unsqueeze(1) - self.means[:, o]  # (B, K, O)
        chol = torch.linalg.cholesky(s_oo)
        solved = torch.cholesky_solve(resid.unsqueeze(-1), chol)  # (B, K, O, 1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_lik = -0.5 * ((resid.unsqueeze(-1) * solved).sum((-2, -1)) + logdet)
        weights = torch.softmax(self.log_weights + log_lik, dim=1)
        means = self.means[:, u] + (s_uo @ solved).squeeze(-1)  # (B, K, U)
        covs = s_uu - s_uo @ torch.cholesky_solve(s_uo.transpose(1, 2), chol)
        return weights, means, covs

    def flow(self, x: torch.Tensor, alpha_bar_from: float, alpha_bar_to: float) -> torch.Tensor:
        """The probability-flow ODE of one Gaussian N(mu, Sigma) in closed form, from alpha_bar_from to alpha_bar_to:
        x_to = a_to mu + C_to^(1/2) C_from^(-1/2) (x_from - a_from mu), C = ab Sigma + (1 - ab) I (both are
        functions of Sigma, so they commute). alpha_bar = 1 is the data."""
        if len(self.means) != 1:
            raise ConfigError("oracle flow: the closed-form flow is for one Gaussian component")
        evals, evecs = torch.linalg.eigh(self.covs[0])
        mu = self.means[0]
        a_from, a_to = (torch.tensor(float(v), dtype=torch.float64) for v in (alpha_bar_from, alpha_bar_to))
        scale = torch.sqrt((a_to * evals + 1 - a_to) / (a_from * evals + 1 - a_from))  # (D,) in the eigenbasis
        flat = x.reshape(len(x), -1).double() - a_from.sqrt() * mu
        moved = ((flat @ evecs) * scale) @ evecs.T + a_to.sqrt() * mu
        return moved.reshape(x.shape)


def finite_set(diffusion: Diffusion, points: torch.Tensor, **kwargs) -> FiniteSetOracle:
    """The optimal denoiser for data uniform on `points` (N, ...)."""
    return FiniteSetOracle(diffusion, points, **kwargs)


def gaussian_mixture(diffusion: Diffusion, means, stds, weights, *, classes=None, **kwargs) -> GaussianMixtureOracle:
    """The optimal denoiser for a Gaussian mixture: means (K, D), stds (K,) or (K, D), weights (K,).

    classes (K,): the class of each component (integers from 0); then model(x_t, t, y) denoises under p(x_0 | y),
    and y = NO_CLASS (-1) or None under the whole mixture.
    """
    return GaussianMixtureOracle(diffusion, means, stds, weights, classes=classes, **kwargs)


def gaussian_mixture_full(diffusion: Diffusion, means, covs, weights, **kwargs) -> FullCovarianceMixtureOracle:
    """The optimal denoiser for a mixture of correlated Gaussians: means (K, D), covs (K, D, D), weights (K,)."""
    return FullCovarianceMixtureOracle(diffusion, means, covs, weights, **kwargs)
