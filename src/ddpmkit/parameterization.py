"""The modes of the reverse process: what the network predicts, what its variance is, and the training loss. One
small function per mode, picked from a dict by `Diffusion`.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239: Sec. 3.2, Eqs. 7, 11, 12, 15; Table 2.
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672: Eq. 15 (learned_range).
    [PD]    Salimans & Ho 2022, arXiv 2202.00512: the v-parameterization.

Every prediction function maps (diffusion, x_t, index t, mean part of the output) to (x0_pred, eps_pred), so the
samplers, the bound, the figures and guidance need nothing per mode: they ask `p_mean_variance` for x0 and eps.
Every variance function maps (diffusion, index t, x, variance part of the output or None) to (sigma^2, log sigma^2).

Names (here / the authors' diffusion_tf / improved-diffusion):
    "eps"    eps_theta(x_t, t) [DDPM Eq. 12]        model_mean_type "eps"     ModelMeanType.EPSILON
    "x0"     x_0 itself                              "start_x"                 ModelMeanType.START_X
    "v"      sqrt(ab) eps - sqrt(1 - ab) x0 [PD]     (none)                    (none)
    "xprev"  mu~_t(x_t, x_0), the mean of            "xprev"                   ModelMeanType.PREVIOUS_X
             q(x_{t-1} | x_t, x_0) [DDPM Eq. 7, the left side of Eq. 11]
    "fixed_small"    sigma^2 = beta~_t               "fixedsmall"              ModelVarType.FIXED_SMALL
    "fixed_large"    sigma^2 = beta_t, and beta~_2   "fixedlarge"              ModelVarType.FIXED_LARGE
                     at t = 1 (see _fixed_large)
    "learned"        log sigma^2 = the output        "learned"                 ModelVarType.LEARNED
    "learned_range"  IDDPM Eq. 15                    (none)                    ModelVarType.LEARNED_RANGE
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .diffusion import Diffusion


def extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a[t] reshaped to (B, 1, ..., 1) so it broadcasts against x, in x's floating dtype."""
    return a[t].to(x.dtype).reshape(t.shape[0], *([1] * (x.dim() - 1)))


# --- parameterizations: model output -> (x0_pred, eps_pred) ----------------------------------------------------

def _from_eps(d: "Diffusion", xt, t, out):
    # x0 from eps: inverts Eq. 4, x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) [DDPM Eq. 15 setup]
    x0 = extract(d.sqrt_recip_alpha_bar, t, xt) * xt - extract(d.sqrt_recipm1_alpha_bar, t, xt) * out
    return x0, out


def _from_x0(d: "Diffusion", xt, t, out):
    return out, d.eps_from_x0(xt, t, out)


def _from_v(d: "Diffusion", xt, t, out):
    # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 [PD Sec. 4]; solve with x_t = sqrt(alpha_bar) x0 + ... eps
    a, s = extract(d.sqrt_alpha_bar, t, xt), extract(d.sqrt_one_minus_alpha_bar, t, xt)
    return a * xt - s * out, s * xt + a * out


def _from_xprev(d: "Diffusion", xt, t, out):
    # mu~ = c_x0 x0 + c_xt x_t [DDPM Eq. 7] solved for x0. The coefficients are those of the one-step posterior at
    # the timestep the network was trained on (xprev_coef_*), also on a respaced process, whose own posterior
    # coefficients belong to a longer jump. At t = 1, c_x0 = 1 and c_xt = 0: mu~_1 = x0. At t = T, c_x0 is about
    # 1e-4 for the linear schedule, so an error in mu~ is an error 1e4 times larger in x0: the reason the paper
    # finds mu~ prediction poor with an unweighted loss [DDPM Sec. 3.2, Table 2].
    x0 = (out - extract(d.xprev_coef_xt, t, xt) * xt) / extract(d.xprev_coef_x0, t, xt)
    return x0, d.eps_from_x0(xt, t, x0)


PREDICT = {"eps": _from_eps, "x0": _from_x0, "v": _from_v, "xprev": _from_xprev}


# --- the regression targets of L_simple: (diffusion, x0, x_t, t, noise) -> what the network should output ------

def _target_eps(d, x0, xt, t, noise):
    return noise  # [DDPM Eq. 14]


def _target_x0(d, x0, xt, t, noise):
    return x0


def _target_v(d, x0, xt, t, noise):
    return extract(d.sqrt_alpha_bar, t, x0) * noise - extract(d.sqrt_one_minus_alpha_bar, t, x0) * x0


def _target_xprev(d, x0, xt, t, noise):
    # mu~_t(x_t, x_0) [DDPM Eq. 7]: L_simple becomes ||mu~ - mu~_theta||^2, unweighted [DDPM Table 2]
    return extract(d.xprev_coef_x0, t, x0) * x0 + extract(d.xprev_coef_xt, t, x0) * xt


TARGET = {"eps": _target_eps, "x0": _target_x0, "v": _target_v, "xprev": _target_xprev}


# --- variances: (diffusion, t, x, extra model output) -> (variance, log_variance) of p(x_{t-1} | x_t) -----------

# "learned": the network's log sigma^2 is clamped to +-30 only so that sigma^2, the bound and its gradient stay
# finite in float32 for any output (at log sigma^2 = -60 the decoder's bin edges sit 1e13 standard deviations out,
# where the gradient of log Phi is no longer finite); the authors' code does not clamp. A trained network's log
# sigma^2 lies between log beta~_t and log beta_t (about -10 to -4 for the linear schedule), far inside.
LEARNED_LOG_VARIANCE_LIMIT = 30.0


