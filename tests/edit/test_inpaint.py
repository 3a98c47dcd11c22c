"""RePaint against the exact conditional: data whose p(x_0) is known, so p(x_u | x_o) is known in closed form.

Two cases, four coordinates, the first two observed (kept), T = 50 (linear betas scaled to 50 steps), 2000 chains
from one observation, jump J = 1, float64, seed 1; errors measured with this file's code (torch 2.13 CPU):
- a mixture of three diagonal Gaussians whose means differ in the observed coordinates: the exact component masses
  p(k | x_o) (0.17, 0.17, 0.66) against the average of p(k | x_0) over the inpaintings, and the conditional mean;
    R =           1      5      10     20
    masses      0.088  0.045  0.052  0.018   (largest error over k)
    mean        0.108  0.060  0.060  0.030
- one Gaussian with a full (correlated) covariance: the conditional mean and covariance of the two missing
  coordinates [mu_u + S_uo S_oo^-1 (x_o - mu_o), S_uu - S_uo S_oo^-1 S_ou];
    mean        0.082  0.021  0.013  0.009
    covariance  0.033  0.012  0.017  0.012
Plain replacement (R = 1) leaves the unknown pixels out of step with the known ones [RePaint Sec. 4.1]; the error
falls by 4-9x by R = 20, down to the Monte Carlo noise of 2000 chains (about 0.01). The test asserts the fall
(R = 20 at most half of R = 1) and the level at R = 20; with the resampling switched off it fails (tested).
"""

import importlib

import numpy as np
import pytest
import torch

from ddpmkit import Diffusion, oracle
from ddpmkit.edit import repaint, repaint_levels

inpaint_module = importlib.import_module("ddpmkit.edit.inpaint")  # the module, not the function of that name

T, CHAINS = 50, 2000
KEEP = torch.tensor([True, True, False, False])
L = torch.tensor([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0.5, 0.3, 0.7, 0], [-0.3, 0.4, 0.2, 0.6]], dtype=torch.float64)
MIX_MEANS = torch.tensor([[0.5, 0.3, 0.4, -0.4], [-0.3, -0.5, -0.4, 0.4], [0.3, -0.4, 0.0, 0.5]], dtype=torch.float64)
TOL = {"masses": 0.04, "mix mean": 0.05, "mean": 0.03, "covariance": 0.025}  # at R = 20


def diffusion() -> Diffusion:
    return Diffusion.from_name("linear", T, beta_start=0.1 / T, beta_end=20.0 / T)


def errors(case: str, resample: int) -> dict:
    """RePaint's errors against the exact conditional for `case` ("mixture" or "gaussian") at R = resample."""
    d = diffusion()
    if case == "mixture":
        covs = torch.diag_embed(torch.full((3, 4), 0.09, dtype=torch.float64))
        model, x_obs = oracle.gaussian_mixture_full(d, MIX_MEANS, covs, [0.3, 0.3, 0.4]), [0.1, -0.1]
    else:
        mu = torch.tensor([[0.1, -0.1, 0.2, 0.0]], dtype=torch.float64)
        model, x_obs = oracle.gaussian_mixture_full(d, mu, (0.16 * L @ L.T)[None], [1.0]), [0.5, 0.3]
    x_obs = torch.tensor(x_obs, dtype=torch.float64)
    weights, means, covs = model.conditional(x_obs[None], KEEP)
    exact_mean = (weights[0, :, None] * means[0]).sum(0)
    x0 = torch.zeros(CHAINS, 4, dtype=torch.float64)
    x0[:, :2] = x_obs
    out = repaint(d, model, x0, KEEP, resample=resample, generator=torch.Generator().manual_seed(1),
                  clip_denoised=False)
    assert torch.equal(out[:, :2], x0[:, :2])  # the known coordinates come back exactly
    unknown = out[:, 2:]
    mean_error = float((unknown.mean(0) - exact_mean).abs().max())
    if case == "mixture":
        return {"masses": float((model.responsibilities(out).mean(0) - weights[0]).abs().max()),
                "mix mean": mean_error}
    return {"mean": mean_error, "covariance": float((torch.cov(unknown.T) - covs[0]).abs().max())}


def measure(case: str) -> dict:
    table = {r: errors(case, r) for r in (1, 5, 10, 20)}
    print(case, {r: {k: round(v, 4) for k, v in e.items()} for r, e in table.items()})
    return table


def check_falls(table: dict) -> None:
    for key in table[1]:
        assert table[20][key] <= 0.5 * table[1][key], (key, table)
        assert table[20][key] <= TOL[key], (key, table)


@pytest.mark.parametrize("case", ["mixture", "gaussian"])
def test_repaint_error_falls_with_resampling_to_the_exact_conditional(case):
    check_falls(measure(case))


def test_the_check_fails_without_resampling(monkeypatch):
    plain = inpaint_module.repaint_levels
    monkeypatch.setattr(inpaint_module, "repaint_levels", lambda k, r, j: plain(k, 1, j))  # R ignored
    with pytest.raises(AssertionError):
        check_falls(measure("gaussian"))


def test_levels_follow_the_schedule():
    assert repaint_levels(4).tolist() == [4, 3, 2, 1, 0]
    assert repaint_levels(4, 2, 1).tolist() == [4, 3, 4, 3, 2, 3, 2, 1, 2, 1, 0]
    levels = repaint_levels(20, 3, 5)  # jumps of 5 from levels 1, 6 and 11 (16 + 5 is past 20), twice each
    reverse = int((np.diff(levels) == -1).sum())
    assert reverse == 20 + 2 * 5 * 3 and set(np.diff(levels)) == {-1, 5}
