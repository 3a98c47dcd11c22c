"""ddpmkit.train.power_ema: gamma from sigma_rel [EDM2 Eq. 3] and the EMA's exact weights [EDM2 Sec. 3.1]."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddpmkit.config import TrainConfig
from ddpmkit.train.ema import EMA
from ddpmkit.train.power_ema import PowerEMA, build_ema, gamma_of_sigma_rel, sigma_rel_of_gamma


def test_gamma_of_sigma_rel_gives_the_papers_pairs_and_inverts_eq_3():
    # [EDM2 Sec. 3.1]: sigma_rel 0.05 <-> gamma 16.97, 0.10 <-> 6.94
    assert gamma_of_sigma_rel(0.05) == pytest.approx(16.97, abs=0.01)
    assert gamma_of_sigma_rel(0.10) == pytest.approx(6.94, abs=0.01)
    for s in (0.01, 0.15, 0.25):
        assert sigma_rel_of_gamma(gamma_of_sigma_rel(s)) == pytest.approx(s, rel=1e-9)
    with pytest.raises(ValueError):
        gamma_of_sigma_rel(0.3)


def test_after_t_updates_the_ema_is_the_power_profile_average():
    """The weight of theta_tau in the EMA after t updates is exactly (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1): the
    profile x^gamma integrated over each step [EDM2 Sec. 3.1]. theta_tau is the tau-th unit vector, so the EMA's
    parameter vector *is* the weights."""
    t = 40
    model = nn.Linear(t, 1, bias=False).double()
    ema = PowerEMA(model, sigma_rel=0.10)
    for tau in range(t):
        with torch.no_grad():
            model.weight.zero_()
            model.weight[0, tau] = 1.0
        ema.update(model, tau)
    g = ema.gamma
    tau = torch.arange(1, t + 1, dtype=torch.float64)
    exact = (tau ** (g + 1) - (tau - 1) ** (g + 1)) / t ** (g + 1)
    torch.testing.assert_close(ema.model.weight[0], exact, rtol=1e-10, atol=1e-12)
    assert ema.decay_at(0) == 0.0  # the first update copies: no share of the initial weights survives


def test_build_ema_picks_the_configured_schedule():
    model = nn.Linear(2, 2)
    assert type(build_ema(model, TrainConfig())) is EMA
    ema = build_ema(model, TrainConfig(ema_schedule="power", ema_sigma_rel=0.05))
    assert isinstance(ema, PowerEMA) and ema.sigma_rel == 0.05