def _fixed_small(d: "Diffusion", t, x, _):
    # sigma_t^2 = beta~_t [DDPM Sec. 3.2]; log clipped at t = 0 where beta~_1 = 0
    return extract(d.posterior_variance, t, x), extract(d.posterior_log_variance_clipped, t, x)


def _fixed_large(d: "Diffusion", t, x, _):
    # sigma_t^2 = beta_t [DDPM Sec. 3.2], as the paper's CIFAR-10 run, except at the decoder step (index 0, the
    # paper's t = 1), where sigma_1^2 = beta~_2: the authors' code (diffusion_utils_2.py, "fixedlarge") and
    # improved-diffusion both use log(append(posterior_variance[1], betas[1:])), to get a better decoder
    # likelihood. Sampling does not see it (Algorithm 2 adds no noise at t = 1) nor does L_simple; the bound's L_0
    # and training with the bound do. The paper's Table 1 NLL (<= 3.75 bits/dim) was measured this way; log beta_1
    # there would add about 0.12 bits/dim at an x0 error of one grey level.
    return extract(d.fixed_large_variance, t, x), extract(d.fixed_large_log_variance, t, x)


def _learned(d: "Diffusion", t, x, v):
    # log sigma^2 is the network's second half itself (the authors' "learned", improved-diffusion's LEARNED),
    # clamped to +-LEARNED_LOG_VARIANCE_LIMIT so that any output gives a finite variance and bound
    log_var = v.clamp(-LEARNED_LOG_VARIANCE_LIMIT, LEARNED_LOG_VARIANCE_LIMIT)
    return torch.exp(log_var), log_var


def _learned_range(d: "Diffusion", t, x, v):
    # log Sigma = v log beta + (1 - v) log beta~ with the network's v mapped from [-1, 1] to [0, 1] [IDDPM Eq. 15].
    # v is clamped to [-1, 1] (IDDPM's code is not), so any output gives beta~_t <= Sigma <= beta_t
    frac = (v.clamp(-1.0, 1.0) + 1.0) / 2.0
    log_var = frac * extract(d.log_beta, t, x) + (1.0 - frac) * extract(d.posterior_log_variance_clipped, t, x)
    return torch.exp(log_var), log_var


VARIANCE = {"fixed_small": _fixed_small, "fixed_large": _fixed_large, "learned": _learned,
            "learned_range": _learned_range}
LEARNED_VARIANCES = ("learned", "learned_range")  # the network outputs 2C channels: the mean part, then these


def output_channels(variance: str, channels: int) -> int:
    """How many channels the network outputs for data with `channels`: twice as many for a learned variance."""
    return 2 * channels if variance in LEARNED_VARIANCES else channels


# --- the losses: (diffusion, x0, terms, t_weight, hybrid_lambda) -> per-example loss (B,) ------------------------
# terms: "mse" (L_simple), "kl" (L_{t-1} in bits/dim [DDPM Eq. 5]) and "vb" (T times it), see Diffusion.training_loss

def _weighted(vb, t_weight):
    return vb if t_weight is None else vb * t_weight


def _loss_simple(d, x0, terms, t_weight, lam):
    return terms["mse"]


def _loss_kl(d, x0, terms, t_weight, lam):
    return terms["kl"]


def _loss_vlb(d, x0, terms, t_weight, lam):
    return _weighted(terms["vb"], t_weight) + d.prior_bpd(x0)


def _loss_hybrid(d, x0, terms, t_weight, lam):
    return terms["mse"] + lam * _weighted(terms["vb"], t_weight)


LOSSES = {"simple": _loss_simple, "kl": _loss_kl, "vlb": _loss_vlb, "hybrid": _loss_hybrid}


# min-SNR-gamma (train/weighting.py) weighs L_simple of a network predicting one of these; xprev's loss is on the
# posterior mean, which has no such weight
MIN_SNR_PREDICTIONS = ("eps", "x0", "v")


def min_snr_applies(loss: str, parameterization: str) -> bool:
    """Whether train.loss_weighting = "min_snr" can weigh this objective: L_simple of an eps, x0 or v network."""
    return loss == "simple" and parameterization in MIN_SNR_PREDICTIONS


def check_modes(variance: str, loss: str, parameterization: str = "eps", loss_weighting: str = "none") -> None:
    """ConfigError for modes that do not go together: a variance that the loss cannot train (L_simple sends no
    gradient to a learned variance), or min-SNR weights on a prediction they do not apply to."""
    from .errors import ConfigError

    if variance in LEARNED_VARIANCES and loss == "simple":
        raise ConfigError(f"diffusion.variance = {variance!r} with train.loss = 'simple': L_simple gives the learned "
                          "variance no gradient; use train.loss = 'kl', 'vlb' or 'hybrid', or a fixed variance")
    if loss_weighting == "min_snr" and parameterization not in MIN_SNR_PREDICTIONS:
        raise ConfigError(f"train.loss_weighting = 'min_snr' with diffusion.parameterization = {parameterization!r}: "
                          "min-SNR weighs the loss of an eps, x0 or v network; use train.loss_weighting = 'none' or "
                          "one of those parameterizations")


__all__ = ["LEARNED_LOG_VARIANCE_LIMIT", "LEARNED_VARIANCES", "LOSSES", "MIN_SNR_PREDICTIONS", "PREDICT", "TARGET",
           "VARIANCE", "check_modes", "extract", "min_snr_applies", "output_channels"]
