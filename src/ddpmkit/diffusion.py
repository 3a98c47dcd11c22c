"""The mathematics of Denoising Diffusion Probabilistic Models, equation by equation.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239.
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672.
    [DDIM]  Song, Meng & Ermon 2020, arXiv 2010.02502.
    [PD]    Salimans & Ho 2022, arXiv 2202.00512 (the v-parameterization).

Timestep convention: index t = 0 .. T-1 in this code is the paper's t = 1 .. T. So `alpha_bar[0]` is the
paper's alpha_bar_1, and the decoder term L_0 of the paper is the term at index t = 0 here.

`Diffusion` owns no weights: every method that needs the network takes `model` as an argument and calls it
as `model(xt, t)` with t an int64 tensor of indices. The network never sees a schedule coefficient.

Glossary (symbol / attribute here / equation / name in diffusers or improved-diffusion):
    beta_t                 beta                            Eq. 2      betas
    alpha_t = 1 - beta_t   alpha                           Eq. 4      alphas
    alpha_bar_t            alpha_bar                       Eq. 4      alphas_cumprod
    alpha_bar_{t-1}        alpha_bar_prev (1 at t = 0)     Eq. 7      alphas_cumprod_prev
    beta~_t                posterior_variance              Eq. 7      posterior_variance
    log beta~_t (clipped)  posterior_log_variance_clipped  Eq. 7      posterior_log_variance_clipped
    mu~_t, coef of x_0     posterior_mean_coef_x0          Eq. 7      posterior_mean_coef1
    mu~_t, coef of x_t     posterior_mean_coef_xt          Eq. 7      posterior_mean_coef2
    sigma_t^2              variance of p_mean_variance     Sec. 3.2   model_variance
    sigma_t^2 = beta_t     fixed_large_variance (beta~_2   Sec. 3.2   append(posterior_variance[1], betas[1:])
      (beta~_2 at t = 1)     at index 0, as the authors)
    mu~_t coefs, one step  xprev_coef_x0, xprev_coef_xt    Eq. 7      (the model timestep's, when respaced)

Modes (here / the authors' diffusion_tf / improved-diffusion; the functions are in parameterization.py):
    parameterization  "eps" / "eps" / EPSILON, "x0" / "start_x" / START_X, "v" [PD] / - / -,
                      "xprev" (mu~_t, Eq. 11's left side) / "xprev" / PREVIOUS_X
    variance          "fixed_small" / "fixedsmall" / FIXED_SMALL, "fixed_large" / "fixedlarge" / FIXED_LARGE,
                      "learned" (log sigma^2) / "learned" / LEARNED, "learned_range" [IDDPM Eq. 15] / - /
                      LEARNED_RANGE
    loss              "simple" / "mse" / MSE, "kl" (L_{t-1} in bits/dim) / "kl" / KL,
                      "vlb" (T * L_{t-1} + L_T) / - / RESCALED_KL, "hybrid" [IDDPM Sec. 3.1] / - / RESCALED_MSE
                      with learned_range

A note on the seed derivations (../shared/seeds): some write q(x_t | x_0) = N(sqrt(alpha_t) x_0, sqrt(1-alpha_t) I),
putting alpha_t where alpha_bar_t is meant and a standard deviation where a variance is meant; one writes the
sampling step with sigma_t^2 where sigma_t multiplies z. The paper is right: the variance is (1 - alpha_bar_t) I
[DDPM Eq. 4] and Algorithm 2 adds sigma_t z. This file follows the paper.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from . import schedules
from .errors import ConfigError
from .losses import LOG2, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .noise import randn
from .parameterization import LEARNED_VARIANCES, LOSSES, PREDICT, TARGET, VARIANCE, extract

Parameterization = Literal["eps", "x0", "v", "xprev"]
VarianceType = Literal["fixed_small", "fixed_large", "learned", "learned_range"]
LossType = Literal["simple", "kl", "vlb", "hybrid"]

# The coefficient tables, computed once in float64 and moved together to the data's device.
_TABLES = (
    "beta", "alpha", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar",
    "sqrt_recip_alpha_bar", "sqrt_recipm1_alpha_bar", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef_x0", "posterior_mean_coef_xt", "log_beta", "fixed_large_variance",
    "fixed_large_log_variance", "xprev_coef_x0", "xprev_coef_xt", "timestep_map",
)


class Diffusion:
    """The forward process q, its posterior, and the reverse process p_theta for a given beta schedule.

    Not an nn.Module and owns no weights; `model` is an argument of every method that needs it.
    With a learned variance ("learned", "learned_range") the model outputs 2C channels: the mean part, then
    log sigma^2 ("learned") or v [IDDPM Eq. 15]. `xprev_coef` (respaced processes only): the posterior-mean
    coefficients of the one-step process at each index's model timestep, which "xprev" needs (see
    parameterization._from_xprev); None: this process's own.
    """

    def __init__(
        self,
        beta,
        parameterization: Parameterization = "eps",
        variance: VarianceType = "fixed_large",
        *,
        timestep_map=None,
        xprev_coef=None,
    ):
        if parameterization not in PREDICT:
            raise ConfigError(f"parameterization {parameterization!r} is not one of {sorted(PREDICT)}")
        if variance not in VARIANCE:
            raise ConfigError(f"variance {variance!r} is not one of {sorted(VARIANCE)}")
        self.parameterization = parameterization
        self.variance = variance
        beta = schedules.validate(beta)
        self.num_timesteps = len(beta)
        self._set_tables(beta, timestep_map, xprev_coef)

    @classmethod
    def from_name(cls, name: str, timesteps: int = 1000, *, parameterization: Parameterization = "eps",
                  variance: VarianceType = "fixed_large", **schedule_kwargs) -> "Diffusion":
        """A Diffusion on the named schedule ("linear" or "cosine") with T = timesteps."""
        beta = schedules.get(name, timesteps, **schedule_kwargs)
        return cls(beta, parameterization=parameterization, variance=variance)

    def _set_tables(self, beta: np.ndarray, timestep_map, xprev_coef=None) -> None:
        """Every coefficient once, in float64 [DDPM Eqs. 4, 6, 7]."""
        alpha = 1.0 - beta
        alpha_bar = np.cumprod(alpha)
        alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
        posterior_variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)  # beta~_t [Eq. 7]
        # beta~ at t = 0 is 0 (x_0 is known given x_1 and x_0): clip the log to the next value so it is finite.
        # With T = 1 there is no next value; then beta_1 stands in.
        floor = posterior_variance[1] if len(beta) > 1 else beta[0]
        coef_x0 = beta * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar)
        coef_xt = (1.0 - alpha_bar_prev) * np.sqrt(alpha) / (1.0 - alpha_bar)
        # sigma^2 = beta_t, with beta~_2 at t = 1 as the authors' code [parameterization._fixed_large]
        fixed_large = np.append(floor, beta[1:])
        t = {
            "beta": beta,
            "alpha": alpha,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": np.sqrt(alpha_bar),
            "sqrt_one_minus_alpha_bar": np.sqrt(1.0 - alpha_bar),
            "sqrt_recip_alpha_bar": np.sqrt(1.0 / alpha_bar),
            "sqrt_recipm1_alpha_bar": np.sqrt(1.0 / alpha_bar - 1.0),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(np.append(floor, posterior_variance[1:])),
            "posterior_mean_coef_x0": coef_x0,
            "posterior_mean_coef_xt": coef_xt,
            "log_beta": np.log(beta),
            "fixed_large_variance": fixed_large,
            "fixed_large_log_variance": np.log(fixed_large),
            "xprev_coef_x0": coef_x0 if xprev_coef is None else np.asarray(xprev_coef[0], dtype=np.float64),
            "xprev_coef_xt": coef_xt if xprev_coef is None else np.asarray(xprev_coef[1], dtype=np.float64),
        }
        for name, value in t.items():
            setattr(self, name, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)))
        tmap = np.arange(len(beta)) if timestep_map is None else np.asarray(timestep_map)
        self.timestep_map = torch.as_tensor(tmap, dtype=torch.int64)  # index here -> t the model is trained on

    def to(self, device) -> "Diffusion":
        """Move the coefficient tables to `device` (float32 where the device has no float64, e.g. MPS)."""
        device = torch.device(device)
        for name in _TABLES:
            table = getattr(self, name)
            if table.is_floating_point() and device.type == "mps":
                table = table.float()
            setattr(self, name, table.to(device))
        return self

    def _on(self, x: torch.Tensor) -> None:
        if self.beta.device != x.device:
            self.to(x.device)

    # --- the forward process -----------------------------------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t):
        """Mean, variance and log-variance of q(x_t | x_0) [DDPM Eq. 4]."""
        self._on(x0)
        t = _check_t(t, x0, self.num_timesteps)
        mean = extract(self.sqrt_alpha_bar, t, x0) * x0
        variance = extract(1.0 - self.alpha_bar, t, x0)
        return mean, variance, torch.log(variance)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) [DDPM Eq. 4]."""
        self._on(x0)
        t = _check_t(t, x0, self.num_timesteps)
        if noise is None:
            noise = torch.randn_like(x0)
        return extract(self.sqrt_alpha_bar, t, x0) * x0 + extract(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x_0) [DDPM Eqs. 6-7]."""
        self._on(xt)
        t = _check_t(t, xt, self.num_timesteps)
        mean = extract(self.posterior_mean_coef_x0, t, xt) * x0 + extract(self.posterior_mean_coef_xt, t, xt) * xt
        return mean, extract(self.posterior_variance, t, xt), extract(self.posterior_log_variance_clipped, t, xt)

    def eps_from_x0(self, xt, t, x0):
        """The eps for which x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps [DDPM Eq. 4 solved for eps]."""
        t = _check_t(t, xt, self.num_timesteps)
        return (xt - extract(self.sqrt_alpha_bar, t, xt) * x0) / extract(self.sqrt_one_minus_alpha_bar, t, xt)

    # --- the reverse process -----------------------------------------------------------------------------------

    def split_output(self, out: torch.Tensor, x: torch.Tensor):
        """(mean part, variance part or None) of a raw model output; checks its shape."""
        channels = x.shape[1]
        learned = self.variance in LEARNED_VARIANCES
        expect = 2 * channels if learned else channels
        if out.shape[0] != x.shape[0] or out.shape[1] != expect or out.shape[2:] != x.shape[2:]:
            raise ConfigError(
                f"model output has shape {tuple(out.shape)}, expected {(x.shape[0], expect, *x.shape[2:])} "
                f"for variance={self.variance!r}"
            )
        if learned:
            return out[:, :channels], out[:, channels:]
        return out, None

    def p_mean_variance(self, model, xt: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True, *,
                        model_output: torch.Tensor | None = None) -> dict:
        """Mean and variance of p_theta(x_{t-1} | x_t) [DDPM Eqs. 11, 15], with the x0 and eps it implies.

        With clip_denoised, x0_pred is clipped to [-1, 1] and eps_pred re-derived from the clipped x0, so the
        mean (the posterior mean at the clipped x0, Eq. 7) and eps_pred agree.
        """
        self._on(xt)
        t = _check_t(t, xt, self.num_timesteps)
        if model_output is None:
            model_output = model(xt, self.timestep_map[t])
        mean_out, var_out = self.split_output(model_output.to(_math_dtype(xt)), xt)
        # 1. x0 and eps from whatever the network predicts
        x0_pred, eps_pred = PREDICT[self.parameterization](self, xt, t, mean_out)
        if clip_denoised:
            x0_pred = x0_pred.clamp(-1.0, 1.0)
            eps_pred = self.eps_from_x0(xt, t, x0_pred)
        # 2. mu_theta = mu~_t(x_t, x0_pred); for eps and no clipping this is Eq. 11 exactly
        mean, _, _ = self.q_posterior(x0_pred, xt, t)
        # 3. sigma_t^2: fixed (Sec. 3.2) or learned (the authors' "learned", IDDPM Eq. 15)
        variance, log_variance = VARIANCE[self.variance](self, t, xt, var_out)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "x0_pred": x0_pred, "eps_pred": eps_pred}

    # --- the objective -----------------------------------------------------------------------------------------

    def vlb_term_bpd(self, x0, xt, t, p: dict) -> torch.Tensor:
        """One term of the bound [DDPM Eq. 5] in bits/dim, (B,): L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p) for t > 0,
        and the decoder L_0 = -log p(x_0 | x_1) [Eq. 13] at index t = 0."""
        t = _check_t(t, x0, self.num_timesteps)
        true_mean, _, true_log_var = self.q_posterior(x0, xt, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / LOG2
        # the decoder sees only the rows at t = 0 (others get a harmless N(x0, 1)), so that a non-finite gradient of
        # the branch not taken cannot leak through torch.where as 0 * inf = nan
        decoder = (t == 0).reshape(-1, *([1] * (x0.dim() - 1)))
        mean = torch.where(decoder, p["mean"], x0.to(p["mean"].dtype))
        log_scale = torch.where(decoder, 0.5 * p["log_variance"], torch.zeros_like(p["log_variance"]))
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, log_scale)) / LOG2
        return torch.where(t == 0, nll, kl)

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, (B,) [DDPM Eq. 5]; about 1e-5 for the paper's setup."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.int64, device=x0.device)
        mean, _, log_var = self.q_mean_variance(x0, t)
        return mean_flat(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(mean))) / LOG2

    def training_loss(self, model, x0: torch.Tensor, t: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, loss: LossType = "simple", *,
                      hybrid_lambda: float = 1e-3, t_weight: torch.Tensor | None = None,
                      return_terms: bool = False) -> torch.Tensor | dict:
        """Per-example loss (B,) at t ~ Uniform (Algorithm 1), or at the given t.

        "simple": L_simple = || target - model(x_t, t) ||^2, averaged over dimensions [DDPM Eq. 14]; the target is
                  what the network predicts (eps, x0, v, or mu~_t for "xprev": ||mu~ - mu~_theta||^2, Table 2).
        "kl":     the paper's L as the authors train it (their loss_type "kl"): the bound's term L_{t-1} at the
                  drawn t in bits/dim, the decoder L_0 at t = 1 [DDPM Eqs. 5, 13]; not multiplied by T, no L_T
                  (it has no parameters), uniform t only. Its mean over t is (L - L_T) / T.
        "vlb":    an unbiased one-sample estimate of the whole bound L_T + sum_t L_{t-1} in bits/dim:
                  L_T + T * L_{t-1} [DDPM Eq. 5]; its mean over uniform t equals `vlb_terms(...)["total_bpd"]`.
                  It is T times "kl" (plus L_T), improved-diffusion's rescaled bound, and takes importance weights.
        "hybrid": L_simple + lambda * T * L_{t-1} with the mean detached in the bound term [IDDPM Sec. 3.1].
        `t_weight` (B,) multiplies the bound term of "vlb" and "hybrid": 1 / (T p_t) for importance-sampled t
        [IDDPM Sec. 3.3]; "simple" and "kl" ignore it (the config allows importance sampling with "vlb" only).
        With return_terms, a dict: "loss" (B,) as above, "t" (B,), and detached, unweighted per-example terms:
        "mse" (L_simple) and/or "vb" (T * L_{t-1}, bits/dim), whose history importance sampling keeps.
        """
        self._on(x0)
        if loss not in LOSSES:
            raise ConfigError(f"loss {loss!r} is not one of {sorted(LOSSES)}")
        if t is None:
            t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device)
        t = _check_t(t, x0, self.num_timesteps)
        if noise is None:
            noise = torch.randn_like(x0)
        xt = self.q_sample(x0, t, noise)
        out = model(xt, self.timestep_map[t]).to(_math_dtype(x0))
        mean_out, var_out = self.split_output(out, xt)
        terms = {"t": t}
        if loss in ("simple", "hybrid"):
            terms["mse"] = mean_flat((TARGET[self.parameterization](self, x0, xt, t, noise) - mean_out) ** 2)
        if loss != "simple":
            if loss == "hybrid":  # stop-gradient: the bound term trains only the variance [IDDPM Sec. 3.1]
                mean_out = mean_out.detach()
            frozen = mean_out if var_out is None else torch.cat([mean_out, var_out], dim=1)
            p = self.p_mean_variance(model, xt, t, clip_denoised=False, model_output=frozen)
            terms["kl"] = self.vlb_term_bpd(x0, xt, t, p)
            terms["vb"] = self.num_timesteps * terms["kl"]
        value = LOSSES[loss](self, x0, terms, t_weight, hybrid_lambda)
        terms.pop("kl", None)
        if not return_terms:
            return value
        return {"loss": value, **{k: v.detach() for k, v in terms.items()}}

    @torch.no_grad()
    def vlb_terms(self, model, x0: torch.Tensor, clip_denoised: bool = True, progress: bool = False,
                  generator: torch.Generator | None = None) -> dict:
        """Every term of the bound [DDPM Eq. 5] in bits/dim: the paper's NLL.

        Returns prior_bpd (B,) = L_T, terms_bpd (B, T) with column t the term L_t at index t (column 0 is the
        decoder L_0), total_bpd (B,) = their sum, and x0_mse (B, T), the mean squared error of the x0 prediction
        at each t (for rate-distortion, [DDPM Sec. 4.3]). Each term uses its own draw of x_t ~ q(x_t | x_0).
        """
        from tqdm.auto import tqdm

        self._on(x0)
        batch, steps = x0.shape[0], self.num_timesteps
        terms = torch.zeros(batch, steps, dtype=torch.float64, device=x0.device)
        x0_mse = torch.zeros_like(terms)
        for i in tqdm(range(steps - 1, -1, -1), disable=not progress, desc="bound", leave=False):
            t = torch.full((batch,), i, dtype=torch.int64, device=x0.device)
            noise = randn(x0.shape, generator, device=x0.device).to(x0)  # per image from an ImageNoise
            xt = self.q_sample(x0, t, noise)
            p = self.p_mean_variance(model, xt, t, clip_denoised=clip_denoised)
            terms[:, i] = self.vlb_term_bpd(x0, xt, t, p).double()
            x0_mse[:, i] = mean_flat((p["x0_pred"] - x0) ** 2).double()
        prior = self.prior_bpd(x0).double()
        return {"prior_bpd": prior, "terms_bpd": terms, "total_bpd": prior + terms.sum(dim=1), "x0_mse": x0_mse}

    # --- sampling ----------------------------------------------------------------------------------------------

    def respaced(self, timesteps) -> "Diffusion":
        """The same process on a subsequence of timesteps, betas recomputed from alpha_bar [IDDPM Sec. 4].

        beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}; the model is still called with the original t.
        A jump so long that beta' rounds to 1 in float64 (alpha_bar falls by more than 2^53, e.g. one step from
        T = 4000) keeps beta' at the largest float64 below 1.
        """
        tau = np.asarray(sorted(set(int(i) for i in timesteps)), dtype=np.int64)
        if len(tau) == 0 or tau[0] < 0 or tau[-1] >= self.num_timesteps:
            raise ConfigError(f"respacing: timesteps must lie in 0..{self.num_timesteps - 1}")
        alpha_bar = self.alpha_bar.cpu().double().numpy()[tau]
        beta = np.minimum(1.0 - alpha_bar / np.append(1.0, alpha_bar[:-1]), np.nextafter(1.0, 0.0))
        tmap = self.timestep_map.cpu().numpy()[tau]
        coef = (self.xprev_coef_x0.cpu().double().numpy()[tau], self.xprev_coef_xt.cpu().double().numpy()[tau])
        return Diffusion(beta, self.parameterization, self.variance, timestep_map=tmap, xprev_coef=coef)

    def sample(self, model, shape, *, sampler: str = "ancestral", steps: int | None = None,
               eta: float | None = None, spacing: str | None = None, generator: torch.Generator | None = None,
               progress: bool = False, return_trajectory: bool = False, clip_denoised: bool = True, device=None,
               x_T: torch.Tensor | None = None, stop=None):
        """Draw samples with `sampler` on `steps` nodes placed by `spacing` (see ddpmkit.samplers; by default the
        sampler's own: uniform for ancestral and ddim, logsnr for dpm++*, karras for heun).

        "ancestral" is Algorithm 2 (respaced when steps < T), "ddim" [DDIM Eq. 12] (eta > 0 adds noise),
        "dpm++2m", "dpm++3m", "dpm++2m-sde" (DPM-Solver++) and "heun" (Karras et al.'s Heun, 2 NFE per step).
        Returns x0 in [-1, 1]; with return_trajectory, (x0, trajectory) where trajectory holds "t" (the model's
        timestep at each step), "xt" (S + 1, B, ...) from x_T to x_0 and "x0_pred" (S, B, ...), on the CPU.
        """
        if _SAMPLING_LOOP is None:  # only if ddpmkit.diffusion was loaded without its package
            raise RuntimeError("no sampling loop registered: import ddpmkit.samplers")
        return _SAMPLING_LOOP(self, model, shape, sampler=sampler, steps=steps, eta=eta, spacing=spacing,
                              generator=generator, progress=progress, return_trajectory=return_trajectory,
                              clip_denoised=clip_denoised, device=device, x_T=x_T, stop=stop)


# The sampling loop lives in ddpmkit.samplers, which depends on this module and registers itself here on import
# (ddpmkit/__init__.py imports it), so this module never imports the samplers.
_SAMPLING_LOOP = None


def register_sampling_loop(loop) -> None:
    """Called once by ddpmkit.samplers: the function that `Diffusion.sample` runs."""
    global _SAMPLING_LOOP
    _SAMPLING_LOOP = loop


def _check_t(t, x: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """t as an int64 (B,) tensor on x's device; timesteps are indices and never floats."""
    t = torch.as_tensor(t, device=x.device)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"timesteps must be integer indices, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    return t


def _math_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for low-precision data (a bf16 network output is upcast before any arithmetic), else x's dtype."""
    return torch.promote_types(x.dtype, torch.float32)


def timestep_subsequence(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` evenly spaced indices from 0 to T-1, both ends included [IDDPM Sec. 4]."""
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"sampling steps must be between 1 and T = {num_timesteps}, got {steps}")
    if steps == 1:
        return np.array([num_timesteps - 1])
    return np.unique(np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int64))


__all__ = ["Diffusion", "extract", "timestep_subsequence"]
